"""What a send job reads: the campaign as it is to be sent, and the recipient rows still pending.

Frozen, typed values rather than database rows, so what the hot path reads is spelled out once here.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from mailroom.campaigns.audience import SHARED_MESSAGE_LIMIT
from mailroom.mailboxes.access import MailboxKind
from mailroom.serialize import full_name
from mailroom.templating.variables import recipient_values, sender_values

CAMPAIGN = text(
    """
    SELECT c.id, c.brand, c.subject, c.html, c.text, c.tags, c.individual, c.recipients_count,
           c.failed_at, c.deleted_at, c.updated_at, c.due_at, c.headers,
           c.archive, c.tracking,
           c.google_credential, c.microsoft_credential,
           coalesce(g.email, m.email) AS mailbox_address,
           u.email AS sender_email, u.first_name AS sender_first_name, u.last_name AS sender_last_name,
           u.display_name AS sender_display_name, u.phone_number AS sender_phone_number,
           u.email_confirmed AS sender_confirmed
    FROM email_campaigns c
    JOIN users u ON u.id = c."from"
    LEFT JOIN google_credentials g ON g.id = c.google_credential
    LEFT JOIN microsoft_credentials m ON m.id = c.microsoft_credential
    WHERE c.id = :id
    """
)

# A recipient row as templates see it: its address, and the name of its contact or agent.
_RECIPIENT = """
    SELECT e.id, e.campaign, e.email_address, e.send_type, c.first_name, c.last_name, a.full_name
    FROM email_campaign_emails e
    LEFT JOIN contacts c ON c.id = e.contact
    LEFT JOIN agents a ON a.id = e.agent
"""
PENDING = text(
    _RECIPIENT
    + "WHERE e.campaign = :campaign AND e.seq BETWEEN :first AND :last AND e.email IS NULL AND e.error IS NULL "
    + "ORDER BY e.seq"
)
ONE_RECIPIENT = text(_RECIPIENT + "WHERE e.id = :id")


@dataclass(frozen=True, slots=True)
class Sender:
    """The campaign's `from` user, as templates see it (`sender.*`)."""

    email: str
    first_name: str | None
    last_name: str | None
    display_name: str | None
    phone_number: str | None
    confirmed: bool

    def template_values(self) -> dict[str, Any]:
        return sender_values(
            email=self.email,
            first_name=self.first_name,
            last_name=self.last_name,
            display_name=self.display_name,
            phone_number=self.phone_number,
        )


@dataclass(frozen=True, slots=True)
class CampaignToSend:
    id: uuid.UUID
    brand: uuid.UUID
    subject: str
    html: str | None
    text: str | None
    tags: tuple[str, ...]
    individual: bool
    recipients_count: int
    failed: bool
    deleted: bool
    updated_at: datetime | None
    due_at: datetime | None
    headers: Mapping[str, str]
    sender: Sender
    # The connected mailbox the campaign asks to be sent through, and its address.
    mailbox: MailboxKind | None
    credential: uuid.UUID | None
    mailbox_address: str | None
    # Recipients get a view-in-browser link ({{email.url}}).
    archive: bool = False
    # Opens and clicks are tracked (when the service tracks at all).
    tracking: bool = True

    @property
    def shared(self) -> bool:
        """One message To/Cc/Bcc for everyone, as a person would send it (else one message per recipient)."""
        return not self.individual and self.recipients_count < SHARED_MESSAGE_LIMIT


@dataclass(frozen=True, slots=True)
class PendingRow:
    """One recipient (email_campaign_emails row) not yet sent nor failed for good."""

    id: uuid.UUID
    email_address: str
    send_type: str  # To, CC or BCC
    first_name: str | None
    last_name: str | None
    agent_name: str | None

    def template_values(self) -> dict[str, Any]:
        return recipient_values(
            email=self.email_address, first_name=self.first_name, last_name=self.last_name, display_name=self.agent_name
        )


async def load_campaign(session: AsyncSession, campaign: uuid.UUID) -> CampaignToSend | None:
    row = (await session.execute(CAMPAIGN, {"id": campaign})).first()
    if row is None:
        return None
    mailbox: MailboxKind | None = (
        "google" if row.google_credential else "microsoft" if row.microsoft_credential else None
    )
    return CampaignToSend(
        id=row.id,
        brand=row.brand,
        subject=row.subject or "",
        html=row.html,
        text=row.text,
        tags=tuple(row.tags or ()),
        individual=bool(row.individual),
        recipients_count=int(row.recipients_count or 0),
        failed=row.failed_at is not None,
        deleted=row.deleted_at is not None,
        updated_at=row.updated_at,
        due_at=row.due_at,
        headers={str(k): str(v) for k, v in (row.headers or {}).items() if v is not None},
        sender=Sender(
            email=row.sender_email,
            first_name=row.sender_first_name,
            last_name=row.sender_last_name,
            display_name=row.sender_display_name or full_name(row.sender_first_name, row.sender_last_name),
            phone_number=row.sender_phone_number,
            confirmed=bool(row.sender_confirmed),
        ),
        mailbox=mailbox,
        credential=row.google_credential or row.microsoft_credential,
        mailbox_address=row.mailbox_address,
        archive=bool(row.archive),
        tracking=bool(row.tracking),
    )


async def load_pending(session: AsyncSession, campaign: uuid.UUID, first: int, last: int) -> Sequence[PendingRow]:
    rows = (await session.execute(PENDING, {"campaign": campaign, "first": first, "last": last})).all()
    return [PendingRow(r.id, r.email_address, r.send_type, r.first_name, r.last_name, r.full_name) for r in rows]


async def load_recipient(session: AsyncSession, row_id: uuid.UUID) -> tuple[CampaignToSend, PendingRow] | None:
    """One recipient row, sent or not, with its campaign (None when either is gone)."""
    r = (await session.execute(ONE_RECIPIENT, {"id": row_id})).first()
    campaign = None if r is None else await load_campaign(session, r.campaign)
    if r is None or campaign is None:
        return None
    return campaign, PendingRow(r.id, r.email_address, r.send_type, r.first_name, r.last_name, r.full_name)
