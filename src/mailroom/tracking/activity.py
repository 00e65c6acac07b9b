"""Opens and clicks once they are counted, as a list to tell the sender of (notifications.notify); the
settler tells them straight from its batch (notifications.notify_from)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class SettledActivity:
    """One open or click just counted as a person's (not a proxy's, a scanner's or the send's own echo)."""

    type: str  # "opened" or "clicked"
    campaign: uuid.UUID
    campaign_email: uuid.UUID | None
    recipient: str | None
    url: str | None
    occurred_at: datetime
