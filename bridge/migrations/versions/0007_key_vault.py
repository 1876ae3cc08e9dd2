"""The key vault: signing keys and the keyring in the database (``key_store = "database"``).

``key_vault`` holds the blobs of the key store, each sealed (AES-256-GCM) with the
key-encryption key, which the database never sees. ``key_vault_state`` is one row
(id 1) whose generation every change increments, under its row lock.
``key_vault_peers`` records which kids each serving process publishes, so that a
rotation promotes a key only once every process publishes it.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "key_vault",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("sealed", sa.LargeBinary(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    state = op.create_table(
        "key_vault_state",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("generation", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.bulk_insert(state, [{"id": 1, "generation": 0}])
    op.create_table(
        "key_vault_peers",
        sa.Column("instance", sa.String(length=200), nullable=False),
        sa.Column("kids", sa.Text(), nullable=False),
        sa.Column("seen_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("instance"),
    )


def downgrade() -> None:
    op.drop_table("key_vault_peers")
    op.drop_table("key_vault_state")
    op.drop_table("key_vault")
