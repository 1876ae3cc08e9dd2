"""Tokens minted by a refresh remember the refresh token they were exchanged for.

So rotation never forks (SECURITY B4): when one refresh token is exchanged
again (a retry within the grace window, or parallel requests), the successors
issued before are revoked. Rows from before have no parent.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.add_column("tokens", sa.Column("parent_hash", sa.String(64), nullable=True))
    op.create_index("ix_tokens_parent_hash", "tokens", ["parent_hash"])


def downgrade() -> None:
    op.drop_index("ix_tokens_parent_hash", table_name="tokens")
    with op.batch_alter_table("tokens") as batch:
        batch.drop_column("parent_hash")
