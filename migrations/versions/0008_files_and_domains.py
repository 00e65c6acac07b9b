"""uploaded files belong to a brand; sending domains with their DNS records and DKIM key

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Files uploaded before brands owned them stay readable by their uploader only.
    op.add_column("files", sa.Column("brand", sa.UUID(), nullable=True))
    op.create_foreign_key(op.f("fk_files_brand_brands"), "files", "brands", ["brand"], ["id"])
    op.create_index("ix_files_brand", "files", ["brand"])

    op.create_table(
        "sending_domains",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        # The address domain it sends for (rechat.com) and, on Mailgun, the domain set up there.
        sa.Column("domain", sa.Text(), nullable=False),
        sa.Column("mailgun_domain", sa.Text(), nullable=True),
        # "mailgun" or "smtp": whose records the domain needs.
        sa.Column("provider", sa.Text(), nullable=False),
        sa.Column("risks", sa.Text(), nullable=True),
        sa.Column("dkim_selector", sa.Text(), nullable=True),
        # The DKIM private key (PEM), encrypted like provider tokens; the public half is published in DNS.
        sa.Column("dkim_private_key", sa.LargeBinary(), nullable=True),
        sa.Column("dkim_public_key", sa.Text(), nullable=True),
        # The records as last checked: [{name, record_type, desired_value, is_active, reason}].
        sa.Column("records", postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'[]'::jsonb"),
                  nullable=False),
        sa.Column("created_by", sa.UUID(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("enabled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("disabled_reason", sa.Text(), nullable=True),
        sa.CheckConstraint("provider in ('mailgun', 'smtp')", name=op.f("ck_sending_domains_provider")),
        sa.CheckConstraint("domain = lower(domain)", name=op.f("ck_sending_domains_lower")),
        sa.ForeignKeyConstraint(["created_by"], ["users.id"], name=op.f("fk_sending_domains_created_by_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sending_domains")),
        sa.UniqueConstraint("domain", name=op.f("uq_sending_domains_domain")),
    )  # fmt: skip


def downgrade() -> None:
    op.drop_table("sending_domains")
    op.drop_index("ix_files_brand", table_name="files")
    op.drop_constraint(op.f("fk_files_brand_brands"), "files", type_="foreignkey")
    op.drop_column("files", "brand")
