"""Alembic environment: the URL comes from the caller (mailroom migrate) or MAILROOM_DATABASE_URL."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from mailroom.config import Settings
from mailroom.db import resolve_database_url, sqlalchemy_url
from mailroom.models import metadata
from mailroom.queue_schema import include_object

config = context.config
url = config.attributes.get("database_url") or resolve_database_url(Settings())

engine = create_engine(sqlalchemy_url(url), poolclass=pool.NullPool)
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=metadata, compare_type=True, include_object=include_object)
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
