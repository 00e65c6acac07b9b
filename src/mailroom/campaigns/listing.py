"""A brand's campaigns: filtered by status, ordered by the signed fields the API allows."""

from __future__ import annotations

from typing import Any, Literal

from mailroom.errors import BadRequest
from mailroom.validation import BLANK

Status = Literal["executed", "scheduled", "draft", "any"]

# Only these columns can be ordered by: the order string never reaches SQL.
ORDERABLE = ("created_at", "updated_at", "due_at", "executed_at", "recipients_count")
# The orders order_sql takes, for the document: terms between commas, each a name with blanks around it and
# signs (or spaces) before it; or nothing, for the default.
_TERM = f"[{BLANK}]*[+\\- ]*(?:{'|'.join(ORDERABLE)})[{BLANK}]*"
ORDER_PATTERN = f"^(?:{_TERM}(?:,{_TERM})*)?$"


def order_sql(order: str | None, alias: str) -> str:
    """The ORDER BY terms for a signed, comma-separated order; only ORDERABLE names reach SQL."""
    terms = []
    for raw in (order or "-created_at").split(","):
        term = raw.strip()
        descending = term.startswith("-")  # a '+' in a query string arrives as a space
        name = term.lstrip("+- ")
        if name not in ORDERABLE:
            raise BadRequest(f"cannot order by {name!r}; use {', '.join(ORDERABLE)} with + or -", field="order")
        terms.append(f"{alias}.{name} {'DESC' if descending else 'ASC'} NULLS LAST")
    return ", ".join(terms)


def status_sql(status: Status | None, alias: str) -> str:
    """The conditions of a status filter, each starting with AND ('' for any)."""
    if status == "executed":
        return f" AND {alias}.due_at IS NOT NULL AND {alias}.executed_at IS NOT NULL"
    if status == "scheduled":
        return f" AND {alias}.due_at IS NOT NULL AND {alias}.executed_at IS NULL"
    if status == "draft":
        return f" AND {alias}.due_at IS NULL"
    if status == "any":
        return ""
    return f" AND {alias}.due_at IS NOT NULL"


Progress = Literal["draft", "scheduled", "sending", "sent", "failed"]


def progress(campaign: Any) -> Progress:
    """Where a campaign stands, in a person's words, from a campaign row (as brand_campaigns reads it).

    Sending ends when every recipient was sent or refused: the counters the sender settles then add up to
    the recipients counted when it began."""
    if campaign.failed_at is not None:
        return "failed"
    if campaign.due_at is None:
        return "draft"
    if campaign.executed_at is None:
        return "scheduled"
    if campaign.recipients_count is None or campaign.sent + campaign.failed < campaign.recipients_count:
        return "sending"
    return "sent"


def rate(part: int, whole: int | None) -> float | None:
    """``part`` of ``whole`` as a fraction; None when there is no whole to take it of."""
    return part / whole if whole else None
