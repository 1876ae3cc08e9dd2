"""Sign-in statistics: counters per registration, outcome and hour.

One row per (registration, outcome, hour), incremented by an upsert; no
username, iMIS ID or address is stored. Rows older than 31 days are purged.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-09
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "sign_in_counts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("registration", sa.String(length=63), nullable=False),
        sa.Column("outcome", sa.String(length=32), nullable=False),
        sa.Column("bucket", sa.BigInteger(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("registration", "outcome", "bucket", name="uq_sign_in_counts_key"),
    )
    op.create_index("ix_sign_in_counts_bucket", "sign_in_counts", ["bucket"])


def downgrade() -> None:
    op.drop_table("sign_in_counts")
