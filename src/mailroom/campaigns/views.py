"""Reading campaigns back in the document's shape, with the associations asked for.

The serialisers take the named-tuple rows of ``reads``, whose fields carry the ORM's attribute names.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from psycopg import AsyncConnection

from mailroom.campaigns import reads
from mailroom.campaigns.schemas import (
    AttachmentOut,
    CampaignEmailOut,
    CampaignOut,
    CountersOut,
    EmailOut,
    RecipientOut,
)
from mailroom.crm.schemas import (
    AgentOut,
    BrandOut,
    ContactOut,
    CrmListOut,
    agent_out,
    brand_out,
    contact_out,
    list_out,
    user_out,
)
from mailroom.errors import BadRequest
from mailroom.event_types import EVENT_TYPES
from mailroom.serialize import epoch, full_name, iso
from mailroom.validation import names_pattern

T = TypeVar("T")
ASSOCIATIONS = {
    "email_campaign.recipients",
    "email_campaign.emails",
    "email_campaign.attachments",
    "email_campaign.from",
    "email_campaign.template",
    "email_campaign.deal",
    "email_campaign_email.email",
    "email_campaign_recipient.contact",
    "email_campaign_recipient.list",
    "email_campaign_recipient.brand",
    "email_campaign_recipient.agent",
    "email.html",
    "email.text",
}
# What parse_associations takes of one value, for the document; parse_associations words the refusals.
ASSOCIATIONS_PATTERN = names_pattern(sorted(ASSOCIATIONS), required=False)


def parse_associations(values: Iterable[str]) -> frozenset[str]:
    """`associations[]=a&associations[]=b` and the document's comma-separated form alike."""
    names = {part.strip() for value in values for part in value.split(",") if part.strip()}
    unknown = sorted(names - ASSOCIATIONS)
    if unknown:
        raise BadRequest(f"unknown association {unknown[0]}", field="associations")
    return frozenset(names)


def counters(row: Any) -> CountersOut:
    # CountersOut names the event types in EVENT_TYPES' order (tests/test_event_types.py holds it to that).
    return cast(CountersOut, {t: getattr(row, t) for t in EVENT_TYPES})


def campaign_fields(c: Any) -> CampaignOut:
    return {
        "id": c.id,
        "created_at": epoch(c.created_at),
        "updated_at": epoch(c.updated_at),
        "deleted_at": epoch(c.deleted_at),
        "created_by": c.created_by,
        "brand": c.brand,
        "subject": c.subject,
        "include_signature": c.include_signature,
        "html": c.html,
        "due_at": epoch(c.due_at),
        "executed_at": epoch(c.executed_at),
        "individual": c.individual,
        **counters(c),
        "text": c.text,
        "headers": c.headers,
        "google_credential": c.google_credential,
        "microsoft_credential": c.microsoft_credential,
        "thread_key": c.thread_key,
        "failed_at": epoch(c.failed_at),
        "failed_within": c.failed_within,
        "failure": c.failure,
        "notifications_enabled": c.notifications_enabled,
        "archive": c.archive,
        "tracking": c.tracking,
        "tags": c.tags,
        "recipients_count": c.recipients_count,
        "listed": c.listed,
        "type": "email_campaign",
        "sent": c.sent,
        # Mail leaves From the user's address only once they have confirmed it, or through their own
        # connected mailbox; until then From is the service's address and theirs is the Reply-To.
        "from_address_verified": bool(c.from_confirmed or c.google_credential or c.microsoft_credential),
    }


@dataclass
class Named:
    """What recipient rows name, expanded, by recipient id: None for an association not asked for (its key
    stays out of the answer), and a recipient missing from one asked for reads null."""

    contacts: dict[uuid.UUID, ContactOut] | None = None
    lists: dict[uuid.UUID, CrmListOut] | None = None
    brands: dict[uuid.UUID, BrandOut] | None = None
    agents: dict[uuid.UUID, AgentOut] | None = None


def recipient_out(r: Any, named: Named) -> RecipientOut:
    out: RecipientOut = {
        "id": r.id,
        "created_at": epoch(r.created_at),
        "updated_at": epoch(r.updated_at),
        "deleted_at": epoch(r.deleted_at),
        "campaign": r.campaign,
        "tag": r.tag,
        "email": r.email,
        "send_type": r.send_type,
        "recipient_type": r.recipient_type,
        "type": "email_campaign_recipient",
    }
    if named.contacts is not None:
        out["contact"] = named.contacts.get(r.id)
    if named.lists is not None:
        out["list"] = named.lists.get(r.id)
    if named.brands is not None:
        out["brand"] = named.brands.get(r.id)
    if named.agents is not None:
        out["agent"] = named.agents.get(r.id)
    return out


async def named_by(
    conn: AsyncConnection[Any], recipients: Sequence[Any], associations: frozenset[str], reader: uuid.UUID
) -> Named:
    """The contacts, lists, brands and agents the recipient rows name, for the associations asked for: one
    statement per association for all of the rows, none for one that no row names."""

    async def read(name: reads.Naming) -> dict[uuid.UUID, Any]:
        ids = [r.id for r in recipients if getattr(r, name) is not None]
        return await reads.named_by_recipients(conn, name, ids, reader)

    named = Named()
    if "email_campaign_recipient.contact" in associations:
        named.contacts = {r: contact_out(row) for r, row in (await read("contact")).items()}
    if "email_campaign_recipient.list" in associations:
        named.lists = {r: list_out(row) for r, row in (await read("list")).items()}
    if "email_campaign_recipient.brand" in associations:
        named.brands = {r: brand_out(row) for r, row in (await read("brand")).items()}
    if "email_campaign_recipient.agent" in associations:
        named.agents = {r: agent_out(row) for r, row in (await read("agent")).items()}
    return named


def attachment_out(a: Any) -> AttachmentOut:
    return {
        "id": a.id,
        "campaign": a.campaign,
        "file": a.file,
        "url": a.url,
        "name": a.name,
        "is_inline": a.is_inline,
        "content_id": a.content_id,
        "created_at": epoch(a.created_at),
        "updated_at": epoch(a.updated_at),
        "deleted_at": epoch(a.deleted_at),
        "type": "email_campaign_attachment",
    }


def email_out(e: Any, associations: frozenset[str]) -> EmailOut:
    out: EmailOut = {
        "id": e.id,
        "created_at": epoch(e.created_at),
        "from": e.from_,
        "to": e.to,
        "subject": e.subject,
        "headers": e.headers,
        # The document's name for the ESP's message id.
        "mailgun_id": e.esp_message_id,
        "domain": e.domain,
        "campaign": e.campaign,
        "cc": e.cc,
        "bcc": e.bcc,
        **counters(e),
        "tags": e.tags,
        "google_id": e.google_id,
        "microsoft_id": e.microsoft_id,
        "tracking_id": e.tracking_id,
        "google_credential": e.google_credential,
        "microsoft_credential": e.microsoft_credential,
        "sent_at": iso(e.sent_at),
        "type": "email",
    }
    # Bodies can be large; they come only when asked for.
    if "email.html" in associations:
        out["html"] = e.html
    if "email.text" in associations:
        out["text"] = e.text
    return out


def campaign_email_out(
    row: Any, contact: Any | None, email: Any | None, associations: frozenset[str]
) -> CampaignEmailOut:
    out: CampaignEmailOut = {
        "id": row.id,
        "campaign": row.campaign,
        "send_type": row.send_type,
        "email_address": row.email_address,
        **counters(row),
        "agent": row.agent,
        "error": row.error,
        "type": "email_campaign_email",
        "full_name": full_name(contact.first_name, contact.last_name) if contact is not None else None,
        "profile_image_url": contact.profile_image_url if contact is not None else None,
    }
    if "email_campaign_email.email" in associations:
        out["email"] = email_out(email, associations) if email is not None else None
    return out


async def campaign_emails_page(
    conn: AsyncConnection[Any],
    campaign: uuid.UUID,
    *,
    start: int,
    limit: int,
    order: str | None,
    associations: frozenset[str],
) -> tuple[list[CampaignEmailOut], int]:
    """One page of a campaign's recipient rows, and how many rows it has in all."""
    page, total = await reads.campaign_emails_page(conn, campaign, associations, order=order, start=start, limit=limit)
    return [campaign_email_out(row, contact, email, associations) for row, contact, email in page], total


async def campaigns_out(
    conn: AsyncConnection[Any], campaigns: Sequence[Any], associations: frozenset[str], *, reader: uuid.UUID
) -> list[CampaignOut]:
    """Serialise campaign rows (from ``reads``) for the user ``reader``, loading each requested association
    for all of them in one statement. An association asked for and without rows reads null, as the document
    shows."""
    ids = [c.id for c in campaigns]
    recipients: dict[uuid.UUID, list[RecipientOut]] = {}
    attachments: dict[uuid.UUID, list[AttachmentOut]] = {}
    emails: dict[uuid.UUID, list[CampaignEmailOut]] = {}
    if "email_campaign.recipients" in associations:
        rows = await reads.recipients(conn, ids)
        named = await named_by(conn, rows, associations, reader)
        recipients = _group((r.campaign, recipient_out(r, named)) for r in rows)
    if "email_campaign.attachments" in associations:
        attachments = _group((a.campaign, attachment_out(a)) for a in await reads.attachments(conn, ids))
    if "email_campaign.emails" in associations:
        found = await reads.campaign_emails(conn, ids, associations, first=reads.EMAILS_ASSOCIATION_CAP)
        emails = _group(
            (row.campaign, campaign_email_out(row, contact, email, associations)) for row, contact, email in found
        )
    users: dict[uuid.UUID, Any] = {}
    if "email_campaign.from" in associations:
        users = {u.id: u for u in await reads.senders(conn, [c.from_ for c in campaigns])}
    out = []
    for c in campaigns:
        data = campaign_fields(c)
        # In the order they follow the campaign's own fields in the document.
        if "email_campaign.recipients" in associations:
            data["recipients"] = recipients.get(c.id) or None
        if "email_campaign.attachments" in associations:
            data["attachments"] = attachments.get(c.id) or None
        if "email_campaign.emails" in associations:
            data["emails"] = emails.get(c.id) or None
        if "email_campaign.from" in associations:
            sender = users.get(c.from_)
            data["from"] = user_out(sender) if sender is not None else None
        # Templates and deals are not stored by this service.
        if "email_campaign.template" in associations:
            data["template"] = None
        if "email_campaign.deal" in associations:
            data["deal"] = None
        out.append(data)
    return out


def _group(pairs: Iterable[tuple[uuid.UUID, T]]) -> dict[uuid.UUID, list[T]]:
    grouped: dict[uuid.UUID, list[T]] = {}
    for key, value in pairs:
        grouped.setdefault(key, []).append(value)
    return grouped
