"""Creating, replacing and deleting campaigns: every rule checked before anything is written."""

from __future__ import annotations

import functools
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import orjson
from psycopg import AsyncConnection
from psycopg.types.json import Jsonb
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncSession

from mailroom.campaigns import reads
from mailroom.campaigns.models import EmailCampaign, EmailCampaignAttachment, EmailCampaignRecipient
from mailroom.campaigns.schemas import CampaignIn, field_path
from mailroom.crm.membership import ROLE_IN_BRAND, member_role
from mailroom.crm.models import Agent, Contact, CrmList, GoogleCredential, MicrosoftCredential
from mailroom.egress import link_problem
from mailroom.errors import BadRequest, Conflict, Forbidden, NotFound, PayloadTooLarge
from mailroom.files.models import File
from mailroom.files.service import attachable
from mailroom.templating.render import TemplateError
from mailroom.templating.renderer import RenderPool
from mailroom.transports.base import ESP_SIZE_LIMIT, MAILBOX_SIZE_LIMIT

_DIALECT = postgresql.dialect()
GOOGLE_SEND_SCOPES = {"mail.send"}
MICROSOFT_SEND_SCOPES = {"mail.send", "mail.modify"}


@dataclass(frozen=True)
class Actor:
    user: uuid.UUID
    brand: uuid.UUID
    # The operator's Settings.allow_private_attachment_links: attachment links may name intranet hosts.
    allow_private_links: bool = False


async def _check_from(session: AsyncSession, actor: Actor, from_user: uuid.UUID) -> None:
    """Mail goes out as the caller, or as another member of the brand when the caller is its Admin."""
    if from_user == actor.user:
        return
    if await member_role(session, actor.user, actor.brand) != "Admin":
        raise Forbidden("must be you: only an Admin of the brand may send as another member", field="from")
    if await member_role(session, from_user, actor.brand) is None:
        raise BadRequest("must be a user who is a member of the campaign's brand", field="from")


async def _check_may_change(session: AsyncSession, campaign: EmailCampaign, user: uuid.UUID) -> None:
    """An Agent changes only its own campaigns: created by it and sent as it. An Admin changes any."""
    if campaign.from_ == user and campaign.created_by == user:
        return
    if await member_role(session, user, campaign.brand) != "Admin":
        raise Forbidden("only an Admin of the brand may change a campaign someone else created or sends", field="id")


async def _check_credential(session: AsyncSession, body: CampaignIn, from_user: uuid.UUID, caller: uuid.UUID) -> None:
    checks: tuple[tuple[str, type[GoogleCredential] | type[MicrosoftCredential], set[str]], ...] = (
        ("google_credential", GoogleCredential, GOOGLE_SEND_SCOPES),
        ("microsoft_credential", MicrosoftCredential, MICROSOFT_SEND_SCOPES),
    )
    for field, model, needed in checks:
        credential_id = getattr(body, field)
        if credential_id is None:
            continue
        credential = cast(GoogleCredential | MicrosoftCredential | None, await session.get(model, credential_id))
        if credential is None or credential.user != from_user:
            raise BadRequest("no such credential of the from user", field=field)
        if credential.user != caller:
            # A mailbox is its owner's: not even an Admin sends through someone else's Gmail or Outlook.
            raise Forbidden("only the owner of a mailbox credential may attach it to a campaign", field=field)
        if credential.deleted_at is not None or credential.revoked:
            raise BadRequest("this credential is revoked or deleted", field=field)
        missing = needed - set(credential.scope_summary or [])
        if missing:
            raise BadRequest(f"this credential lacks the scope {', '.join(sorted(missing))}", field=field)


def _brand_rows(model: type[Contact] | type[CrmList], ids: set[uuid.UUID], brand: uuid.UUID) -> Any:
    return select(model.id).where(model.id.in_(ids), model.brand == brand, model.deleted_at.is_(None))


# How each kind of referenced object is looked up: the brand's live contacts and lists, any MLS agent.
LOOKUPS = {
    "contact": lambda ids, brand: _brand_rows(Contact, ids, brand),
    "list": lambda ids, brand: _brand_rows(CrmList, ids, brand),
    "agent": lambda ids, brand: select(Agent.id).where(Agent.id.in_(ids)),
}


async def _check_recipients(session: AsyncSession, body: CampaignIn, actor: Actor) -> None:
    """Each list, contact, agent and brand named must exist and be the brand's (one query per kind)."""
    items = body.recipients()
    wanted: dict[str, set[uuid.UUID]] = {"contact": set(), "list": set(), "agent": set(), "brand": set()}
    for _, _, item in items:
        for name in wanted:
            value = getattr(item, name)
            if value is not None:
                wanted[name].add(value)
    found: dict[str, set[uuid.UUID]] = {
        name: set((await session.scalars(lookup(wanted[name], actor.brand))).all()) if wanted[name] else set()
        for name, lookup in LOOKUPS.items()
    }
    found["brand"] = {b for b in wanted["brand"] if await member_role(session, actor.user, b) is not None}
    for send_type, index, item in items:
        for name, ids in found.items():
            value = getattr(item, name)
            if value is not None and value not in ids:
                raise BadRequest(f"no such {name} in this brand", field=field_path(send_type, index, name))


async def _attachment_rows(session: AsyncSession, body: CampaignIn, actor: Actor) -> list[dict[str, Any]]:
    """Checked, de-duplicated attachment rows. Limits depend on the transport the campaign will use."""
    rows: list[dict[str, Any]] = []
    seen: set[Any] = set()
    on_esp = not (body.google_credential or body.microsoft_credential)
    for index, item in enumerate(body.attachments or []):
        key = item.file or item.url
        if key in seen:
            continue
        seen.add(key)
        if item.is_inline and not item.content_id and not on_esp:
            raise BadRequest("is required for an inline attachment", field=f"attachments.{index}.content_id")
        # Judged without network I/O; the worker checks every address the host resolves to when it fetches.
        problem = None if item.url is None else link_problem(item.url, allow_private=actor.allow_private_links)
        if problem is not None:
            raise BadRequest(problem, field=f"attachments.{index}.url")
        rows.append(item.model_dump())
    file_ids = [r["file"] for r in rows if r["file"]]
    if file_ids:
        files = {
            f.id: f
            for f in await session.scalars(
                select(File).where(File.id.in_(file_ids), attachable(actor.brand, actor.user))
            )
        }
        limit = ESP_SIZE_LIMIT if on_esp else MAILBOX_SIZE_LIMIT
        total = 0
        for index, row in enumerate(rows):
            if row["file"] is None:
                continue
            file = files.get(row["file"])
            if file is None:
                raise NotFound("no such uploaded file", field=f"attachments.{index}.file")
            if file.size > limit:
                raise PayloadTooLarge(f"is larger than the {limit} byte limit", field=f"attachments.{index}.file")
            total += file.size
        if total > limit:
            raise PayloadTooLarge(f"add up to more than the {limit} byte limit", field="attachments")
    return rows


async def check_templates(
    subject: str, html: str | None, text: str | None, renderer: RenderPool
) -> tuple[bool, str | None]:
    """Compile subject, html and text and render each once for a sample recipient, in the bounded renderer.

    Returns whether they address the recipient (so must go one by one) and, for html without a
    text version, the text template made from it.
    """
    if not (html and html.strip()) and not (text and text.strip()):
        # It would go out blank to every recipient.
        raise BadRequest("a campaign needs html or text (it has neither)", field="html")
    derive = not text and bool(html and html.strip())
    sources = {"subject": subject, "html": html, "text": text}
    fields = [(field, source, derive and field == "html") for field, source in sources.items() if source]
    if not fields:
        return False, None
    try:
        checked = await renderer.check_all(fields)
    except TemplateError as exc:
        reason = str(exc).removeprefix(f"{exc.field}: ") if exc.field else str(exc)
        raise BadRequest(reason, field=exc.field or fields[0][0]) from None
    derived = next((c.text for c in checked if c.text is not None), None)
    return any(c.personal for c in checked), derived


async def _values(
    session: AsyncSession,
    body: CampaignIn,
    actor: Actor,
    *,
    from_user: uuid.UUID,
    force_individual: bool,
    renderer: RenderPool,
) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """Everything a campaign row, its recipients and its attachments will hold; raises on bad input."""
    await _check_from(session, actor, from_user)
    # Checked whatever the campaign's kind: an individual campaign's templates must render too.
    personal, derived_text = await check_templates(body.subject, body.html, body.text, renderer)
    individual = bool(force_individual or body.individual or personal)
    if not individual:
        await _check_credential(session, body, from_user, actor.user)
    await _check_recipients(session, body, actor)
    attachments = await _attachment_rows(session, body, actor)
    html, text = body.html, body.text
    if not text and html and html.strip():
        text = derived_text
    values: dict[str, Any] = {
        "brand": actor.brand,
        "from_": from_user,
        "subject": body.subject,
        "html": html,
        "text": text,
        "due_at": body.due_at,
        "tags": body.tags,
        # Individual mail always goes through the ESP, one message each: mailbox settings do not apply.
        "headers": {} if individual else dict(body.headers or {}),
        "google_credential": None if individual else body.google_credential,
        "microsoft_credential": None if individual else body.microsoft_credential,
        "include_signature": bool(body.include_signature),
        "individual": individual,
        "notifications_enabled": True if body.notifications_enabled is None else body.notifications_enabled,
        "archive": bool(body.archive),
        "tracking": True if body.tracking is None else body.tracking,
    }
    # send_type comes from the array the item is in; every other column is the item's field of that name.
    recipients = [
        {name: send_type if name == "send_type" else getattr(item, name) for name in RECIPIENT_COLUMNS}
        for send_type, _, item in body.recipients()
    ]
    return values, recipients, attachments


# What each child row holds, and its SQL type (for unnest): one array parameter per column.
RECIPIENT_COLUMNS = {
    "recipient_type": "text",
    "send_type": "text",
    "email": "text",
    "contact": "uuid",
    "list": "uuid",
    "tag": "text",
    "brand": "uuid",
    "agent": "uuid",
}
ATTACHMENT_COLUMNS = {"file": "uuid", "url": "text", "name": "text", "is_inline": "boolean", "content_id": "text"}


async def _write_children(
    session: AsyncSession, campaign: uuid.UUID, recipients: list[dict[str, Any]], attachments: list[dict[str, Any]]
) -> None:
    await session.execute(insert(EmailCampaignRecipient), [{**r, "campaign": campaign} for r in recipients])
    if attachments:
        await session.execute(insert(EmailCampaignAttachment), [{**a, "campaign": campaign} for a in attachments])


async def create_campaign(
    session: AsyncSession,
    conn: AsyncConnection[Any],
    body: CampaignIn,
    actor: Actor,
    *,
    renderer: RenderPool,
    force_individual: bool = False,
    members_only: bool = False,
) -> Any:
    """Check and write a new campaign; its row as ``reads.visible_campaign`` answers it. With
    ``members_only`` it is written only if the actor has a role in its brand, checked by the insert's own
    statement, and None is answered when they have none."""
    if force_individual and (body.cc or body.bcc):
        raise BadRequest("individual emails cannot have cc or bcc", field="cc" if body.cc else "bcc")
    from_user = body.from_ or actor.user
    values, recipients, attachments = await _values(
        session, body, actor, from_user=from_user, force_individual=force_individual, renderer=renderer
    )
    if body.id is not None:
        existing = await session.get(EmailCampaign, body.id)
        if existing is not None and await member_role(session, actor.user, existing.brand) is None:
            # Answered like any other unusable id: nothing tells the caller another brand holds it.
            raise BadRequest("cannot be used for a new campaign", field="id")
        if existing is not None:
            raise Conflict("a campaign with this id already exists", field="id")
    columns = {**values, "created_by": actor.user, **({"id": body.id} if body.id is not None else {})}
    return await _insert(conn, columns, recipients, attachments, members_only=members_only)


# The child tables a campaign's statement writes to: (table, its columns and their SQL types, parameter).
CHILDREN = (
    ("email_campaign_recipients", RECIPIENT_COLUMNS, "recipients"),
    ("email_campaign_attachments", ATTACHMENT_COLUMNS, "attachments"),
)


@functools.cache  # one text per set of columns and children, so psycopg prepares it after its fifth use
def _insert_sql(attributes: tuple[str, ...], children: tuple[str, ...], members_only: bool) -> str:
    columns = [EmailCampaign.__mapper__.columns[a] for a in attributes]
    names = ", ".join(f'"{column.name}"' for column in columns)
    if members_only:
        # Typed, as VALUES would type them by their columns: a SELECT would take an untyped NULL for text.
        typed = ", ".join(
            f"CAST(%({a})s AS {c.type.compile(dialect=_DIALECT)})" for a, c in zip(attributes, columns, strict=True)
        )
        role = ROLE_IN_BRAND.format(brand="%(brand)s", user="%(created_by)s")
        source = f"SELECT {typed} WHERE ({role}) IS NOT NULL"
    else:
        source = f"VALUES ({', '.join(f'%({a})s' for a in attributes)})"
    # Each child table's rows come as one JSON array of objects: one parameter where an array per column
    # took psycopg longer to convert than the rest of the request's parameters.
    writes = "".join(
        f""", {table} AS (INSERT INTO {table} (campaign, {", ".join(f'"{n}"' for n in cols)})
            SELECT c.id, x.* FROM c, jsonb_to_recordset(%({param})s::jsonb)
            AS x({", ".join(f'"{n}" {t}' for n, t in cols.items())}))"""
        for table, cols, param in CHILDREN
        if param in children
    )
    return f"""WITH c AS (INSERT INTO email_campaigns ({names}) {source} RETURNING *){writes}
        SELECT {reads.CAMPAIGN_COLUMNS}, u.email_confirmed AS from_confirmed FROM c LEFT JOIN users u ON u.id = c."from"
    """


async def _insert(
    conn: AsyncConnection[Any],
    columns: dict[str, Any],
    recipients: list[dict[str, Any]],
    attachments: list[dict[str, Any]],
    *,
    members_only: bool,
) -> Any | None:
    """The campaign, its recipients and its attachments written in one statement (one round trip where
    the ORM took three, and a fourth to read the campaign back), answered as ``reads`` reads a campaign.
    A child table with no rows to write is left out of the statement. ``members_only``: see create_campaign."""
    params = {**columns, "headers": Jsonb(columns["headers"])}
    given = {"recipients": recipients, "attachments": attachments}
    for _, cols, param in CHILDREN:
        if rows := given[param]:
            params[param] = orjson.dumps([{n: row[n] for n in cols} for row in rows]).decode()
    sql = _insert_sql(tuple(columns), tuple(param for _, _, param in CHILDREN if given[param]), members_only)
    rows = await reads.fetch(conn, sql, params)
    return rows[0] if rows else None


async def live_campaign(session: AsyncSession, campaign_id: uuid.UUID, user: uuid.UUID) -> EmailCampaign:
    """The campaign, if it is live and the user may see it; otherwise 404 (never another brand's data)."""
    campaign = await session.get(EmailCampaign, campaign_id)
    if campaign is None or campaign.deleted_at is not None or await member_role(session, user, campaign.brand) is None:
        raise NotFound("no such campaign", field="id")
    return campaign


async def update_campaign(
    session: AsyncSession,
    campaign_id: uuid.UUID,
    body: CampaignIn,
    user: uuid.UUID,
    *,
    renderer: RenderPool,
    allow_private_links: bool = False,
) -> None:
    """PUT replaces the whole campaign; a missing `from` keeps the old sender."""
    campaign = await live_campaign(session, campaign_id, user)
    # Re-read under the row lock the sender claims due campaigns with: an edit and an execution
    # cannot interleave.
    await session.refresh(campaign, with_for_update=True)
    await _check_may_change(session, campaign, user)
    if campaign.executed_at is not None:
        raise Conflict("an executed campaign cannot be changed", field="id")
    if body.id is not None and body.id != campaign.id:
        raise BadRequest("does not match the campaign in the path", field="id")
    if body.brand is not None and body.brand != campaign.brand:
        raise BadRequest("a campaign cannot move to another brand", field="brand")
    actor = Actor(user=user, brand=campaign.brand, allow_private_links=allow_private_links)
    values, recipients, attachments = await _values(
        session, body, actor, from_user=body.from_ or campaign.from_, force_individual=False, renderer=renderer
    )
    await session.execute(
        update(EmailCampaign).where(EmailCampaign.id == campaign.id).values(**values, updated_at=func.now())
    )
    await session.execute(delete(EmailCampaignRecipient).where(EmailCampaignRecipient.campaign == campaign.id))
    await session.execute(delete(EmailCampaignAttachment).where(EmailCampaignAttachment.campaign == campaign.id))
    await _write_children(session, campaign.id, recipients, attachments)


async def set_notifications(session: AsyncSession, campaign_id: uuid.UUID, user: uuid.UUID, enabled: bool) -> None:
    campaign = await live_campaign(session, campaign_id, user)
    if (
        user not in (campaign.from_, campaign.created_by)
        and await member_role(session, user, campaign.brand) != "Admin"
    ):
        raise Forbidden("only the sender, the author or an Admin may change a campaign's notifications", field="id")
    campaign.notifications_enabled = enabled
    campaign.updated_at = datetime.now(UTC)


async def delete_campaign(session: AsyncSession, campaign_id: uuid.UUID, user: uuid.UUID) -> None:
    """Soft delete. The sender only picks live campaigns, so a deleted scheduled one is never sent."""
    campaign = await live_campaign(session, campaign_id, user)
    await _check_may_change(session, campaign, user)
    campaign.deleted_at = datetime.now(UTC)
