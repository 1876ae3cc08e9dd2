"""Pending sign-in requests remember (the hash of) the address that started them.

So the number of live pending requests one client address holds can be
bounded (SECURITY D8). Rows from before have no address and count for none.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.add_column("pending_requests", sa.Column("client_hash", sa.String(64), nullable=True))
    op.create_index("ix_pending_requests_client_hash", "pending_requests", ["client_hash"])


def downgrade() -> None:
    op.drop_index("ix_pending_requests_client_hash", table_name="pending_requests")
    with op.batch_alter_table("pending_requests") as batch:
        batch.drop_column("client_hash")
