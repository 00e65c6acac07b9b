"""job queue schema: procrastinate's schema and its versioned migrations, in this chain

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from alembic import op

from mailroom.queue_schema import APPLIED_TABLE, upgrade_job_queue

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A fresh database gets procrastinate's schema here; one whose schema an older release applied
    # outside this chain keeps its jobs and gets the migrations its release lacks.
    upgrade_job_queue(op.get_bind().connection.driver_connection)


def downgrade() -> None:
    # The job tables stay (they held live jobs before this revision too); without the record of
    # applied migrations the next upgrade reads the release from the schema itself.
    op.drop_table(APPLIED_TABLE)
