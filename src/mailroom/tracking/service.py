"""Suppressing an address: the brand never mails it again."""

from __future__ import annotations

import uuid

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from mailroom.addresses import normalize


async def suppress(session: AsyncSession, brand: uuid.UUID, address: str, reason: str = "unsubscribed") -> None:
    """Never mail this address from this brand again, and tag the brand's contacts holding it."""
    await session.execute(
        text(
            "INSERT INTO suppressions (brand, email, reason) VALUES (:brand, :email, :reason) "
            "ON CONFLICT (brand, email) DO NOTHING"
        ),
        {"brand": brand, "email": normalize(address), "reason": reason},
    )
    if reason == "unsubscribed":
        await session.execute(
            text(
                "UPDATE contacts SET tags = array_append(tags, 'Unsubscribed'), updated_at = now() "
                "WHERE brand = :brand AND deleted_at IS NULL "
                "AND mailroom_lower_array(emails) @> ARRAY[:email] "
                "AND NOT mailroom_lower_array(tags) @> ARRAY['unsubscribed']"
            ),
            {"brand": brand, "email": normalize(address)},
        )
