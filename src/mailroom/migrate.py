"""Apply the schema: Alembic migrations (the job queue's included, see queue_schema), to head, idempotently."""

from __future__ import annotations

from pathlib import Path

import psycopg
from alembic import command
from alembic.config import Config

from mailroom.db import libpq_url

ROOT = Path(__file__).resolve().parents[2]


def alembic_config(database_url: str) -> Config:
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "migrations"))
    config.attributes["database_url"] = database_url
    return config


MIGRATION_LOCK = 0x6D61696C  # any constant; shared by every mailroom process


def migrate(database_url: str) -> None:
    """Bring the schema up to date. Safe when several processes start at once (serve and workers)."""
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))
        try:
            command.upgrade(alembic_config(database_url), "head")
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK,))
