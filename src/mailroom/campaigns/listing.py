"""A brand's campaigns: filtered by status, ordered by the signed fields the API allows."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any, Literal

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from mailroom.campaigns.models import EmailCampaign
from mailroom.errors import BadRequest

Status = Literal["executed", "scheduled", "draft", "any"]

# Only these columns can be ordered by: the order string never reaches SQL.
ORDERABLE = {
    "created_at": EmailCampaign.created_at,
    "updated_at": EmailCampaign.updated_at,
    "due_at": EmailCampaign.due_at,
    "executed_at": EmailCampaign.executed_at,
    "recipients_count": EmailCampaign.recipients_count,
}


def parse_order(order: str | None) -> list[ColumnElement[Any]]:
    clauses: list[ColumnElement[Any]] = []
    for raw in (order or "-created_at").split(","):
        term = raw.strip()
        # A '+' in a query string arrives as a space.
        descending = term.startswith("-")
        name = term.lstrip("+- ")
        column = ORDERABLE.get(name)
        if column is None:
            raise BadRequest(f"cannot order by {name!r}; use {', '.join(ORDERABLE)} with + or -", field="order")
        clauses.append(column.desc().nulls_last() if descending else column.asc().nulls_last())
    return clauses


def _status_filter(status: Status | None) -> list[ColumnElement[bool]]:
    due, executed = EmailCampaign.due_at, EmailCampaign.executed_at
    if status == "executed":
        return [due.is_not(None), executed.is_not(None)]
    if status == "scheduled":
        return [due.is_not(None), executed.is_(None)]
    if status == "draft":
        return [due.is_(None)]
    if status == "any":
        return []
    return [due.is_not(None)]


async def brand_campaigns(
    session: AsyncSession, brand: uuid.UUID, *, status: Status | None, start: int, limit: int, order: str | None
) -> tuple[Sequence[EmailCampaign], int]:
    where = [EmailCampaign.brand == brand, EmailCampaign.deleted_at.is_(None), *_status_filter(status)]
    ordering = parse_order(order)
    total = await session.scalar(select(func.count()).select_from(EmailCampaign).where(*where))
    rows = await session.scalars(
        select(EmailCampaign).where(*where).order_by(*ordering, EmailCampaign.id).offset(start).limit(limit)
    )
    return rows.all(), int(total or 0)
