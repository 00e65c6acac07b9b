"""sender: wake-ups for due campaigns and a shared send rate

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# Workers LISTEN on this channel: a campaign that becomes due sooner than they planned wakes them.
NOTIFY_FUNCTION = """
CREATE OR REPLACE FUNCTION mailroom_notify_campaign_due() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.due_at IS NOT NULL AND NEW.executed_at IS NULL AND NEW.deleted_at IS NULL THEN
        PERFORM pg_notify('mailroom_campaign_due', extract(epoch FROM NEW.due_at)::text);
    END IF;
    RETURN NULL;
END $$
"""


def upgrade() -> None:
    op.execute(NOTIFY_FUNCTION)
    op.execute(
        "CREATE TRIGGER email_campaigns_due AFTER INSERT OR UPDATE OF due_at, deleted_at ON email_campaigns "
        "FOR EACH ROW EXECUTE FUNCTION mailroom_notify_campaign_due()"
    )
    op.create_table(
        "send_rate",
        sa.Column("transport", sa.Text(), primary_key=True),
        sa.Column("next_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("send_rate")
    op.execute("DROP TRIGGER IF EXISTS email_campaigns_due ON email_campaigns")
    op.execute("DROP FUNCTION IF EXISTS mailroom_notify_campaign_due()")
