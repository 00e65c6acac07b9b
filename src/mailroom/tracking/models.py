"""What happened after sending (events) and who is told (notifications)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal, get_args

from sqlalchemy import BigInteger, CheckConstraint, DateTime, Index, Integer, PrimaryKeyConstraint, Text, text
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from mailroom.event_types import EVENT_TYPES
from mailroom.orm import Base, created_at, fk, one_of, timestamp

# A Literal, so that the answers' shapes name the same values the check constraint allows.
NotificationKind = Literal["opened", "clicked"]


class EmailEvent(Base):
    """One thing that happened to a sent email, appended as it arrives and counted afterwards.

    Partitioned by month on created_at (partitions ``email_events_YYYY_MM`` and a default one), so
    old events leave by dropping a partition. An event waits in ``unsettled_events`` until it is counted.
    """

    __tablename__ = "email_events"
    id: Mapped[int] = mapped_column(BigInteger, server_default=text("nextval('email_events_id_seq'::regclass)"))
    # When the provider says it happened (occurred_at) and when it reached us (created_at, the partition key).
    occurred_at: Mapped[datetime] = created_at()
    created_at: Mapped[datetime] = created_at()
    type: Mapped[str] = mapped_column(Text)
    severity: Mapped[str | None] = mapped_column(Text)
    # mailgun (webhook), pixel, click, unsubscribe
    source: Mapped[str] = mapped_column(Text)
    brand: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    campaign: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    email: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    campaign_email: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    recipient: Mapped[str | None] = mapped_column(Text)
    url: Mapped[str | None] = mapped_column(Text)
    link_index: Mapped[int | None] = mapped_column(Integer)
    user_agent: Mapped[str | None] = mapped_column(Text)
    ip: Mapped[str | None] = mapped_column(Text)
    reason: Mapped[str | None] = mapped_column(Text)
    provider_event_id: Mapped[str | None] = mapped_column(Text)
    # Why an open or click is kept but not counted as a person (within 30 s of sending, image proxy, scanner).
    uncounted: Mapped[str | None] = mapped_column(Text)
    __table_args__ = (
        PrimaryKeyConstraint("id", "created_at"),
        one_of("type", EVENT_TYPES, name="type"),
        CheckConstraint("severity in ('temporary', 'permanent')", name="severity"),
        Index("ix_email_events_campaign_type", "campaign", "type"),
        # (email, type): the scanner rule looks for an email's clicks; with the email alone the planner
        # joined in every click of the campaign through ix_email_events_campaign_type.
        Index("ix_email_events_email_type", "email", "type"),
        # The stats' set-aside opens and clicks, a few among thousands counted.
        Index("ix_email_events_set_aside", "campaign", postgresql_where=text("uncounted IS NOT NULL")),
        Index(
            "ix_email_events_provider_event_id",
            "provider_event_id",
            postgresql_where=text("provider_event_id IS NOT NULL"),
        ),
        Index(
            "ix_email_events_temporary_failures",
            "brand",
            "recipient",
            postgresql_where=text("type = 'failed' AND severity = 'temporary'"),
        ),
        {"postgresql_partition_by": "RANGE (created_at)"},
    )


class UnsettledEvent(Base):
    """An appended event not yet counted (tracking.settle): a queue the settler empties in batches.

    Appended in the statement that appends the event; the settler deletes the rows it counts.
    """

    __tablename__ = "unsettled_events"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class WebhookToken(Base):
    """A webhook signature's token, accepted once: a replayed call is refused."""

    __tablename__ = "webhook_tokens"
    token: Mapped[str] = mapped_column(Text, primary_key=True)
    created_at: Mapped[datetime] = created_at()
    __table_args__ = (Index("ix_webhook_tokens_created_at", "created_at"),)


class Notification(Base):
    """Telling a campaign's sender that a recipient clicked (at once) or opened (grouped)."""

    __tablename__ = "notifications"
    id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()")
    )
    user: Mapped[uuid.UUID] = fk("users.id", ondelete="CASCADE")
    brand: Mapped[uuid.UUID | None] = fk("brands.id", nullable=True, ondelete="CASCADE")
    campaign: Mapped[uuid.UUID | None] = fk("email_campaigns.id", nullable=True, ondelete="CASCADE")
    campaign_email: Mapped[uuid.UUID | None] = fk("email_campaign_emails.id", nullable=True, ondelete="CASCADE")
    type: Mapped[str] = mapped_column(Text)
    recipient: Mapped[str | None] = mapped_column(Text)
    url: Mapped[str | None] = mapped_column(Text)
    count: Mapped[int] = mapped_column(Integer, server_default=text("1"))
    created_at: Mapped[datetime] = created_at()
    updated_at: Mapped[datetime | None] = timestamp()
    seen_at: Mapped[datetime | None] = timestamp()
    __table_args__ = (
        one_of("type", get_args(NotificationKind), name="type"),
        Index("ix_notifications_user_created_at", "user", text("created_at DESC")),
        # Grouping a recipient's opens finds that recipient's latest open notification of the campaign.
        Index("ix_notifications_opened", "campaign", "recipient", postgresql_where=text("type = 'opened'")),
    )
