"""What a browser signs in with: one-use sign-in links and the sessions they start."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import DateTime, Index, LargeBinary
from sqlalchemy.orm import Mapped, mapped_column

from mailroom.orm import Base, created_at, fk, timestamp, uuid_pk


class SignInLink(Base):
    """A sign-in link mailed (or printed) for a user. The link itself is a sealed token naming this row;
    the row is what makes it one-use: ``used_at`` is set by the one request that consumes it."""

    __tablename__ = "sign_in_links"
    id: Mapped[uuid.UUID] = uuid_pk()
    user: Mapped[uuid.UUID] = fk("users.id", ondelete="CASCADE")
    created_at: Mapped[datetime] = created_at()
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    used_at: Mapped[datetime | None] = timestamp()
    __table_args__ = (Index("ix_sign_in_links_user", "user"),)


class WebSession(Base):
    """A signed-in browser. Only the SHA-256 of the session id is kept: a copy of this table signs nobody in."""

    __tablename__ = "web_sessions"
    id_hash: Mapped[bytes] = mapped_column(LargeBinary, primary_key=True)
    user: Mapped[uuid.UUID] = fk("users.id", ondelete="CASCADE")
    # Before created_at: in the class body that name is the column, no longer the helper.
    last_seen_at: Mapped[datetime] = created_at()
    created_at: Mapped[datetime] = created_at()
    __table_args__ = (Index("ix_web_sessions_user", "user"),)
