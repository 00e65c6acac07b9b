"""Input checks every request body shares."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    StringConstraints,
    WithJsonSchema,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, core_schema


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

# Every character str.strip removes, spelled out for the API document's patterns: `\s` is not the same class in
# Python's regular expressions and in JavaScript's, which the document's follow.
BLANK = r"\t-\r\u001c-\u0020\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"


def names_pattern(names: Iterable[str], *, required: bool) -> str:
    """The pattern of a query value that lists `names` separated by commas, blanks around them and empty entries
    ignored (split on commas, each part stripped, empty parts dropped); with at least one name if `required`."""
    name = "(?:" + "|".join(re.escape(n) for n in names) + ")"
    blank = f"[{BLANK}]*"
    entry = f"{blank}{name}?{blank}"
    if required:
        return f"^(?:{blank},)*{blank}{name}{blank}(?:,{entry})*$"
    return f"^{entry}(?:,{entry})*$"


NO_NUL = "^[^\\u0000]*$"
# A value with no NUL and more than blanks: what a stripped string (Strict's) with a minimum length of 1 holds.
NOT_BLANK = f"^[^\\u0000]*[^\\u0000{BLANK}][^\\u0000]*$"


@dataclass(frozen=True)
class Storable:
    """`storable` as an annotation: checked after the string's own limits (so those are worded as string limits),
    and stated in the API document as a pattern, which a client cannot read off a function. `filled` states a
    stripped string's minimum length of 1 too: more than blanks."""

    filled: bool = False

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.no_info_after_validator_function(storable, handler(source))

    def __get_pydantic_json_schema__(self, schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        out = handler(schema)
        out["pattern"] = NOT_BLANK if self.filled else NO_NUL
        return out


STORABLE, FILLED = Storable(), Storable(filled=True)

PlainText = Annotated[str, STORABLE]
# A contact's or a recipient's tag; the models that take tags strip them, so a blank one is refused.
Tag = Annotated[str, StringConstraints(min_length=1, max_length=200), FILLED]
