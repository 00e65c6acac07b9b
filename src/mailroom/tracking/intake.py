"""Group commit: many concurrent requests' events written in one statement, each request answered after it.

A webhook or a tracking hit is one small row; one transaction each would spend the server on round
trips and commits. Requests hand their item to an Intake and wait: while one batch is being written the
next ones gather, so under load a batch holds hundreds of items, and when idle a lone item is written at
once. A batch is one statement on a connection in autocommit, so one round trip that commits as it
ends; a request is answered only once that has happened, so an acknowledged event is stored.

A batch's statement fails whole, so when it fails none of it is stored: its items are then written one
by one, and only an item the database refuses on its own fails. One bad item must not fail hundreds of
requests around it. When the database itself is failing, the batch (or its rest) fails at once instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

Item = TypeVar("Item")
Result = TypeVar("Result")

# Batches written at once: one keeps the database busy while the next gathers; more would only queue.
WRITERS = 2
# SQLSTATE classes of a database that cannot write anything now, whichever the item: connection trouble,
# insufficient resources (disk full, too many connections), operator intervention (shutdown, a cancelled
# or timed-out statement), system errors. Writing the rest one by one would only fail, each in turn.
_UNAVAILABLE = ("08", "53", "57", "58")


def _sqlstate(exc: BaseException) -> str | None:
    state = getattr(exc.orig, "sqlstate", None) if isinstance(exc, DBAPIError) else None
    return state if isinstance(state, str) else None


def refused_data(exc: BaseException) -> bool:
    """Whether the database (or its driver) refused the data written rather than failed to write it: a data
    exception or an integrity violation (SQLSTATE classes 22 and 23)."""
    return isinstance(exc, DataError | IntegrityError)


def _unavailable(exc: BaseException, connection: AsyncConnection) -> bool:
    if connection.invalidated or connection.closed:
        return True
    if not isinstance(exc, DBAPIError):
        return False
    state = _sqlstate(exc)
    if state is None:  # raised by the driver itself: only its connection errors mean the server is out of reach
        return exc.connection_invalidated or isinstance(exc, OperationalError | InterfaceError)
    return state[:2] in _UNAVAILABLE


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
                        await self._store(connection, batch)
                        batch = []
            except Exception as exc:
                # Every request of the batch not yet answered learns it failed; when no connection could be
                # had, the next batch does, so a database that is down answers requests instead of queueing them.
                for _, future in batch or self._take():
                    _fail(future, exc)

    async def _store(self, connection: AsyncConnection, batch: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        """Answer every request of the batch; raise when the database is unavailable."""
        try:
            results = await self._write(connection, [item for item, _ in batch])
        except Exception as exc:
            if _unavailable(exc, connection):
                raise
            if len(batch) == 1:
                _fail(batch[0][1], exc)
                return
            # Rare, so one statement per item is affordable: only the items at fault fail.
            for item, future in batch:
                try:
                    (result,) = await self._write(connection, [item])
                except Exception as alone:
                    if _unavailable(alone, connection):
                        raise
                    _fail(future, alone)
                else:
                    _resolve(future, result)
            return
        for (_, future), result in zip(batch, results, strict=True):
            _resolve(future, result)

    def _take(self) -> list[tuple[Item, asyncio.Future[Result]]]:
        batch, self._waiting = self._waiting[: self._max_batch], self._waiting[self._max_batch :]
        return batch


# A request whose client went away is cancelled: its item is written all the same, its answer dropped.
def _resolve(future: asyncio.Future[Result], result: Result) -> None:
    if not future.done():
        future.set_result(result)


def _fail(future: asyncio.Future[Result], exc: Exception) -> None:
    if not future.done():
        future.set_exception(exc)
