"""procrastinate's schema, applied and upgraded by our Alembic chain.

procrastinate ships its whole schema (`sql/schema.sql`, the state after all its migrations) and its
versioned migrations (`sql/migrations/<version>_<nn>_<name>.sql`). A fresh database gets the schema
and every shipped migration is recorded as applied; later, only migrations not yet recorded run, in
name order, each recorded in the same transaction as the revision that runs it.

Databases made before this lived in our chain had the schema of whichever procrastinate was installed
applied once, with nothing recorded: their version is read from the objects each release added.

Moving the pinned procrastinate to a new release line needs a new Alembic revision that calls
`upgrade_job_queue` again: revisions run once, and the new line's migrations must run with it.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import psycopg

APPLIED_TABLE = "mailroom_job_queue_migrations"

Version = tuple[int, int, int]

# Newest first: an object each release added that survives every later release.
RELEASE_MARKERS: tuple[tuple[Version, str], ...] = (
    (
        (3, 4, 0),
        "SELECT EXISTS (SELECT FROM pg_enum e JOIN pg_type t ON t.oid = e.enumtypid"
        " WHERE t.typname = 'procrastinate_job_event_type' AND e.enumlabel = 'retried')",
    ),
    ((3, 2, 0), "SELECT to_regtype('procrastinate_job_to_defer_v1') IS NOT NULL"),
    ((3, 1, 0), "SELECT to_regclass('procrastinate_workers') IS NOT NULL"),
    (
        (3, 0, 0),
        "SELECT EXISTS (SELECT FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND table_name = 'procrastinate_jobs'"
        " AND column_name = 'abort_requested')",
    ),
)


# Releases with no marker: their migrations can run again on a schema that has them (3.3's only
# migration drops and recreates one function), so a database at 3.3 may read as 3.2.
REPEATABLE_RELEASES: frozenset[Version] = frozenset({(3, 3, 0)})


def include_object(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
    """Alembic's filter: the job queue's tables are procrastinate's (and this module's), not the models'; the
    monthly partitions of email_events are made as months come, not by the models."""
    return not (
        type_ == "table"
        and name is not None
        and (name.startswith(("procrastinate_", "email_events_")) or name == APPLIED_TABLE)
    )


class UnknownJobQueueSchema(RuntimeError):
    """The job tables exist but predate every release this service has run on."""


def _sql_dir() -> Any:
    return resources.files("procrastinate.sql")


def shipped_migrations() -> list[str]:
    """The installed procrastinate's migration file names, in the order they apply."""
    folder = _sql_dir() / "migrations"
    return sorted(entry.name for entry in folder.iterdir() if entry.name.endswith(".sql"))


def migration_version(name: str) -> Version:
    major, minor, patch = name.split("_", 1)[0].split(".")
    return int(major), int(minor), int(patch)


def _scalar(conn: psycopg.Connection[Any], query: str) -> Any:
    row = conn.execute(query).fetchone()
    return row[0] if row else None


def detect_release(conn: psycopg.Connection[Any]) -> Version:
    """The procrastinate release whose schema an untracked database holds (its first migration's version)."""
    for version, probe in RELEASE_MARKERS:
        if _scalar(conn, probe):
            return version
    raise UnknownJobQueueSchema("procrastinate_jobs predates procrastinate 3.0; upgrade it with procrastinate 3.x")


def _run_script(conn: psycopg.Connection[Any], script: str) -> None:
    # No parameters: psycopg sends the file as one simple query, several statements and '%' included.
    conn.execute(script)


def _record(conn: psycopg.Connection[Any], names: list[str]) -> None:
    if names:
        with conn.cursor() as cur:
            cur.executemany(f"INSERT INTO {APPLIED_TABLE} (name) VALUES (%s)", [(n,) for n in names])


def upgrade_job_queue(conn: psycopg.Connection[Any]) -> list[str]:
    """Bring procrastinate's schema to the installed release; return the migration files it ran.

    Runs inside the caller's transaction (Alembic's), so a failure leaves nothing half applied.
    """
    _run_script(
        conn,
        f"CREATE TABLE IF NOT EXISTS {APPLIED_TABLE} ("
        " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
    )
    shipped = shipped_migrations()
    if not _scalar(conn, "SELECT to_regclass('procrastinate_jobs') IS NOT NULL"):
        _run_script(conn, (_sql_dir() / "schema.sql").read_text(encoding="utf-8"))
        _record(conn, shipped)
        return []
    recorded = {row[0] for row in conn.execute(f"SELECT name FROM {APPLIED_TABLE}")}
    if not recorded:
        # schema.sql holds both the pre and the post migrations of its release.
        release = detect_release(conn)
        recorded = {name for name in shipped if migration_version(name) <= release}
        _record(conn, sorted(recorded))
    pending = [name for name in shipped if name not in recorded]
    for name in pending:
        _run_script(conn, (_sql_dir() / "migrations" / name).read_text(encoding="utf-8"))
        _record(conn, [name])
    return pending
