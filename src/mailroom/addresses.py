"""Email address checks shared by every input that carries one.

Deliberately a syntax check only (no DNS): a CRM holds addresses on private and test domains too.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator

_ADDRESS = re.compile(
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)


def is_address(value: str) -> bool:
    return len(value) <= 254 and _ADDRESS.match(value) is not None and ".." not in value


def normalize(value: str) -> str:
    """The form addresses are compared and de-duplicated in."""
    return value.strip().lower()


def _check(value: str) -> str:
    value = value.strip()
    if not is_address(value):
        raise ValueError("is not a valid email address")
    return value


Address = Annotated[str, AfterValidator(_check)]
