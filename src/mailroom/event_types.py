"""What can happen to a sent email, named once.

Each name is a Mailgun event, a value of ``email_events.type``, a counter column of campaigns, campaign
emails and emails, and a key of the API's counters; wherever they are listed, they are listed in this order.
The answers' TypedDicts must write the names out for the type checker; tests/test_event_types.py holds
them to this list.
"""

from __future__ import annotations

EVENT_TYPES: tuple[str, ...] = (
    "accepted", "rejected", "delivered", "failed", "opened", "clicked", "unsubscribed", "complained", "stored",
)  # fmt: skip
