"""Wire-format helpers shared by every domain's serializers."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def epoch(value: datetime | None) -> float | None:
    """Timestamps go out as epoch seconds (float), as the API document shows."""
    return None if value is None else value.timestamp()


def iso(value: datetime | None) -> str | None:
    """ISO 8601 with milliseconds and Z, the form the document uses for email.sent_at."""
    if value is None:
        return None
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def row_dict(obj: Any, fields: tuple[str, ...]) -> dict[str, Any]:
    return {name: getattr(obj, name) for name in fields}
