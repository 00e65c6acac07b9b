"""Reading campaigns back in the document's shape, with the associations asked for.

The serialisers take the named-tuple rows of ``reads``, whose fields carry the ORM's attribute names.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from psycopg import AsyncConnection

from mailroom.campaigns import reads
from mailroom.crm.schemas import user_out
from mailroom.errors import BadRequest
from mailroom.serialize import epoch, full_name, iso

COUNTERS = ("accepted", "rejected", "delivered", "failed", "opened", "clicked", "unsubscribed", "complained", "stored")
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
# The campaign-level associations, in the order they follow the campaign's own fields.
CAMPAIGN_ASSOCIATIONS = ("recipients", "attachments", "emails", "from", "template", "deal")


def parse_associations(values: Iterable[str]) -> frozenset[str]:
    """`associations[]=a&associations[]=b` and the document's comma-separated form alike."""
    names = {part.strip() for value in values for part in value.split(",") if part.strip()}
    unknown = sorted(names - ASSOCIATIONS)
    if unknown:
        raise BadRequest(f"unknown association {unknown[0]}", field="associations")
    return frozenset(names)


def campaign_fields(c: Any) -> dict[str, Any]:
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
        **{name: getattr(c, name) for name in COUNTERS},
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
    }


def recipient_out(r: Any, associations: frozenset[str]) -> dict[str, Any]:
    out: dict[str, Any] = {
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
    for name in ("contact", "list", "brand", "agent"):
        if f"email_campaign_recipient.{name}" in associations:
            out[name] = getattr(r, name)
    return out


def attachment_out(a: Any) -> dict[str, Any]:
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


def email_out(e: Any, associations: frozenset[str]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": e.id,
        "created_at": epoch(e.created_at),
        "from": e.from_,
        "to": e.to,
        "subject": e.subject,
        "headers": e.headers,
        "mailgun_id": e.mailgun_id,
        "domain": e.domain,
        "campaign": e.campaign,
        "cc": e.cc,
        "bcc": e.bcc,
        **{name: getattr(e, name) for name in COUNTERS},
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
) -> dict[str, Any]:
    out: dict[str, Any] = {"id": row.id, "campaign": row.campaign}
    if "email_campaign_email.email" in associations:
        out["email"] = email_out(email, associations) if email is not None else None
    out.update(
        {
            "send_type": row.send_type,
            "email_address": row.email_address,
            **{name: getattr(row, name) for name in COUNTERS},
            "agent": row.agent,
            "error": row.error,
            "type": "email_campaign_email",
            "full_name": full_name(contact.first_name, contact.last_name) if contact is not None else None,
            "profile_image_url": contact.profile_image_url if contact is not None else None,
        }
    )
    return out


async def campaign_emails_page(
    conn: AsyncConnection[Any],
    campaign: uuid.UUID,
    *,
    start: int,
    limit: int,
    order: str | None,
    associations: frozenset[str],
) -> tuple[list[dict[str, Any]], int]:
    """One page of a campaign's recipient rows, and how many rows it has in all."""
    page, total = await reads.campaign_emails_page(conn, campaign, associations, order=order, start=start, limit=limit)
    return [campaign_email_out(row, contact, email, associations) for row, contact, email in page], total


async def campaigns_out(
    conn: AsyncConnection[Any], campaigns: Sequence[Any], associations: frozenset[str]
) -> list[dict[str, Any]]:
    """Serialise campaign rows (from ``reads``), loading each requested association for all of them
    in one statement."""
    ids = [c.id for c in campaigns]
    by_campaign: dict[str, dict[uuid.UUID, list[Any]]] = {}
    if "email_campaign.recipients" in associations:
        rows = await reads.recipients(conn, ids)
        by_campaign["recipients"] = _group((r.campaign, recipient_out(r, associations)) for r in rows)
    if "email_campaign.attachments" in associations:
        by_campaign["attachments"] = _group((a.campaign, attachment_out(a)) for a in await reads.attachments(conn, ids))
    if "email_campaign.emails" in associations:
        found = await reads.campaign_emails(conn, ids, associations, first=reads.EMAILS_ASSOCIATION_CAP)
        by_campaign["emails"] = _group(
            (row.campaign, campaign_email_out(row, contact, email, associations)) for row, contact, email in found
        )
    users: dict[uuid.UUID, Any] = {}
    if "email_campaign.from" in associations:
        users = {u.id: u for u in await reads.senders(conn, [c.from_ for c in campaigns])}
    out = []
    for c in campaigns:
        data = campaign_fields(c)
        # Mail leaves From the user's address only once they have confirmed it, or through their own
        # connected mailbox; until then From is the service's address and theirs is the Reply-To.
        data["from_address_verified"] = bool(c.from_confirmed or c.google_credential or c.microsoft_credential)
        for name in CAMPAIGN_ASSOCIATIONS:
            if f"email_campaign.{name}" not in associations:
                continue
            if name == "from":
                sender = users.get(c.from_)
                data["from"] = user_out(sender) if sender is not None else None
            elif name in by_campaign:
                # An association with no rows reads null, as the document shows.
                data[name] = by_campaign[name].get(c.id) or None
            else:
                data[name] = None  # templates and deals are not stored by this service
        out.append(data)
    return out


def _group(pairs: Iterable[tuple[uuid.UUID, Any]]) -> dict[uuid.UUID, list[Any]]:
    grouped: dict[uuid.UUID, list[Any]] = {}
    for key, value in pairs:
        grouped.setdefault(key, []).append(value)
    return grouped
