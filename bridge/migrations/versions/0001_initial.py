"""Initial tables: exactly those of bridge.storage.models at version 0.1.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def _epoch(name: str, *, nullable: bool = False) -> sa.Column[int]:
    return sa.Column(name, sa.BigInteger(), nullable=nullable)


def _str(name: str, length: int, *, nullable: bool = False) -> sa.Column[str]:
    return sa.Column(name, sa.String(length=length), nullable=nullable)


def _text(name: str, *, nullable: bool = False) -> sa.Column[str]:
    return sa.Column(name, sa.Text(), nullable=nullable)


def _indexes(table: str, *columns: str) -> None:
    for column in columns:
        op.create_index(f"ix_{table}_{column}", table, [column])


def upgrade() -> None:
    op.create_table(
        "registrations",
        _str("slug", 63),
        _str("name", 200),
        _str("profile", 32),
        _str("client_id", 200, nullable=True),
        _text("options_json"),
        _str("secret_hash", 200, nullable=True),
        _text("secret_encrypted", nullable=True),
        _epoch("created_at"),
        _epoch("updated_at"),
        _str("updated_by", 200, nullable=True),
        sa.PrimaryKeyConstraint("slug"),
        sa.UniqueConstraint("client_id", name="uq_registrations_client_id"),
    )

    op.create_table(
        "browser_sessions",
        _str("id_hash", 64),
        _str("imis_id", 64),
        _str("username", 200),
        _text("identity_json"),
        _epoch("auth_time"),
        _epoch("created_at"),
        _epoch("last_seen_at"),
        _epoch("expires_at"),
        sa.PrimaryKeyConstraint("id_hash"),
    )
    _indexes("browser_sessions", "imis_id", "expires_at")

    op.create_table(
        "pending_requests",
        _str("id_hash", 64),
        _str("kind", 16),
        _str("registration", 63),
        _text("params_json"),
        _epoch("created_at"),
        _epoch("expires_at"),
        sa.PrimaryKeyConstraint("id_hash"),
    )
    _indexes("pending_requests", "expires_at")

    op.create_table(
        "authorization_codes",
        _str("code_hash", 64),
        _str("grant_id", 64),
        _str("client_id", 200),
        _text("redirect_uri"),
        _text("scope"),
        _text("nonce", nullable=True),
        _str("code_challenge", 128),
        _str("code_challenge_method", 16),
        _str("session_hash", 64, nullable=True),
        _str("imis_id", 64),
        _text("identity_json"),
        _epoch("auth_time"),
        _epoch("created_at"),
        _epoch("expires_at"),
        _epoch("redeemed_at", nullable=True),
        sa.PrimaryKeyConstraint("code_hash"),
    )
    _indexes("authorization_codes", "grant_id", "expires_at")

    op.create_table(
        "grants",
        _str("id", 64),
        _str("client_id", 200),
        _str("imis_id", 64),
        _text("scope"),
        _str("session_hash", 64, nullable=True),
        _text("identity_json"),
        _epoch("auth_time"),
        _epoch("created_at"),
        _epoch("expires_at"),
        _epoch("revoked_at", nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    _indexes("grants", "client_id", "imis_id", "session_hash", "expires_at")

    op.create_table(
        "tokens",
        _str("token_hash", 64),
        _str("kind", 8),
        _str("grant_id", 64),
        _str("client_id", 200),
        _text("scope"),
        _epoch("issued_at"),
        _epoch("expires_at"),
        _epoch("rotated_at", nullable=True),
        _epoch("revoked_at", nullable=True),
        sa.PrimaryKeyConstraint("token_hash"),
    )
    op.create_index("ix_tokens_grant_kind", "tokens", ["grant_id", "kind"])
    _indexes("tokens", "expires_at")

    op.create_table(
        "login_throttle",
        _str("key_hash", 64),
        sa.Column("failures", sa.Integer(), nullable=False),
        _epoch("last_failure_at"),
        sa.PrimaryKeyConstraint("key_hash"),
    )
    _indexes("login_throttle", "last_failure_at")

    op.create_table(
        "audit_events",
        sa.Column("id", sa.Integer(), nullable=False),
        _epoch("at"),
        _str("actor", 200),
        _str("action", 64),
        _str("target", 200),
        _text("detail_json"),
        _str("ip", 64, nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    _indexes("audit_events", "at", "action")


def downgrade() -> None:
    # Dropping a table drops its indexes on both SQLite and PostgreSQL.
    for table in (
        "audit_events",
        "login_throttle",
        "tokens",
        "grants",
        "authorization_codes",
        "pending_requests",
        "browser_sessions",
        "registrations",
    ):
        op.drop_table(table)
