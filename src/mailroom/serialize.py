"""Wire-format helpers shared by every domain's serializers."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, overload

from pydantic import ConfigDict, Field, with_config


@overload
def epoch(value: datetime) -> float: ...
@overload
def epoch(value: datetime | None) -> float | None: ...
def epoch(value: datetime | None) -> float | None:
    """Timestamps go out as epoch seconds (float), as the API document shows."""
    return None if value is None else value.timestamp()


def iso(value: datetime | None) -> str | None:
    """ISO 8601 with milliseconds and Z, the form the document uses for email.sent_at."""
    if value is None:
        return None
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def full_name(first: str | None, last: str | None) -> str | None:
    """ "First Last" from whichever parts there are; None when there are none."""
    return " ".join(part for part in (first, last) if part) or None


# Every answer's shape is a TypedDict: the serialisers build it (mypy checks each key and type), the
# OpenAPI document describes it, and no model is validated at request time. Closed: a key the shape does
# not declare is an error in the contract test, not a silent addition.
closed = with_config(ConfigDict(extra="forbid"))

Epoch = Annotated[float | None, Field(description="Epoch seconds (a float); null when not set")]
EpochSet = Annotated[float, Field(description="Epoch seconds (a float)")]
