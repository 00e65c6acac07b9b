"""events: what happened after sending (webhooks, opens, clicks), notifications, a webhook replay guard

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

EVENT_TYPES = (
    "'accepted', 'rejected', 'delivered', 'failed', 'opened', 'clicked', 'unsubscribed', 'complained', 'stored'"
)


def upgrade() -> None:
    # Appended first, counted after. Partitioned by month so old events leave by dropping a partition; the
    # default partition catches what arrives before its month's partition exists.
    op.execute("CREATE SEQUENCE email_events_id_seq")
    op.create_table(
        "email_events",
        sa.Column("id", sa.BigInteger(), server_default=sa.text("nextval('email_events_id_seq'::regclass)"),
                  nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("severity", sa.Text(), nullable=True),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("brand", sa.UUID(), nullable=True),
        sa.Column("campaign", sa.UUID(), nullable=True),
        sa.Column("email", sa.UUID(), nullable=True),
        sa.Column("campaign_email", sa.UUID(), nullable=True),
        sa.Column("recipient", sa.Text(), nullable=True),
        sa.Column("url", sa.Text(), nullable=True),
        sa.Column("link_index", sa.Integer(), nullable=True),
        sa.Column("user_agent", sa.Text(), nullable=True),
        sa.Column("ip", sa.Text(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("provider_event_id", sa.Text(), nullable=True),
        sa.Column("uncounted", sa.Text(), nullable=True),
        sa.Column("settled_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(f"type in ({EVENT_TYPES})", name=op.f("ck_email_events_type")),
        sa.CheckConstraint("severity in ('temporary', 'permanent')", name=op.f("ck_email_events_severity")),
        sa.PrimaryKeyConstraint("id", "created_at", name=op.f("pk_email_events")),
        postgresql_partition_by="RANGE (created_at)",
    )  # fmt: skip
    op.execute("ALTER SEQUENCE email_events_id_seq OWNED BY email_events.id")
    op.execute("CREATE TABLE email_events_default PARTITION OF email_events DEFAULT")
    op.execute(
        """
        DO $$
        DECLARE first date := date_trunc('month', now())::date;
        BEGIN
            FOR i IN 0..2 LOOP
                EXECUTE format('CREATE TABLE IF NOT EXISTS %I PARTITION OF email_events FOR VALUES FROM (%L) TO (%L)',
                               'email_events_' || to_char(first + make_interval(months => i), 'YYYY_MM'),
                               first + make_interval(months => i), first + make_interval(months => i + 1));
            END LOOP;
        END $$
        """
    )
    op.create_index("ix_email_events_unsettled", "email_events", ["id"], postgresql_where=sa.text("settled_at IS NULL"))
    op.create_index("ix_email_events_campaign_type", "email_events", ["campaign", "type"])
    op.create_index("ix_email_events_email", "email_events", ["email"])
    op.create_index(
        "ix_email_events_provider_event_id",
        "email_events",
        ["provider_event_id"],
        postgresql_where=sa.text("provider_event_id IS NOT NULL"),
    )

    # Temporary failures suppress an address at the third within a week in a brand: counted per address.
    op.create_index(
        "ix_email_events_temporary_failures",
        "email_events",
        ["brand", "recipient"],
        postgresql_where=sa.text("type = 'failed' AND severity = 'temporary'"),
    )

    op.create_table(
        "webhook_tokens",
        sa.Column("token", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("token", name=op.f("pk_webhook_tokens")),
    )
    # Purged by age every minute: without an index each purge would read every token of the last half hour.
    op.create_index("ix_webhook_tokens_created_at", "webhook_tokens", ["created_at"])
    op.create_table(
        "notifications",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("user", sa.UUID(), nullable=False),
        sa.Column("brand", sa.UUID(), nullable=True),
        sa.Column("campaign", sa.UUID(), nullable=True),
        sa.Column("campaign_email", sa.UUID(), nullable=True),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("recipient", sa.Text(), nullable=True),
        sa.Column("url", sa.Text(), nullable=True),
        sa.Column("count", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("type in ('opened', 'clicked')", name=op.f("ck_notifications_type")),
        sa.ForeignKeyConstraint(["user"], ["users.id"], name=op.f("fk_notifications_user_users"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["brand"], ["brands.id"], name=op.f("fk_notifications_brand_brands"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["campaign"], ["email_campaigns.id"],
                                name=op.f("fk_notifications_campaign_email_campaigns"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["campaign_email"], ["email_campaign_emails.id"],
                                name=op.f("fk_notifications_campaign_email_email_campaign_emails"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notifications")),
    )  # fmt: skip
    op.create_index("ix_notifications_user_created_at", "notifications", ["user", sa.text("created_at DESC")])
    op.create_index(
        "ix_notifications_opened",
        "notifications",
        ["campaign", "recipient"],
        postgresql_where=sa.text("type = 'opened'"),
    )

    op.add_column("email_campaign_emails", sa.Column("uncounted", sa.Text(), nullable=True))
    op.add_column("emails", sa.Column("links", postgresql.ARRAY(sa.Text()), nullable=True))
    op.add_column(
        "email_campaigns", sa.Column("tracking", sa.Boolean(), server_default=sa.text("true"), nullable=False)
    )
    op.add_column("suppressions", sa.Column("detail", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("suppressions", "detail")
    op.drop_column("email_campaigns", "tracking")
    op.drop_column("emails", "links")
    op.drop_column("email_campaign_emails", "uncounted")
    op.drop_table("notifications")
    op.drop_table("webhook_tokens")
    op.drop_table("email_events")
