"""A brand's suppression list as its people see it: who is no longer mailed, why, and lifting one.

Lifting removes only the suppression. The contacts' ``Unsubscribed`` tag is the contact's own record
(filters read it, and expansion leaves a tagged contact's addresses out), so it is left as it is: it
is changed on the contact.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal, cast

from pydantic import Field
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from typing_extensions import TypedDict

from mailroom.addresses import normalize
from mailroom.crm.models import Suppression, SuppressionReason
from mailroom.errors import NotFound
from mailroom.serialize import closed, epoch


async def list_suppressions(
    session: AsyncSession, *, brand: uuid.UUID, start: int, limit: int, q: str | None
) -> tuple[list[Suppression], int]:
    """One page of the brand's suppressed addresses, newest first, and the number of all that match.

    ``q`` matches any part of the address, in any case; ``%``, ``_`` and ``\\`` in it are literal.
    """
    where: list[Any] = [Suppression.brand == brand]
    # Addresses are stored lower-cased and trimmed, so the search is too: any case, pasted spaces.
    needle = (q or "").strip().lower()
    if needle:
        where.append(Suppression.email.contains(needle, autoescape=True))
    total = await session.scalar(select(func.count()).select_from(Suppression).where(*where))
    # The address breaks ties between suppressions made at the same moment, so pages never overlap.
    rows = await session.scalars(
        select(Suppression)
        .where(*where)
        .order_by(Suppression.created_at.desc(), Suppression.email)
        .offset(start)
        .limit(limit)
    )
    return list(rows.all()), int(total or 0)


async def lift_suppression(session: AsyncSession, *, brand: uuid.UUID, address: str) -> None:
    """Mail this address from this brand again; 404 when the brand has not suppressed it."""
    removed = await session.scalar(
        delete(Suppression)
        .where(Suppression.brand == brand, Suppression.email == normalize(address))
        .returning(Suppression.email)
    )
    if removed is None:
        raise NotFound("is not suppressed in this brand", field="address")


@closed
class SuppressionOut(TypedDict):
    """An address the brand no longer mails."""

    type: Literal["suppression"]
    email: Annotated[str, Field(description="The address, lower-cased and trimmed")]
    reason: SuppressionReason
    detail: Annotated[str | None, Field(description="What the provider said, when it said anything")]
    created_at: Annotated[float, Field(description="When it was suppressed, in epoch seconds")]


def suppression_out(row: Suppression) -> SuppressionOut:
    return {
        "type": "suppression",
        "email": row.email,
        # The column is text; its check constraint holds it to these values.
        "reason": cast(SuppressionReason, row.reason),
        "detail": row.detail,
        "created_at": epoch(row.created_at),
    }
