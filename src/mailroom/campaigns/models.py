"""Campaigns, who they go to, what they carry, and the emails they became."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal, get_args

from sqlalchemy import CheckConstraint, ForeignKey, Index, Integer, Text, UniqueConstraint
from sqlalchemy import text as sql_text
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from mailroom.event_types import EVENT_TYPES
from mailroom.orm import Base, counter, created_at, fk, one_of, timestamp, uuid_pk

# One definition each: the API schemas validate with the Literals, the tables check the tuples.
RecipientType = Literal["Email", "Contact", "List", "Tag", "Brand", "Agent", "AllContacts"]
SendType = Literal["To", "CC", "BCC"]
RECIPIENT_TYPES: tuple[str, ...] = get_args(RecipientType)
SEND_TYPES: tuple[str, ...] = get_args(SendType)


class _EventCounters:
    """A counter per event type, named as the type; kept on campaign, campaign email and email alike.

    The columns are made from EVENT_TYPES below, so a new event type is counted at every level at once.
    Code reads them from rows and SQL, never as typed attributes, so the type checker need not see them.
    """


for _event_type in EVENT_TYPES:
    setattr(_EventCounters, _event_type, counter())


class EmailCampaign(_EventCounters, Base):
    __tablename__ = "email_campaigns"
    id: Mapped[uuid.UUID] = uuid_pk()
    created_at: Mapped[datetime] = created_at()
    updated_at: Mapped[datetime | None] = timestamp()
    deleted_at: Mapped[datetime | None] = timestamp()
    created_by: Mapped[uuid.UUID] = fk("users.id")
    brand: Mapped[uuid.UUID] = fk("brands.id")
    from_: Mapped[uuid.UUID] = mapped_column("from", UUID(as_uuid=True), ForeignKey("users.id"))
    due_at: Mapped[datetime | None] = timestamp()
    executed_at: Mapped[datetime | None] = timestamp()
    subject: Mapped[str] = mapped_column(Text, server_default=sql_text("''"))
    html: Mapped[str | None] = mapped_column(Text)
    text: Mapped[str | None] = mapped_column(Text)
    headers: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=sql_text("'{}'::jsonb"))
    include_signature: Mapped[bool] = mapped_column(server_default=sql_text("false"))
    individual: Mapped[bool] = mapped_column(server_default=sql_text("false"))
    google_credential: Mapped[uuid.UUID | None] = fk("google_credentials.id", nullable=True)
    microsoft_credential: Mapped[uuid.UUID | None] = fk("microsoft_credentials.id", nullable=True)
    thread_key: Mapped[str | None] = mapped_column(Text)
    failed_at: Mapped[datetime | None] = timestamp()
    failed_within: Mapped[str | None] = mapped_column(Text)
    failure: Mapped[str | None] = mapped_column(Text)
    notifications_enabled: Mapped[bool] = mapped_column(server_default=sql_text("true"))
    archive: Mapped[bool] = mapped_column(server_default=sql_text("false"))
    # Our own open and click tracking for this campaign (MAILROOM_TRACKING=off turns it off everywhere).
    tracking: Mapped[bool] = mapped_column(server_default=sql_text("true"))
    tags: Mapped[list[str] | None] = mapped_column(ARRAY(Text))
    recipients_count: Mapped[int | None] = mapped_column(Integer)
    listed: Mapped[bool] = mapped_column(server_default=sql_text("true"))
    sent: Mapped[int] = counter()
    deal: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    template: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    __table_args__ = (
        Index("ix_email_campaigns_brand_created_at", "brand", "created_at"),
        # The scheduler's question, "what is due?", reads only live unexecuted campaigns.
        Index(
            "ix_email_campaigns_due",
            "due_at",
            postgresql_where=sql_text("executed_at IS NULL AND deleted_at IS NULL AND due_at IS NOT NULL"),
        ),
        Index("ix_email_campaigns_from_due_at", "from", "due_at"),
        CheckConstraint("google_credential IS NULL OR microsoft_credential IS NULL", name="one_credential"),
    )


class EmailCampaignRecipient(Base):
    __tablename__ = "email_campaign_recipients"
    id: Mapped[uuid.UUID] = uuid_pk()
    created_at: Mapped[datetime] = created_at()
    updated_at: Mapped[datetime | None] = timestamp()
    deleted_at: Mapped[datetime | None] = timestamp()
    campaign: Mapped[uuid.UUID] = fk("email_campaigns.id", ondelete="CASCADE")
    recipient_type: Mapped[str] = mapped_column(Text)
    send_type: Mapped[str] = mapped_column(Text)
    email: Mapped[str | None] = mapped_column(Text)
    contact: Mapped[uuid.UUID | None] = fk("contacts.id", nullable=True)
    list: Mapped[uuid.UUID | None] = fk("crm_lists.id", nullable=True)
    tag: Mapped[str | None] = mapped_column(Text)
    brand: Mapped[uuid.UUID | None] = fk("brands.id", nullable=True)
    agent: Mapped[uuid.UUID | None] = fk("agents.id", nullable=True)
    __table_args__ = (
        Index("ix_email_campaign_recipients_campaign", "campaign"),
        one_of("recipient_type", RECIPIENT_TYPES, name="recipient_type"),
        one_of("send_type", SEND_TYPES, name="send_type"),
    )


class EmailCampaignAttachment(Base):
    __tablename__ = "email_campaign_attachments"
    id: Mapped[uuid.UUID] = uuid_pk()
    campaign: Mapped[uuid.UUID] = fk("email_campaigns.id", ondelete="CASCADE")
    file: Mapped[uuid.UUID | None] = fk("files.id", nullable=True)
    url: Mapped[str | None] = mapped_column(Text)
    name: Mapped[str | None] = mapped_column(Text)
    is_inline: Mapped[bool] = mapped_column(server_default=sql_text("false"))
    content_id: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = created_at()
    updated_at: Mapped[datetime | None] = timestamp()
    deleted_at: Mapped[datetime | None] = timestamp()
    __table_args__ = (
        Index("ix_email_campaign_attachments_campaign", "campaign"),
        CheckConstraint("(file IS NULL) <> (url IS NULL)", name="file_or_url"),
    )


class Email(_EventCounters, Base):
    """One message as handed to a provider."""

    __tablename__ = "emails"
    id: Mapped[uuid.UUID] = uuid_pk()
    created_at: Mapped[datetime] = created_at()
    from_: Mapped[str] = mapped_column("from", Text)
    to: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default=sql_text("'{}'"))
    cc: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default=sql_text("'{}'"))
    bcc: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default=sql_text("'{}'"))
    subject: Mapped[str | None] = mapped_column(Text)
    html: Mapped[str | None] = mapped_column(Text)
    text: Mapped[str | None] = mapped_column(Text)
    headers: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=sql_text("'{}'::jsonb"))
    # The id the ESP gave the message (Mailgun's, SMTP's Message-ID, the outbox's file name).
    esp_message_id: Mapped[str | None] = mapped_column(Text)
    domain: Mapped[str | None] = mapped_column(Text)
    campaign: Mapped[uuid.UUID | None] = fk("email_campaigns.id", nullable=True, ondelete="CASCADE")
    tags: Mapped[list[str] | None] = mapped_column(ARRAY(Text))
    google_id: Mapped[str | None] = mapped_column(Text)
    microsoft_id: Mapped[str | None] = mapped_column(Text)
    # The html's links in order: a tracked click redirects only to one of them.
    links: Mapped[list[str] | None] = mapped_column(ARRAY(Text))
    tracking_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), server_default=sql_text("gen_random_uuid()"))
    google_credential: Mapped[uuid.UUID | None] = fk("google_credentials.id", nullable=True)
    microsoft_credential: Mapped[uuid.UUID | None] = fk("microsoft_credentials.id", nullable=True)
    sent_at: Mapped[datetime | None] = timestamp()
    __table_args__ = (
        Index("ix_emails_campaign", "campaign"),
        Index("ix_emails_esp_message_id", "esp_message_id", postgresql_where=sql_text("esp_message_id IS NOT NULL")),
        Index("ix_emails_tracking_id", "tracking_id", unique=True),
    )


class EmailCampaignEmail(_EventCounters, Base):
    """One recipient address of an executed campaign: the unit of sending state and of reporting."""

    __tablename__ = "email_campaign_emails"
    id: Mapped[uuid.UUID] = uuid_pk()
    created_at: Mapped[datetime] = created_at()
    campaign: Mapped[uuid.UUID] = fk("email_campaigns.id", ondelete="CASCADE")
    # Position within the campaign, 1..recipients_count: send jobs take contiguous ranges of it.
    seq: Mapped[int] = mapped_column(Integer)
    email: Mapped[uuid.UUID | None] = fk("emails.id", nullable=True)
    # Lower-cased and trimmed: the form de-duplication compares.
    email_address: Mapped[str] = mapped_column(Text)
    send_type: Mapped[str] = mapped_column(Text)
    contact: Mapped[uuid.UUID | None] = fk("contacts.id", nullable=True)
    agent: Mapped[uuid.UUID | None] = fk("agents.id", nullable=True)
    error: Mapped[str | None] = mapped_column(Text)
    # Why an open or click of this recipient was kept as an event but not counted as a person.
    uncounted: Mapped[str | None] = mapped_column(Text)
    __table_args__ = (
        UniqueConstraint("campaign", "email_address"),
        Index("ix_email_campaign_emails_campaign_seq", "campaign", "seq"),
        Index("ix_email_campaign_emails_email", "email"),
        Index(
            "ix_email_campaign_emails_pending",
            "campaign",
            "seq",
            postgresql_where=sql_text("email IS NULL AND error IS NULL"),
        ),
        # The stats' refused sends (migration 0013).
        Index("ix_email_campaign_emails_refused", "campaign", postgresql_where=sql_text("error IS NOT NULL")),
        one_of("send_type", SEND_TYPES, name="send_type"),
    )
