"""a campaign's refused sends, found without reading every recipient row

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The stats' refused sends (recipient rows with an error and no failed event) are few or none: through
    # (campaign, seq) finding them read every recipient row of the campaign (100,000 for a large one).
    op.create_index(
        "ix_email_campaign_emails_refused",
        "email_campaign_emails",
        ["campaign"],
        postgresql_where=sa.text("error IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_email_campaign_emails_refused", table_name="email_campaign_emails")
