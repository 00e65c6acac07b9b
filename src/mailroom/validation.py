"""Input checks every request body shares."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, StringConstraints, WithJsonSchema


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


# The document's account of what `utc` takes: a date-time of the years 1970 to 9998, or epoch seconds (a number
# past 2e10 is read as milliseconds, so the top is 9998's last millisecond). The year is checked once the value
# is in UTC, which the pattern cannot see: a date-time an offset carries over a year's edge is refused all the
# same. Lenient forms (a date alone, no zone, digits in a string) are taken too and left unsaid.
_YEARS = r"^(?:19[7-9][0-9]|[2-8][0-9]{3}|9[0-8][0-9]{2}|99[0-8][0-9]|999[0-8])-"
_END_OF_9998_MS = 253_370_764_800_000
TIMESTAMP_SCHEMA = {
    "anyOf": [
        {"type": "string", "format": "date-time", "pattern": _YEARS},
        {"type": "number", "minimum": 0, "exclusiveMaximum": _END_OF_9998_MS},
    ]
}
Timestamp = Annotated[datetime, AfterValidator(utc), WithJsonSchema(TIMESTAMP_SCHEMA)]

PlainText = Annotated[str, AfterValidator(storable)]
# A contact's or a campaign's tag. Length limits come first so they are worded as string limits.
Tag = Annotated[str, StringConstraints(min_length=1, max_length=200), AfterValidator(storable)]
