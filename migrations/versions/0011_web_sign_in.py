"""the workspace's sign-in: one-use sign-in links and the browser sessions they start

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sign_in_links",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("user", sa.UUID(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["user"], ["users.id"], name=op.f("fk_sign_in_links_user_users"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sign_in_links")),
    )
    op.create_index("ix_sign_in_links_user", "sign_in_links", ["user"])
    op.create_table(
        "web_sessions",
        sa.Column("id_hash", sa.LargeBinary(), nullable=False),
        sa.Column("user", sa.UUID(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["user"], ["users.id"], name=op.f("fk_web_sessions_user_users"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id_hash", name=op.f("pk_web_sessions")),
    )
    # A user's sessions are listed and revoked together (sign out everywhere, a deleted user).
    op.create_index("ix_web_sessions_user", "web_sessions", ["user"])


def downgrade() -> None:
    op.drop_index("ix_web_sessions_user", table_name="web_sessions")
    op.drop_table("web_sessions")
    op.drop_index("ix_sign_in_links_user", table_name="sign_in_links")
    op.drop_table("sign_in_links")
