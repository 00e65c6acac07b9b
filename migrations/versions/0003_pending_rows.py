"""pending recipient rows: an index of what is still to send

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Send jobs read a campaign's unsent rows, and "is anything left?" settles its counters; both only
    # ever look at rows that hold neither an email nor an error, a set that shrinks to nothing.
    op.execute(
        "CREATE INDEX ix_email_campaign_emails_pending ON email_campaign_emails (campaign, seq) "
        "WHERE email IS NULL AND error IS NULL"
    )


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS ix_email_campaign_emails_pending")
