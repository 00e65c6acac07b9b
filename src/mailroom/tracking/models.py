"""Addresses a brand must not mail again."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import CheckConstraint, Index, PrimaryKeyConstraint, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from mailroom.orm import Base, created_at, fk, one_of

SUPPRESSION_REASONS = ("unsubscribed", "complained", "bounced")


class Suppression(Base):
    __tablename__ = "suppressions"
    brand: Mapped[uuid.UUID] = fk("brands.id", ondelete="CASCADE")
    # Stored lower-cased and trimmed, the form expansion compares with.
    email: Mapped[str] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = created_at()
    __table_args__ = (
        PrimaryKeyConstraint("brand", "email"),
        one_of("reason", SUPPRESSION_REASONS, name="reason"),
        CheckConstraint("email = lower(btrim(email))", name="normalised"),
        Index("ix_suppressions_email", text("email")),
    )
