"""Sending domains: a user's own address domain set up to send from, with the DNS records it needs."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, LargeBinary, Text, UniqueConstraint, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from mailroom.orm import Base, created_at, fk, timestamp, uuid_pk


class SendingDomain(Base):
    __tablename__ = "sending_domains"
    id: Mapped[uuid.UUID] = uuid_pk()
    # The address domain it sends for (rechat.com) and, on an ESP that signs for domains it knows (Mailgun),
    # the domain set up there.
    domain: Mapped[str] = mapped_column(Text)
    esp_domain: Mapped[str | None] = mapped_column(Text)
    # Whose records the domain needs: the ESP's name when it sets domains up itself ("mailgun"), else "smtp"
    # for the service's own (transports.registry.domain_provider).
    provider: Mapped[str] = mapped_column(Text)
    risks: Mapped[str | None] = mapped_column(Text)
    dkim_selector: Mapped[str | None] = mapped_column(Text)
    # The DKIM private key (PEM), encrypted like provider tokens; the public half is published in DNS.
    dkim_private_key: Mapped[bytes | None] = mapped_column(LargeBinary)
    dkim_public_key: Mapped[str | None] = mapped_column(Text)
    # The records as last checked: [{name, record_type, desired_value, is_active, reason}].
    records: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, server_default=text("'[]'::jsonb"))
    created_by: Mapped[uuid.UUID | None] = fk("users.id", nullable=True)
    created_at: Mapped[datetime] = created_at()
    updated_at: Mapped[datetime | None] = timestamp()
    checked_at: Mapped[datetime | None] = timestamp()
    enabled_at: Mapped[datetime | None] = timestamp()
    disabled_at: Mapped[datetime | None] = timestamp()
    disabled_reason: Mapped[str | None] = mapped_column(Text)
    __table_args__ = (
        CheckConstraint("provider in ('mailgun', 'smtp')", name="provider"),
        CheckConstraint("domain = lower(domain)", name="lower"),
        UniqueConstraint("domain"),
    )
