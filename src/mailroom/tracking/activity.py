"""What counting leaves behind for whoever reacts to it (the sender's notifications)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class SettledActivity:
    """One open or click just counted as a person's (not a proxy's, a scanner's or the send's own echo)."""

    type: str  # opened | clicked
    campaign: uuid.UUID
    campaign_email: uuid.UUID
    recipient: str
    url: str | None
    occurred_at: datetime
