"""Tables the sender alone reads and writes."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, Text
from sqlalchemy.orm import Mapped, mapped_column

from mailroom.orm import Base


class SendRate(Base):
    """The next instant a transport may send at, shared by every worker (see sending.ratelimit)."""

    __tablename__ = "send_rate"
    transport: Mapped[str] = mapped_column(Text, primary_key=True)
    next_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
