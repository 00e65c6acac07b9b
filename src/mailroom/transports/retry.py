"""How long a provider asks to be left alone: the one reading of ``Retry-After`` every HTTP transport uses."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx


def retry_after_seconds(value: str | None) -> float | None:
    """Seconds a ``Retry-After`` value (delta seconds or an HTTP date) asks to wait; None when absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def retry_after(response: httpx.Response) -> float | None:
    """What the response's ``Retry-After`` header asks, in seconds."""
    return retry_after_seconds(response.headers.get("retry-after"))
