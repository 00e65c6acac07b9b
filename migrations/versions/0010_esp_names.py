"""the message id any ESP answered and the domain set up at the ESP are named for the ESP, not for Mailgun

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Every ESP's id is stored there (SMTP's Message-ID, the outbox's file), not only Mailgun's. A rename
    # keeps the rows, the partial index (its predicate follows the column) and the n_distinct of 0009.
    op.alter_column("emails", "mailgun_id", new_column_name="esp_message_id")
    op.execute("ALTER INDEX ix_emails_mailgun_id RENAME TO ix_emails_esp_message_id")
    # The domain set up at the ESP for a user's own domain, whichever ESP signs for domains it knows.
    op.alter_column("sending_domains", "mailgun_domain", new_column_name="esp_domain")


def downgrade() -> None:
    op.alter_column("sending_domains", "esp_domain", new_column_name="mailgun_domain")
    op.execute("ALTER INDEX ix_emails_esp_message_id RENAME TO ix_emails_mailgun_id")
    op.alter_column("emails", "esp_message_id", new_column_name="mailgun_id")
