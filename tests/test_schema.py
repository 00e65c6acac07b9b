"""The migrated schema: the job queue's place in our chain, the defer function we call, the models' match."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from procrastinate.schema import SchemaManager
from psycopg import sql
from sqlalchemy import create_engine, pool

from mailroom.crm.notices import DEFER_NOTICE, NOTICE_TASK
from mailroom.db import libpq_url, make_engine, make_sessionmaker, sqlalchemy_url
from mailroom.migrate import alembic_config, migrate
from mailroom.models import metadata
from mailroom.queue import DEFER_FUNCTION, JOB_ATTRIBUTES, JOB_TYPE, defer_jobs
from mailroom.queue_schema import (
    APPLIED_TABLE,
    RELEASE_MARKERS,
    REPEATABLE_RELEASES,
    include_object,
    migration_version,
    shipped_migrations,
)
from tests.support.databases import with_database

# Everything in the public schema that code or data depends on, in a form two databases can be compared by.
SCHEMA_SHAPE = {
    "columns": """
        SELECT table_name, column_name, data_type, is_nullable, coalesce(column_default, '')
        FROM information_schema.columns WHERE table_schema = 'public'
        ORDER BY 1, 2
    """,
    "functions": """
        SELECT proname, pg_get_function_identity_arguments(p.oid), pg_get_function_result(p.oid), md5(prosrc)
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE nspname = 'public'
        ORDER BY 1, 2
    """,
    "types": """
        SELECT t.typname, coalesce(string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder), '')
        FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
        LEFT JOIN pg_class c ON c.oid = t.typrelid LEFT JOIN pg_enum e ON e.enumtypid = t.oid
        WHERE nspname = 'public' AND (t.typtype = 'e' OR c.relkind = 'c')
        GROUP BY t.typname ORDER BY 1
    """,
    "constraints": """
        SELECT c.conrelid::regclass::text, c.conname, pg_get_constraintdef(c.oid)
        FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace WHERE nspname = 'public'
        ORDER BY 1, 2
    """,
    "indexes": "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1, 2",
    "triggers": """
        SELECT c.relname, t.tgname, pg_get_triggerdef(t.oid)
        FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid WHERE NOT t.tgisinternal ORDER BY 1, 2
    """,
}


def schema_shape(url: str) -> dict[str, list[tuple[Any, ...]]]:
    with psycopg.connect(libpq_url(url)) as conn:
        return {name: conn.execute(query).fetchall() for name, query in SCHEMA_SHAPE.items()}


@pytest.fixture
def scratch_url(database_url: str) -> Iterator[str]:
    """A second, empty database on the test server, dropped afterwards."""
    name = f"mailroom_scratch_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield with_database(libpq_url(database_url), name)
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


FIXTURES = Path(__file__).parent / "fixtures"


def installed_schema() -> str:
    return SchemaManager.get_schema()


def released_schema(version: str) -> Callable[[], str]:
    return lambda: (FIXTURES / f"procrastinate-{version}-schema.sql").read_text(encoding="utf-8")


# What an earlier mailroom may have applied: procrastinate's schema from whichever 3.x was installed.
EARLIER_SCHEMAS = {
    "installed": installed_schema,
    "procrastinate-3.0.2": released_schema("3.0.2"),
    "procrastinate-3.3.0": released_schema("3.3.0"),
}


def make_previous_release_database(url: str, job_queue_schema: str) -> uuid.UUID:
    """What the release before the job queue joined our chain left: Alembic at 0003, procrastinate's schema
    applied outside it (as `git show 8bc9405:src/mailroom/migrate.py` did), a campaign and a queued job.
    Returns the campaign's id."""
    command.upgrade(alembic_config(url), "0003")
    with psycopg.connect(libpq_url(url)) as conn:
        conn.execute(job_queue_schema)
        brand = conn.execute("INSERT INTO brands (name) VALUES ('Harbour Realty') RETURNING id").fetchone()
        user = conn.execute("INSERT INTO users (email) VALUES ('ann@harbour.example') RETURNING id").fetchone()
        assert brand and user
        campaign = conn.execute(
            'INSERT INTO email_campaigns (created_by, brand, "from", subject) '
            "VALUES (%s, %s, %s, 'Open house on Sunday') RETURNING id",
            (user[0], brand[0], user[0]),
        ).fetchone()
        assert campaign
        conn.execute(
            "INSERT INTO procrastinate_jobs (queue_name, task_name, args) "
            "VALUES ('mailroom', 'mailroom.send_batch', '{\"first\": 1}')"
        )
    return uuid.UUID(str(campaign[0]))


def alembic_head(url: str) -> str | None:
    return ScriptDirectory.from_config(alembic_config(url)).get_current_head()


@pytest.mark.parametrize("earlier", EARLIER_SCHEMAS)
async def test_previous_release_database_migrates_to_head_keeping_its_rows(
    scratch_url: str, database_url: str, earlier: str
) -> None:
    campaign = make_previous_release_database(scratch_url, EARLIER_SCHEMAS[earlier]())

    migrate(scratch_url)
    migrate(scratch_url)  # a second start finds nothing to do

    with psycopg.connect(libpq_url(scratch_url)) as conn:
        version = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        assert version is not None and version[0] == alembic_head(scratch_url)
        subject = conn.execute("SELECT subject FROM email_campaigns WHERE id = %s", (campaign,)).fetchone()
        assert subject == ("Open house on Sunday",)
        queued = conn.execute("SELECT task_name, args, status FROM procrastinate_jobs").fetchall()
        assert queued == [("mailroom.send_batch", {"first": 1}, "todo")]
        recorded = [row[0] for row in conn.execute(f"SELECT name FROM {APPLIED_TABLE} ORDER BY name")]
        assert recorded == shipped_migrations()

    engine = make_engine(scratch_url, pool_size=1)
    try:
        async with make_sessionmaker(engine)() as session:
            await defer_jobs(session, DEFER_NOTICE, NOTICE_TASK, args=json.dumps({"kind": "k", "user": "u"}))
            await session.commit()
    finally:
        await engine.dispose()
    with psycopg.connect(libpq_url(scratch_url)) as conn:
        notice = conn.execute(
            "SELECT queue_name, args, status FROM procrastinate_jobs WHERE task_name = %s", (NOTICE_TASK,)
        ).fetchall()
    assert notice == [("mailroom", {"kind": "k", "user": "u"}, "todo")]

    # The upgraded database and one made fresh by this release are the same schema.
    assert schema_shape(scratch_url) == schema_shape(database_url)


def test_fresh_database_records_every_job_queue_migration(database_url: str) -> None:
    with psycopg.connect(libpq_url(database_url)) as conn:
        recorded = [row[0] for row in conn.execute(f"SELECT name FROM {APPLIED_TABLE} ORDER BY name")]
    assert recorded == shipped_migrations()
    assert recorded, "procrastinate ships its migrations as package data"


def test_every_shipped_release_can_be_recognised_in_an_untracked_database() -> None:
    # A new procrastinate line brings migrations: an earlier mailroom may have applied its schema.sql,
    # so the release must be told apart by a marker (or be safe to run again), and a new revision must
    # call upgrade_job_queue so tracked databases get its migrations.
    known = {version for version, _ in RELEASE_MARKERS} | REPEATABLE_RELEASES
    shipped = {migration_version(name) for name in shipped_migrations()}
    assert {version for version in shipped if version >= (3, 0, 0)} <= known


def test_defer_function_and_job_type_are_what_we_call(database_url: str) -> None:
    with psycopg.connect(libpq_url(database_url)) as conn:
        functions = conn.execute(
            "SELECT pg_get_function_identity_arguments(oid), pg_get_function_result(oid) FROM pg_proc "
            "WHERE proname = %s",
            (DEFER_FUNCTION,),
        ).fetchall()
        attributes = conn.execute(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_type t "
            "JOIN pg_attribute a ON a.attrelid = t.typrelid "
            "WHERE t.typname = %s AND t.typtype = 'c' AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
            (JOB_TYPE,),
        ).fetchall()
    assert functions == [(f"jobs {JOB_TYPE}[]", "bigint[]")]
    assert attributes == [(name, type_) for name, type_, _ in JOB_ATTRIBUTES]


def test_models_match_the_migrated_schema(database_url: str) -> None:
    engine = create_engine(sqlalchemy_url(database_url), poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn, opts={"compare_type": True, "include_object": include_object, "target_metadata": metadata}
            )
            differences = compare_metadata(context, metadata)
    finally:
        engine.dispose()
    assert differences == []


def test_job_queue_revision_downgrades_and_upgrades_again(scratch_url: str) -> None:
    migrate(scratch_url)
    command.downgrade(alembic_config(scratch_url), "0004")
    with psycopg.connect(libpq_url(scratch_url)) as conn:
        assert conn.execute(f"SELECT to_regclass('{APPLIED_TABLE}')").fetchone() == (None,)
        # Jobs queued before the downgrade are still there to run.
        assert conn.execute("SELECT to_regclass('procrastinate_jobs') IS NOT NULL").fetchone() == (True,)

    migrate(scratch_url)

    with psycopg.connect(libpq_url(scratch_url)) as conn:
        recorded = [row[0] for row in conn.execute(f"SELECT name FROM {APPLIED_TABLE} ORDER BY name")]
    assert recorded == shipped_migrations()


def test_events_waiting_to_be_counted_stay_waiting_across_the_queue_revision(scratch_url: str) -> None:
    command.upgrade(alembic_config(scratch_url), "0008")
    with psycopg.connect(libpq_url(scratch_url), autocommit=True) as conn:
        conn.execute(
            "INSERT INTO email_events (id, type, source, settled_at) "
            "VALUES (1, 'delivered', 'mailgun', now()), (2, 'opened', 'pixel', NULL)"
        )
    command.upgrade(alembic_config(scratch_url), "0009")
    with psycopg.connect(libpq_url(scratch_url)) as conn:
        assert conn.execute("SELECT id FROM unsettled_events").fetchall() == [(2,)]

    command.downgrade(alembic_config(scratch_url), "0008")
    with psycopg.connect(libpq_url(scratch_url)) as conn:
        waiting = conn.execute("SELECT id FROM email_events WHERE settled_at IS NULL").fetchall()
        assert waiting == [(2,)]
