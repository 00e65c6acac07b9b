"""Input checks every request body shares."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, StringConstraints


class Strict(BaseModel):
    """Unknown fields are refused: a typo in a field name must not be silently ignored."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


def storable(value: str) -> str:
    # PostgreSQL text cannot hold NUL and UTF-8 cannot encode lone surrogates (which JSON escapes can
    # produce): both would fail at the database as a 500 instead of a clear 400.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode()
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text") from None
    return value


def utc(value: datetime) -> datetime:
    """A timestamp without a zone is taken as UTC, never as the database server's local time.

    Bounded because PostgreSQL stores years the driver cannot read back (before 1 AD, after 9999):
    accepting one would break every later read of the row.
    """
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    try:
        value = value.astimezone(UTC)
    except OverflowError:
        raise ValueError("is out of range") from None
    if not 1970 <= value.year <= 9998:
        raise ValueError("must be between the years 1970 and 9998")
    return value


PlainText = Annotated[str, AfterValidator(storable)]
# A contact's or a campaign's tag. Length limits come first so they are worded as string limits.
Tag = Annotated[str, StringConstraints(min_length=1, max_length=200), AfterValidator(storable)]
