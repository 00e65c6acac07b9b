"""connected mailboxes: OAuth connections under way, and a pause for throttled credentials

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "oauth_states",
        sa.Column("nonce", sa.Text(), nullable=False),
        sa.Column("user", sa.UUID(), nullable=False),
        sa.Column("brand", sa.UUID(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("scopes", postgresql.ARRAY(sa.Text()), nullable=False),
        # The PKCE verifier, encrypted like provider tokens.
        sa.Column("verifier", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("kind in ('google', 'microsoft')", name=op.f("ck_oauth_states_kind")),
        sa.ForeignKeyConstraint(
            ["brand"], ["brands.id"], name=op.f("fk_oauth_states_brand_brands"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(["user"], ["users.id"], name=op.f("fk_oauth_states_user_users"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("nonce", name=op.f("pk_oauth_states")),
    )
    # Starting a connection sweeps the expired ones by this.
    op.create_index("ix_oauth_states_expires_at", "oauth_states", ["expires_at"])
    # The sender pauses a credential its provider throttles until this time.
    for table in ("google_credentials", "microsoft_credentials"):
        op.add_column(table, sa.Column("paused_until", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    for table in ("microsoft_credentials", "google_credentials"):
        op.drop_column(table, "paused_until")
    op.drop_index("ix_oauth_states_expires_at", table_name="oauth_states")
    op.drop_table("oauth_states")
