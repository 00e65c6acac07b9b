"""Reading a provider's HTTP answers the same way in every transport: its JSON body, and ``Retry-After``."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

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


def json_object(response: httpx.Response) -> dict[str, Any]:
    """The body as a JSON object; {} when it is not one (an HTML error page from a proxy, say)."""
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
