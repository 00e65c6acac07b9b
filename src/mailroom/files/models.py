"""Uploaded files (campaign attachments)."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, Index, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from mailroom.orm import Base, created_at, fk, timestamp, uuid_pk


class File(Base):
    __tablename__ = "files"
    id: Mapped[uuid.UUID] = uuid_pk()
    created_by: Mapped[uuid.UUID] = fk("users.id")
    # The brand the file was uploaded in: campaigns of that brand may attach it.
    brand: Mapped[uuid.UUID | None] = fk("brands.id", nullable=True)
    path: Mapped[str] = mapped_column(Text)
    name: Mapped[str] = mapped_column(Text)
    mime: Mapped[str | None] = mapped_column(Text)
    size: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    public: Mapped[bool] = mapped_column(server_default=text("false"))
    created_at: Mapped[datetime] = created_at()
    updated_at: Mapped[datetime | None] = timestamp()
    deleted_at: Mapped[datetime | None] = timestamp()
    __table_args__ = (Index("ix_files_created_by", "created_by"), Index("ix_files_brand", "brand"))
