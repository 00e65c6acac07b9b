"""Email address checks shared by every input that carries one.

Deliberately a syntax check only (no DNS): a CRM holds addresses on private and test domains too.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, WithJsonSchema

# RFC 5321's limits: a forward path less its angle brackets, and a local part.
MAX_ADDRESS = 254
MAX_LOCAL_PART = 64
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
# An RFC 5322 dot-atom (no leading, trailing or doubled dot) at a domain of hostname labels. No lookarounds,
# so that the API document can carry the same expression as its `pattern`.
PATTERN = rf"^{_ATOM}(?:\.{_ATOM})*@{_LABEL}(?:\.{_LABEL})*$"
_ADDRESS = re.compile(PATTERN)


def is_address(value: str) -> bool:
    # fullmatch: `$` alone would let a trailing newline through.
    if len(value) > MAX_ADDRESS or _ADDRESS.fullmatch(value) is None:
        return False
    return len(value.rpartition("@")[0]) <= MAX_LOCAL_PART


def normalize(value: str) -> str:
    """The form addresses are compared and de-duplicated in."""
    return value.strip().lower()


def _check(value: str) -> str:
    value = value.strip()
    if not is_address(value):
        raise ValueError("is not a valid email address")
    return value


# The document states the rule _check enforces, so that a client (or a generator of test input) built from
# it sends only addresses the service takes: `format: email` also allows quoted local parts and address
# literals, which are refused; the pattern alone would allow a local part over 64 characters.
Address = Annotated[
    str,
    AfterValidator(_check),
    WithJsonSchema({"type": "string", "format": "email", "pattern": PATTERN, "maxLength": MAX_ADDRESS}),
]
