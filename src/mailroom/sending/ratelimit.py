"""A send rate shared by every worker process: MAILROOM_RATE_LIMIT messages per second per transport.

Workers reserve time on one row per transport (a generic cell rate algorithm): each reservation
moves the transport's next free instant forward by n/rate and waits until its own slot starts.
One short UPDATE per chunk of messages, so the database is not the bottleneck.
"""

from __future__ import annotations

import asyncio

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

RESERVE = text(
    """
    INSERT INTO send_rate (transport, next_at)
    VALUES (:transport, now() + make_interval(secs => :cost))
    ON CONFLICT (transport) DO UPDATE
        SET next_at = greatest(send_rate.next_at, now()) + make_interval(secs => :cost)
    RETURNING extract(epoch FROM next_at - now()) - :cost
    """
)


class RateLimiter:
    def __init__(
        self, sessionmaker: async_sessionmaker[AsyncSession], transport: str, per_second: float | None
    ) -> None:
        self._sessionmaker = sessionmaker
        self._transport = transport
        self._per_second = per_second if per_second and per_second > 0 else None

    async def acquire(self, messages: int) -> None:
        if self._per_second is None or messages <= 0:
            return
        async with self._sessionmaker() as session, session.begin():
            wait = (
                await session.execute(RESERVE, {"transport": self._transport, "cost": messages / self._per_second})
            ).scalar_one()
        if wait > 0:
            await asyncio.sleep(float(wait))
