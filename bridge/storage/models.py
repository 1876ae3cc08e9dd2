"""Tables of the bridge's own state (SQLModel), identical on SQLite and PostgreSQL.

What must survive a request lives here, so any number of bridge processes can
share one database. Every secret-bearing value is stored as a hash (tokens,
codes, session ids, RP client secrets) or encrypted (Zendesk shared secrets);
nothing here can be replayed from a database dump. Times are integer Unix
seconds (UTC). This module declares tables only: queries live in
:mod:`bridge.storage.repo`, schema changes in :mod:`bridge.migrations`.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, LargeBinary, Text, UniqueConstraint, text
from sqlmodel import Field, SQLModel


def _epoch(*, index: bool = False, nullable: bool = False) -> int:
    return Field(sa_column=Column(BigInteger, nullable=nullable, index=index))  # type: ignore[no-any-return]


def _epoch_opt(*, index: bool = False) -> int | None:
    return Field(default=None, sa_column=Column(BigInteger, nullable=True, index=index))  # type: ignore[no-any-return]


class RegistrationRow(SQLModel, table=True):
    """An app registration created through the CLI or admin UI (file ones are not stored)."""

    __tablename__ = "registrations"
    # Named, so a later (batch, on SQLite) migration can address it.
    __table_args__ = (UniqueConstraint("client_id", name="uq_registrations_client_id"),)

    slug: str = Field(primary_key=True, max_length=63)
    name: str = Field(max_length=200)
    profile: str = Field(max_length=32)
    client_id: str | None = Field(default=None, max_length=200)
    #: Profile options as JSON, without any secret.
    options_json: str = Field(sa_column=Column(Text, nullable=False))
    #: OIDC client secret, hashed (see bridge.keys.hash_secret); None for public clients.
    secret_hash: str | None = Field(default=None, max_length=200)
    #: Zendesk shared secret, encrypted with the keyring.
    secret_encrypted: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    created_at: int = _epoch()
    updated_at: int = _epoch()
    updated_by: str | None = Field(default=None, max_length=200)


class RegistrationGenerationRow(SQLModel, table=True):
    """One row (id 1) counting the changes to stored registrations.

    Every insert, update or delete of a registration increments it in the same
    transaction, so a process that keeps registrations in memory learns, with one
    primary-key read, that it must read them again.
    """

    __tablename__ = "registration_generation"

    id: int = Field(primary_key=True)
    generation: int = Field(sa_column=Column(BigInteger, nullable=False))


class BrowserSessionRow(SQLModel, table=True):
    """A signed-in browser; the cookie holds the id, the table only its hash."""

    __tablename__ = "browser_sessions"

    id_hash: str = Field(primary_key=True, max_length=64)
    imis_id: str = Field(max_length=64, index=True)
    username: str = Field(max_length=200)
    identity_json: str = Field(sa_column=Column(Text, nullable=False))
    auth_time: int = _epoch()
    created_at: int = _epoch()
    last_seen_at: int = _epoch()
    expires_at: int = _epoch(index=True)


class PendingRequestRow(SQLModel, table=True):
    """An authorization request waiting for the person to sign in."""

    __tablename__ = "pending_requests"

    id_hash: str = Field(primary_key=True, max_length=64)
    kind: str = Field(max_length=16)  # "oidc" | "zendesk"
    registration: str = Field(max_length=63)
    params_json: str = Field(sa_column=Column(Text, nullable=False))
    created_at: int = _epoch()
    expires_at: int = _epoch(index=True)
    #: SHA-256 of the client address that started it: bounds how many one address holds.
    client_hash: str | None = Field(default=None, max_length=64, index=True)


class AuthorizationCodeRow(SQLModel, table=True):
    """A one-time authorization code; redeemed by one atomic conditional UPDATE."""

    __tablename__ = "authorization_codes"

    code_hash: str = Field(primary_key=True, max_length=64)
    grant_id: str = Field(max_length=64, index=True)
    client_id: str = Field(max_length=200)
    redirect_uri: str = Field(sa_column=Column(Text, nullable=False))
    scope: str = Field(sa_column=Column(Text, nullable=False))
    nonce: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    code_challenge: str = Field(max_length=128)
    code_challenge_method: str = Field(max_length=16)
    session_hash: str | None = Field(default=None, max_length=64)
    imis_id: str = Field(max_length=64)
    identity_json: str = Field(sa_column=Column(Text, nullable=False))
    auth_time: int = _epoch()
    created_at: int = _epoch()
    expires_at: int = _epoch(index=True)
    redeemed_at: int | None = _epoch_opt()


class GrantRow(SQLModel, table=True):
    """What one authorization gave one client: the family every token belongs to."""

    __tablename__ = "grants"

    id: str = Field(primary_key=True, max_length=64)
    client_id: str = Field(max_length=200, index=True)
    imis_id: str = Field(max_length=64, index=True)
    scope: str = Field(sa_column=Column(Text, nullable=False))
    session_hash: str | None = Field(default=None, max_length=64, index=True)
    identity_json: str = Field(sa_column=Column(Text, nullable=False))
    auth_time: int = _epoch()
    created_at: int = _epoch()
    expires_at: int = _epoch(index=True)
    revoked_at: int | None = _epoch_opt()


class TokenRow(SQLModel, table=True):
    """An access or refresh token, stored as its SHA-256 hash."""

    __tablename__ = "tokens"
    __table_args__ = (Index("ix_tokens_grant_kind", "grant_id", "kind"),)

    token_hash: str = Field(primary_key=True, max_length=64)
    kind: str = Field(max_length=8)  # "access" | "refresh"
    grant_id: str = Field(max_length=64)
    client_id: str = Field(max_length=200)
    scope: str = Field(sa_column=Column(Text, nullable=False))
    issued_at: int = _epoch()
    expires_at: int = _epoch(index=True)
    #: Refresh tokens: when it was exchanged for a new one (rotation).
    rotated_at: int | None = _epoch_opt()
    revoked_at: int | None = _epoch_opt()
    #: Tokens minted by a refresh: the hash of the refresh token exchanged for
    #: them, so a new exchange of that token revokes what the last one issued.
    parent_hash: str | None = Field(default=None, max_length=64, index=True)


class LoginThrottleRow(SQLModel, table=True):
    """Failed sign-ins per username or per client address (keys are hashed)."""

    __tablename__ = "login_throttle"

    key_hash: str = Field(primary_key=True, max_length=64)
    failures: int = Field(default=0)
    last_failure_at: int = _epoch(index=True)


class AuditEventRow(SQLModel, table=True):
    """Who did what, when. Never holds a secret."""

    __tablename__ = "audit_events"

    id: int | None = Field(default=None, primary_key=True)
    at: int = _epoch(index=True)
    actor: str = Field(max_length=200)
    action: str = Field(max_length=64, index=True)
    target: str = Field(default="", max_length=200)
    detail_json: str = Field(default="{}", sa_column=Column(Text, nullable=False))
    ip: str | None = Field(default=None, max_length=64)


class SignInCountRow(SQLModel, table=True):
    """How many sign-ins to one registration ended one way within one hour.

    Counters only: no username, iMIS ID or address is ever stored here.
    """

    __tablename__ = "sign_in_counts"
    __table_args__ = (
        UniqueConstraint("registration", "outcome", "bucket", name="uq_sign_in_counts_key"),
    )

    id: int | None = Field(default=None, primary_key=True)
    #: The registration's slug, or "-" for the bridge's own sign-in page.
    registration: str = Field(max_length=63)
    #: One of :class:`bridge.storage.stats.Outcome`.
    outcome: str = Field(max_length=32)
    #: The start of the hour (Unix seconds, a multiple of 3600).
    bucket: int = _epoch(index=True)
    count: int = Field(default=0)


class AdminTokenRow(SQLModel, table=True):
    """A token for the admin JSON API (``bridge admin token create``), stored as its SHA-256.

    A revoked token keeps its row (who made it, when it was last used); a name is
    unique among the tokens not revoked.
    """

    __tablename__ = "admin_tokens"
    __table_args__ = (
        Index(
            "uq_admin_tokens_active_name",
            "name",
            unique=True,
            sqlite_where=text("revoked_at IS NULL"),
            postgresql_where=text("revoked_at IS NULL"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=64)
    token_hash: str = Field(max_length=64, unique=True)
    created_at: int = _epoch()
    created_by: str = Field(max_length=200)
    last_used_at: int | None = _epoch_opt()
    revoked_at: int | None = _epoch_opt()


class KeyVaultRow(SQLModel, table=True):
    """One blob of the key store (``key_store = "database"``): the manifest, a signing
    key's PEM or the keyring, each sealed with the key-encryption key before it
    reaches the database (see :mod:`bridge.keys.vault`)."""

    __tablename__ = "key_vault"

    name: str = Field(primary_key=True, max_length=200)
    sealed: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    updated_at: int = _epoch()


class KeyVaultStateRow(SQLModel, table=True):
    """One row (id 1): the generation of the key vault, incremented by every change.

    Each serving process reads it every second and reloads the keys when it moved;
    a change takes this row's lock first, so changes are serialised across processes.
    """

    __tablename__ = "key_vault_state"

    id: int = Field(primary_key=True)
    generation: int = Field(sa_column=Column(BigInteger, nullable=False))


class KeyVaultPeerRow(SQLModel, table=True):
    """Which signing keys (kids, public) a serving process publishes, and when it said so.

    A rotation promotes a new key only once every process heard from lately
    publishes it, so no process signs with a key another does not publish.
    """

    __tablename__ = "key_vault_peers"

    instance: str = Field(primary_key=True, max_length=200)
    kids: str = Field(sa_column=Column(Text, nullable=False))
    seen_at: int = _epoch()
