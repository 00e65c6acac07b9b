"""Group commit: many concurrent requests' events written in one statement, each request answered after it.

A webhook or a tracking hit is one small row; one transaction each would spend the server on round
trips and commits. Requests hand their item to an Intake and wait: while one batch is being written the
next ones gather, so under load a batch holds hundreds of items, and when idle a lone item is written at
once. A batch is one statement on a connection in autocommit, so one round trip that commits as it
ends; a request is answered only once that has happened, so an acknowledged event is stored.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

Item = TypeVar("Item")
Result = TypeVar("Result")

# Batches written at once: one keeps the database busy while the next gathers; more would only queue.
WRITERS = 2


class Intake(Generic[Item, Result]):
    """Writes submitted items in batches with ``write(connection, items) -> one result per item``, where
    ``write`` runs one statement (the connection is in autocommit)."""

    def __init__(
        self,
        engine: AsyncEngine,
        write: Callable[[AsyncConnection, Sequence[Item]], Awaitable[Sequence[Result]]],
        *,
        max_batch: int = 1000,
    ) -> None:
        self._engine = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._write = write
        self._max_batch = max_batch
        self._waiting: list[tuple[Item, asyncio.Future[Result]]] = []
        self._writers: set[asyncio.Task[None]] = set()  # held, so a running writer is never collected

    async def submit(self, item: Item) -> Result:
        """The item's result once the batch holding it is stored; the batch's error if it failed."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Result] = loop.create_future()
        self._waiting.append((item, future))
        if len(self._writers) < WRITERS:
            writer = loop.create_task(self._drain())
            self._writers.add(writer)
            writer.add_done_callback(self._writers.discard)
        return await future

    async def _drain(self) -> None:
        while self._waiting:
            batch: list[tuple[Item, asyncio.Future[Result]]] = []
            try:
                # One connection for as long as batches keep coming: no checkout (and ping) per batch.
                async with self._engine.connect() as connection:
                    while self._waiting:
                        batch = self._take()
                        results = await self._write(connection, [item for item, _ in batch])
                        for (_, future), result in zip(batch, results, strict=True):
                            if not future.done():  # a request whose client went away is cancelled
                                future.set_result(result)
                        batch = []
            except Exception as exc:
                # Every request of the failed batch learns it failed; when no connection could be had,
                # the next batch does, so a database that is down answers requests instead of queueing them.
                for _, future in batch or self._take():
                    if not future.done():
                        future.set_exception(exc)

    def _take(self) -> list[tuple[Item, asyncio.Future[Result]]]:
        batch, self._waiting = self._waiting[: self._max_batch], self._waiting[self._max_batch :]
        return batch
