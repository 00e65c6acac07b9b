"""Group commit: many concurrent requests' events written in one transaction, each request answered after it.

A webhook or a tracking hit is one small row; one transaction each would spend the server on round
trips and commits. Requests hand their item to an Intake and wait: while one batch is being written the
next ones gather, so under load a batch holds hundreds of items, and when idle a lone item is written at
once. A request is answered only once its batch has committed, so an acknowledged event is stored.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

Item = TypeVar("Item")
Result = TypeVar("Result")

# Batches written at once: one keeps the database busy while the next gathers; more would only queue.
WRITERS = 2


class Intake(Generic[Item, Result]):
    """Writes submitted items in batches with ``write(session, items) -> one result per item``."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        write: Callable[[AsyncSession, Sequence[Item]], Awaitable[Sequence[Result]]],
        *,
        max_batch: int = 1000,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._write = write
        self._max_batch = max_batch
        self._waiting: list[tuple[Item, asyncio.Future[Result]]] = []
        self._writers = 0

    async def submit(self, item: Item) -> Result:
        """The item's result once the batch holding it has committed; the batch's error if it failed."""
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if self._writers < WRITERS:
            self._writers += 1
            asyncio.get_running_loop().create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self._waiting:
                batch, self._waiting = self._waiting[: self._max_batch], self._waiting[self._max_batch :]
                try:
                    async with self._sessionmaker() as session, session.begin():
                        results = await self._write(session, [item for item, _ in batch])
                except Exception as exc:  # every request of the batch learns it failed
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, future), result in zip(batch, results, strict=True):
                    if not future.done():  # a request whose client went away is cancelled
                        future.set_result(result)
        finally:
            self._writers -= 1
