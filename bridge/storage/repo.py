"""The repository: every query the bridge runs against its tables.

This module owns the meaning of the stored state: minting the random secrets
that are handed out once (session ids, pending request ids, codes, tokens) and
keeping only their SHA-256, redeeming a code at most once, rotating refresh
tokens with reuse detection, revocation, sign-in throttling counters, the audit
trail and housekeeping. Its methods are synchronous and short (one to three
statements on the hot paths, each atomic where it matters); async code calls
them through :meth:`Database.run`. It
never renders, never speaks HTTP or OAuth wire formats, never decides policy
(lifetimes and limits are passed in) and never reads settings.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Iterable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from sqlalchemy import Delete, Update, case, delete, exists, func, insert, or_, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.dml import UpdateBase
from sqlmodel import Session, SQLModel, col, select

from bridge.errors import BadRequest
from bridge.storage.db import Database, translate_unavailable
from bridge.storage.models import (
    AuditEventRow,
    AuthorizationCodeRow,
    BrowserSessionRow,
    GrantRow,
    LoginThrottleRow,
    PendingRequestRow,
    RegistrationRow,
    TokenRow,
)

#: A session's last_seen_at is written at most this often (reads stay reads).
SESSION_TOUCH_SECONDS = 60
#: Redeemed and expired codes are kept this long so a late replay is still
#: recognised as a replay (and its grant revoked) rather than as garbage.
CODE_KEEP_SECONDS = 24 * 3600
#: Expired tokens and grants are kept this long (introspection, audits).
TOKEN_KEEP_SECONDS = 24 * 3600
#: Throttle counters older than this start again from zero and are purged.
THROTTLE_KEEP_SECONDS = 24 * 3600
#: Rows one purge statement deletes at most (each batch is its own transaction).
PURGE_BATCH = 1000
#: Any constant: the same in every bridge process (PostgreSQL advisory lock).
_PURGE_LOCK_ID = 0x1B41D6F

M = TypeVar("M", bound=SQLModel)


class Conflict(BadRequest):
    """The change collides with what is stored (a duplicate, or a revoked grant)."""

    title = "This conflicts with existing data"


class RefreshReused(Conflict):
    """A refresh token was exchanged again after a successor of it was used: the
    family (grant) is revoked (SECURITY B4)."""


@dataclass(frozen=True, slots=True)
class CodeRedemption:
    """Outcome of :meth:`Store.redeem_code`.

    ``ok``: this call redeemed the code. ``replayed``: it was redeemed before;
    ``row`` says which grant to revoke. ``invalid``: unknown or expired.
    """

    status: Literal["ok", "replayed", "invalid"]
    row: AuthorizationCodeRow | None = None


@dataclass(frozen=True, slots=True)
class RefreshRotation:
    """Outcome of :meth:`Store.rotate_refresh`.

    ``ok``: issue a new pair for ``grant`` with ``parent_hash=token.token_hash``
    (also for a retry within the grace period: the pair issued before is then
    revoked). ``reused``: a rotated token came back after the grace period, or
    after its successor was used; the whole grant is now revoked. ``invalid``:
    unknown, expired, revoked or another client's token.
    """

    status: Literal["ok", "reused", "invalid"]
    token: TokenRow | None = None
    grant: GrantRow | None = None


def hash_token(raw: str) -> str:
    """The stored form of a random secret: SHA-256, hex (the secrets are 256-bit random)."""
    return hashlib.sha256(raw.encode()).hexdigest()


def new_secret() -> tuple[str, str]:
    """A fresh random secret and its stored hash: ``(raw, hash)``."""
    raw = secrets.token_urlsafe(32)
    return raw, hash_token(raw)


def _update(model: type[M]) -> Update:
    # Rows are never kept in the session across statements: skip the ORM's
    # in-memory synchronisation (and the extra SELECT it may emit).
    return update(model).execution_options(synchronize_session=False)


def _delete(model: type[M]) -> Delete:
    return delete(model).execution_options(synchronize_session=False)


def _clip(text: str | None, limit: int) -> str | None:
    return None if text is None else text[:limit]


def _client_id_taken(row: RegistrationRow) -> str:
    return f"client_id {row.client_id!r} is already used by another registration"


def _json(value: Mapping[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)


class Store:
    """The bridge's stored state, as synchronous methods of one transaction each."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def _statements(self) -> AbstractContextManager[Session]:
        # Every method using this is safe statement by statement: one statement,
        # or an order in which each prefix is a consistent state (a grant is
        # revoked before its tokens; a code is redeemed before it is looked up).
        return self.db.session(autocommit=True)

    # --- registrations ---------------------------------------------------------

    def list_registrations(self) -> list[RegistrationRow]:
        with self._statements() as s:
            return list(s.exec(select(RegistrationRow).order_by(col(RegistrationRow.slug))))

    def get_registration(self, slug: str) -> RegistrationRow | None:
        with self._statements() as s:
            return s.get(RegistrationRow, slug)

    def get_registration_by_client_id(self, client_id: str) -> RegistrationRow | None:
        query = select(RegistrationRow).where(col(RegistrationRow.client_id) == client_id)
        with self._statements() as s:
            return s.exec(query).first()

    def insert_registration(self, row: RegistrationRow) -> RegistrationRow:
        """Store a new registration; :class:`Conflict` if its slug or client_id is taken."""
        try:
            with self._statements() as s:
                s.add(row)
                s.flush()
        except IntegrityError as error:
            raise Conflict(self._registration_conflict(row), detail=str(error.orig)) from error
        return row

    def update_registration(self, row: RegistrationRow) -> bool:
        """Overwrite the registration ``row.slug`` (all but created_at); False if there is none."""
        values = row.model_dump(exclude={"slug", "created_at"})
        query = _update(RegistrationRow).where(col(RegistrationRow.slug) == row.slug).values(values)
        try:
            with self._statements() as s:
                return bool(s.exec(query).rowcount == 1)
        except IntegrityError as error:
            raise Conflict(_client_id_taken(row), detail=str(error.orig)) from error

    def delete_registration(self, slug: str) -> bool:
        with self._statements() as s:
            query = _delete(RegistrationRow).where(col(RegistrationRow.slug) == slug)
            return bool(s.exec(query).rowcount == 1)

    def _registration_conflict(self, row: RegistrationRow) -> str:
        if self.get_registration(row.slug) is not None:
            return f"a registration named {row.slug!r} already exists"
        return _client_id_taken(row)

    # --- browser sessions --------------------------------------------------------

    def create_session(
        self,
        *,
        imis_id: str,
        username: str,
        identity_json: str,
        auth_time: int,
        now: int,
        lifetime_seconds: int,
    ) -> str:
        """Start a session; returns the raw id for the cookie (only its hash is stored)."""
        raw, digest = new_secret()
        row = BrowserSessionRow(
            id_hash=digest,
            imis_id=imis_id,
            username=username,
            identity_json=identity_json,
            auth_time=auth_time,
            created_at=now,
            last_seen_at=now,
            expires_at=now + lifetime_seconds,
        )
        with self._statements() as s:
            s.add(row)
        return raw

    def get_session(self, raw_id: str, *, now: int, idle_seconds: int) -> BrowserSessionRow | None:
        """The live session of a cookie, or None if unknown, expired or idle too long.

        Marks the session seen, at most once per :data:`SESSION_TOUCH_SECONDS`.
        """
        digest = hash_token(raw_id)
        query = select(BrowserSessionRow).where(
            col(BrowserSessionRow.id_hash) == digest,
            col(BrowserSessionRow.expires_at) > now,
            col(BrowserSessionRow.last_seen_at) > now - idle_seconds,
        )
        with self._statements() as s:
            row = s.exec(query).first()
            if row is None or now - row.last_seen_at < SESSION_TOUCH_SECONDS:
                return row
            if self.db.backend == "sqlite":
                # End the read transaction first: on SQLite a write that follows
                # a read in one deferred transaction fails instead of waiting.
                # (PostgreSQL runs autocommit here; a commit would only cost a
                # second connection checkout.)
                s.commit()
            s.exec(
                _update(BrowserSessionRow)
                .where(
                    col(BrowserSessionRow.id_hash) == digest,
                    col(BrowserSessionRow.last_seen_at) < now,
                )
                .values(last_seen_at=now)
            )
            s.expunge(row)
        row.last_seen_at = now
        return row

    def delete_session(self, raw_id: str) -> BrowserSessionRow | None:
        """End a session; returns what it was (to revoke its grants), None if there was none."""
        query = (
            _delete(BrowserSessionRow)
            .where(col(BrowserSessionRow.id_hash) == hash_token(raw_id))
            .returning(BrowserSessionRow)
        )
        with self._statements() as s:
            row: BrowserSessionRow | None = s.exec(query).scalars().first()
            return row

    def delete_sessions_of(self, imis_id: str) -> int:
        """End every session of one person; returns how many there were."""
        query = _delete(BrowserSessionRow).where(col(BrowserSessionRow.imis_id) == imis_id)
        with self._statements() as s:
            return int(s.exec(query).rowcount)

    # --- pending authorization requests -----------------------------------------

    def create_pending(
        self,
        *,
        kind: str,
        registration: str,
        params: Mapping[str, Any],
        now: int,
        ttl_seconds: int,
        client: str | None = None,
        max_per_client: int | None = None,
    ) -> str:
        """Park a request while the person signs in; returns its raw id.

        ``client`` (an address, stored hashed) started it. With ``max_per_client``,
        that client keeps only its newest requests, this one included: older
        ones are dropped (SECURITY D8). Ties within one second are broken
        arbitrarily, but the new request is never the one dropped.
        """
        raw, digest = new_secret()
        client_hash = None if client is None else hash_token(f"pending-client:{client}")
        row = PendingRequestRow(
            id_hash=digest,
            kind=kind,
            registration=registration,
            params_json=_json(params),
            created_at=now,
            expires_at=now + ttl_seconds,
            client_hash=client_hash,
        )
        with self._statements() as s:
            s.add(row)
        if client_hash is not None and max_per_client is not None:
            self._trim_pending(client_hash, keep=digest, limit=max(1, max_per_client))
        return raw

    def _trim_pending(self, client_hash: str, *, keep: str, limit: int) -> None:
        others = (
            col(PendingRequestRow.client_hash) == client_hash,
            col(PendingRequestRow.id_hash) != keep,
        )
        newest = (
            select(col(PendingRequestRow.id_hash))
            .where(*others)
            .order_by(col(PendingRequestRow.created_at).desc(), col(PendingRequestRow.id_hash))
            .limit(limit - 1)
        )
        # Concurrent requests from one address may each keep a few more; the
        # next request trims again, so the bound holds within a handful.
        query = _delete(PendingRequestRow).where(
            *others, col(PendingRequestRow.id_hash).not_in(newest)
        )
        with self._statements() as s:
            s.exec(query)

    def get_pending(self, raw_id: str, *, now: int) -> PendingRequestRow | None:
        query = select(PendingRequestRow).where(
            col(PendingRequestRow.id_hash) == hash_token(raw_id),
            col(PendingRequestRow.expires_at) > now,
        )
        with self._statements() as s:
            return s.exec(query).first()

    def delete_pending(self, raw_id: str) -> None:
        query = _delete(PendingRequestRow).where(
            col(PendingRequestRow.id_hash) == hash_token(raw_id)
        )
        with self._statements() as s:
            s.exec(query)

    # --- authorization codes -----------------------------------------------------

    def create_code(
        self,
        *,
        grant_id: str,
        client_id: str,
        redirect_uri: str,
        scope: str,
        nonce: str | None,
        code_challenge: str,
        code_challenge_method: str,
        session_hash: str | None,
        imis_id: str,
        identity_json: str,
        auth_time: int,
        now: int,
        ttl_seconds: int,
    ) -> str:
        """Mint a one-time code for ``grant_id``; returns the raw code."""
        raw, digest = new_secret()
        row = AuthorizationCodeRow(
            code_hash=digest,
            grant_id=grant_id,
            client_id=client_id,
            redirect_uri=redirect_uri,
            scope=scope,
            nonce=nonce,
            code_challenge=code_challenge,
            code_challenge_method=code_challenge_method,
            session_hash=session_hash,
            imis_id=imis_id,
            identity_json=identity_json,
            auth_time=auth_time,
            created_at=now,
            expires_at=now + ttl_seconds,
        )
        with self._statements() as s:
            s.add(row)
        return raw

    def redeem_code(self, raw_code: str, *, now: int) -> CodeRedemption:
        """Redeem a code at most once, however many requests race for it.

        The winner is decided by one conditional UPDATE ... RETURNING; only a
        loser pays a second statement to tell a replay from garbage.
        """
        digest = hash_token(raw_code)
        query = (
            _update(AuthorizationCodeRow)
            .where(
                col(AuthorizationCodeRow.code_hash) == digest,
                col(AuthorizationCodeRow.redeemed_at).is_(None),
                col(AuthorizationCodeRow.expires_at) > now,
            )
            .values(redeemed_at=now)
            .returning(AuthorizationCodeRow)
        )
        with self._statements() as s:
            row: AuthorizationCodeRow | None = s.exec(query).scalars().first()
            if row is not None:
                return CodeRedemption("ok", row)
            row = s.get(AuthorizationCodeRow, digest)
        if row is not None and row.redeemed_at is not None:
            return CodeRedemption("replayed", row)
        return CodeRedemption("invalid")

    # --- grants and tokens ---------------------------------------------------------

    def create_grant(
        self,
        *,
        grant_id: str,
        client_id: str,
        imis_id: str,
        scope: str,
        session_hash: str | None,
        identity_json: str,
        auth_time: int,
        now: int,
        ttl_seconds: int,
    ) -> None:
        """Record what a redeemed code granted.

        :class:`Conflict` if ``grant_id`` exists, or was revoked (a replay of its
        code, see :meth:`revoke_grant`) before this call.
        """
        row = GrantRow(
            id=grant_id,
            client_id=client_id,
            imis_id=imis_id,
            scope=scope,
            session_hash=session_hash,
            identity_json=identity_json,
            auth_time=auth_time,
            created_at=now,
            expires_at=now + ttl_seconds,
        )
        try:
            with self._statements() as s:
                s.add(row)
        except IntegrityError as error:
            raise Conflict(
                "the grant exists already or was revoked", detail=str(error.orig)
            ) from error

    def get_grant(self, grant_id: str) -> GrantRow | None:
        with self._statements() as s:
            return s.get(GrantRow, grant_id)

    def issue_tokens(
        self,
        *,
        grant_id: str,
        client_id: str,
        scope: str,
        now: int,
        access_ttl: int,
        refresh_ttl: int | None,
        refresh_scope: str | None = None,
        parent_hash: str | None = None,
    ) -> tuple[str, str | None]:
        """Mint an access token (and a refresh token if ``refresh_ttl``) for a grant.

        The refresh token gets ``refresh_scope`` (default: ``scope``). The grant's
        expiry is extended to cover the new tokens. Tokens of a revoked grant are
        minted all the same but are never active (every lookup checks the grant),
        so a revocation racing an exchange always wins and the caller has no race
        to handle. Raises :class:`Conflict` if there is no such grant for
        ``client_id`` (a bug upstream).

        ``parent_hash`` is the refresh token these replace (see
        :meth:`rotate_refresh`). Rotation never forks (SECURITY B4): whatever an
        earlier exchange of the same parent issued is revoked here, so the parent
        has one live successor, the last one issued. If an earlier successor has
        been used meanwhile, the family is revoked instead and :class:`RefreshReused`
        raised. One transaction, which locks the grant row first: exchanges of one
        family take turns, in every process, on SQLite and PostgreSQL alike.
        """
        access, access_hash = new_secret()
        tokens = [self._token(access_hash, "access", grant_id, client_id, scope, now, access_ttl)]
        refresh: str | None = None
        if refresh_ttl is not None:
            refresh, refresh_hash = new_secret()
            refresh_row = self._token(
                refresh_hash,
                "refresh",
                grant_id,
                client_id,
                refresh_scope or scope,
                now,
                refresh_ttl,
            )
            tokens.append(refresh_row)
        for token in tokens:
            token["parent_hash"] = parent_hash
        horizon = max(token["expires_at"] for token in tokens)
        expires_at = col(GrantRow.expires_at)
        extend = (
            _update(GrantRow)
            .where(col(GrantRow.id) == grant_id, col(GrantRow.client_id) == client_id)
            .values(expires_at=case((expires_at < horizon, horizon), else_=expires_at))
        )
        reused = False
        # Without a parent, every prefix of the statements is consistent: no transaction.
        with self.db.session() if parent_hash is not None else self._statements() as s:
            if s.exec(extend).rowcount != 1:
                raise Conflict(f"there is no grant {grant_id!r} for client {client_id!r}")
            if parent_hash is not None:
                reused = self._replace_successors(s, parent_hash, grant_id, now)
            if not reused:
                s.exec(insert(TokenRow).values(tokens))
        if reused:
            raise RefreshReused("a successor of this refresh token was used: family revoked")
        return access, refresh

    def _replace_successors(self, s: Session, parent_hash: str, grant_id: str, now: int) -> bool:
        """Revoke what earlier exchanges of ``parent_hash`` issued; True (and the grant
        revoked) if one of their refresh tokens was exchanged in turn.

        Runs after the grant row is locked. The revocation goes first: a successor
        being rotated concurrently either loses to it (its rotation is conditional
        on not being revoked) or has committed, and the check then sees it.
        """
        s.exec(
            _update(TokenRow)
            .where(col(TokenRow.parent_hash) == parent_hash, col(TokenRow.revoked_at).is_(None))
            .values(revoked_at=now)
        )
        if not self._successor_used(s, parent_hash):
            return False
        self._revoke_grant(s, grant_id, now)
        return True

    @staticmethod
    def _token(
        digest: str, kind: str, grant_id: str, client_id: str, scope: str, now: int, ttl: int
    ) -> dict[str, Any]:
        return {
            "token_hash": digest,
            "kind": kind,
            "grant_id": grant_id,
            "client_id": client_id,
            "scope": scope,
            "issued_at": now,
            "expires_at": now + ttl,
        }

    def active_token(
        self, raw: str, *, now: int, kind: str | None = None
    ) -> tuple[TokenRow, GrantRow] | None:
        """The token and its grant if the token is usable now, else None.

        Unusable: unknown, expired, revoked, a refresh token already rotated,
        or its grant revoked. ``kind`` ("access" | "refresh") narrows the match.
        """
        query = (
            select(TokenRow, GrantRow)
            .join(GrantRow, col(GrantRow.id) == col(TokenRow.grant_id))
            .where(
                col(TokenRow.token_hash) == hash_token(raw),
                col(TokenRow.expires_at) > now,
                col(TokenRow.revoked_at).is_(None),
                col(TokenRow.rotated_at).is_(None),
                col(GrantRow.revoked_at).is_(None),
            )
        )
        if kind is not None:
            query = query.where(col(TokenRow.kind) == kind)
        with self._statements() as s:
            found = s.exec(query).first()
        return None if found is None else (found[0], found[1])

    def rotate_refresh(
        self, raw: str, *, client_id: str, now: int, grace_seconds: int
    ) -> RefreshRotation:
        """Exchange a refresh token (marks it rotated; the caller issues the new pair
        with :meth:`issue_tokens`, ``parent_hash`` set to the token's hash).

        The first exchange wins one conditional UPDATE. A token rotated at most
        ``grace_seconds`` ago by the same client, whose successor has not been
        used, is accepted again (a retry after a lost response; issuing then
        revokes the successor issued before). Any other exchange of a rotated
        token is a reuse: the whole grant is revoked (SECURITY B4). With
        ``grace_seconds=0`` every second exchange is a reuse.
        """
        digest = hash_token(raw)
        grant_live = exists().where(
            col(GrantRow.id) == col(TokenRow.grant_id), col(GrantRow.revoked_at).is_(None)
        )
        rotate = (
            _update(TokenRow)
            .where(
                col(TokenRow.token_hash) == digest,
                col(TokenRow.kind) == "refresh",
                col(TokenRow.client_id) == client_id,
                col(TokenRow.rotated_at).is_(None),
                col(TokenRow.revoked_at).is_(None),
                col(TokenRow.expires_at) > now,
                grant_live,
            )
            .values(rotated_at=now)
            .returning(TokenRow)
        )
        with self._statements() as s:
            token: TokenRow | None = s.exec(rotate).scalars().first()
            if token is not None:
                grant = s.get(GrantRow, token.grant_id)
                return RefreshRotation("ok", token, grant)
            found = s.exec(
                select(TokenRow, GrantRow)
                .join(GrantRow, col(GrantRow.id) == col(TokenRow.grant_id))
                .where(col(TokenRow.token_hash) == digest)
            ).first()
            if found is None:
                return RefreshRotation("invalid")
            token, grant = found
            if (
                token.kind != "refresh"
                or token.client_id != client_id
                or token.revoked_at is not None
                or grant.revoked_at is not None
                or token.expires_at <= now
                or token.rotated_at is None
            ):
                return RefreshRotation("invalid")
            if (
                grace_seconds > 0
                and now - token.rotated_at <= grace_seconds
                and not self._successor_used(s, digest)
            ):
                return RefreshRotation("ok", token, grant)
            self._revoke_grant(s, grant.id, now)
            return RefreshRotation("reused", token, grant)

    @staticmethod
    def _successor_used(s: Session, parent_hash: str) -> bool:
        query = (
            select(col(TokenRow.token_hash))
            .where(
                col(TokenRow.parent_hash) == parent_hash,
                col(TokenRow.kind) == "refresh",
                col(TokenRow.rotated_at).is_not(None),
            )
            .limit(1)
        )
        return s.exec(query).first() is not None

    def revoke_token(self, raw: str, *, client_id: str, now: int) -> bool:
        """RFC 7009: revoke a token of ``client_id`` (a refresh token takes its grant along).

        False if no such token belongs to this client (nothing is changed).
        """
        query = (
            _update(TokenRow)
            .where(
                col(TokenRow.token_hash) == hash_token(raw), col(TokenRow.client_id) == client_id
            )
            .values(revoked_at=func.coalesce(col(TokenRow.revoked_at), now))
            .returning(col(TokenRow.kind), col(TokenRow.grant_id))
        )
        with self._statements() as s:
            found = s.exec(query).first()
            if found is None:
                return False
            if found.kind == "refresh":
                self._revoke_grant(s, found.grant_id, now)
            return True

    def revoke_grant(self, grant_id: str, *, now: int) -> bool:
        """Revoke a grant and every token of it; False if there is no such grant."""
        with self.db.session() as s:
            return self._revoke_grant(s, grant_id, now)

    def revoke_grant_for_replay(self, grant_id: str, *, now: int) -> None:
        """Revoke the grant of a replayed code, even one whose creation is still to come.

        The first redemption may not have recorded its grant yet when the
        replay is reported; :meth:`revoke_grant` would then find nothing and
        the grant would be born live. This leaves a revoked placeholder instead,
        so that :meth:`create_grant` (and so the first exchange) fails with
        :class:`Conflict`. Stricter than :meth:`revoke_grant`: with parallel
        exchanges of one code, possibly none of them gets tokens.
        """
        with self.db.session() as s:
            self._revoke_grant(s, grant_id, now, placeholder=True)

    def revoke_grants_of_session(self, session_hash: str, *, now: int) -> int:
        """Sign-out: revoke every grant made in a browser session (and their tokens), and
        void the session's codes not yet redeemed (their expiry becomes now).

        Returns how many grants were revoked by this call.
        """
        revoke = (
            _update(GrantRow)
            .where(col(GrantRow.session_hash) == session_hash, col(GrantRow.revoked_at).is_(None))
            .values(revoked_at=now)
            .returning(col(GrantRow.id))
        )
        void_codes = (
            _update(AuthorizationCodeRow)
            .where(
                col(AuthorizationCodeRow.session_hash) == session_hash,
                col(AuthorizationCodeRow.redeemed_at).is_(None),
                col(AuthorizationCodeRow.expires_at) > now,
            )
            .values(expires_at=now)
        )
        with self.db.session() as s:
            s.exec(void_codes)
            grant_ids = list(s.exec(revoke).scalars())
            if grant_ids:
                s.exec(
                    _update(TokenRow)
                    .where(
                        col(TokenRow.grant_id).in_(grant_ids), col(TokenRow.revoked_at).is_(None)
                    )
                    .values(revoked_at=now)
                )
        return len(grant_ids)

    def _revoke_grant(
        self, s: Session, grant_id: str, now: int, *, placeholder: bool = False
    ) -> bool:
        revoked_at = func.coalesce(col(GrantRow.revoked_at), now)
        if placeholder:
            # A revoked grant without client: upserted, so it either revokes
            # the real grant or stops it from being created.
            revoke: UpdateBase = (
                self._insert(GrantRow)
                .values(
                    id=grant_id,
                    client_id="",
                    imis_id="",
                    scope="",
                    identity_json="{}",
                    auth_time=now,
                    created_at=now,
                    expires_at=now,
                    revoked_at=now,
                )
                .on_conflict_do_update(
                    index_elements=[col(GrantRow.id)], set_={"revoked_at": revoked_at}
                )
            )
        else:
            revoke = (
                _update(GrantRow).where(col(GrantRow.id) == grant_id).values(revoked_at=revoked_at)
            )
        # The grant's revocation is what makes its tokens inactive (so tokens
        # an issue_tokens adds concurrently are dead too); revoking the token
        # rows as well keeps each row's own state truthful for audits.
        found = s.exec(revoke).rowcount == 1
        s.exec(
            _update(TokenRow)
            .where(col(TokenRow.grant_id) == grant_id, col(TokenRow.revoked_at).is_(None))
            .values(revoked_at=now)
        )
        return bool(found)

    def _insert(self, model: type[M]) -> postgresql.Insert | sqlite.Insert:
        """INSERT with ON CONFLICT support, in this database's dialect."""
        if self.db.backend == "postgresql":
            return postgresql.insert(model)
        return sqlite.insert(model)

    # --- sign-in throttling ---------------------------------------------------------

    @staticmethod
    def _throttle_hashes(keys: Iterable[str]) -> list[str]:
        # Sorted: concurrent multi-row upserts then lock rows in one order (no deadlock).
        return sorted({hash_token(key) for key in keys})

    def throttle_state(self, keys: list[str], *, now: int, window_seconds: int) -> int:
        """The most failures any of ``keys`` (username, address, ...) had within the window."""
        hashes = self._throttle_hashes(keys)
        if not hashes:
            return 0
        query = select(func.max(col(LoginThrottleRow.failures))).where(
            col(LoginThrottleRow.key_hash).in_(hashes),
            col(LoginThrottleRow.last_failure_at) > now - window_seconds,
        )
        with self._statements() as s:
            worst = s.exec(query).one()
        return int(worst or 0)

    def record_failure(
        self, keys: list[str], *, now: int, window_seconds: int = THROTTLE_KEEP_SECONDS
    ) -> None:
        """Count one failed sign-in against every key, atomically (one upsert).

        A key whose last failure is older than ``window_seconds`` starts again at 1.
        """
        hashes = self._throttle_hashes(keys)
        if not hashes:
            return
        failures = col(LoginThrottleRow.failures)
        last = col(LoginThrottleRow.last_failure_at)
        query = (
            self._insert(LoginThrottleRow)
            .values([{"key_hash": h, "failures": 1, "last_failure_at": now} for h in hashes])
            .on_conflict_do_update(
                index_elements=[col(LoginThrottleRow.key_hash)],
                set_={
                    "failures": case((last > now - window_seconds, failures + 1), else_=1),
                    "last_failure_at": now,
                },
            )
        )
        with self._statements() as s:
            s.exec(query)

    def clear_failures(self, keys: list[str]) -> None:
        hashes = self._throttle_hashes(keys)
        if not hashes:
            return
        query = _delete(LoginThrottleRow).where(col(LoginThrottleRow.key_hash).in_(hashes))
        with self._statements() as s:
            s.exec(query)

    # --- audit trail -------------------------------------------------------------

    def audit(
        self,
        *,
        actor: str,
        action: str,
        target: str = "",
        detail: Mapping[str, Any] | None = None,
        ip: str | None = None,
        now: int,
    ) -> None:
        """Record who did what. ``detail`` must not hold a secret."""
        row = AuditEventRow(
            at=now,
            actor=_clip(actor, 200) or "",
            action=_clip(action, 64) or "",
            target=_clip(target, 200) or "",
            detail_json=_json(detail or {}),
            ip=_clip(ip, 64),
        )
        with self._statements() as s:
            s.add(row)

    def list_audit(self, *, limit: int = 100, offset: int = 0) -> list[AuditEventRow]:
        """Newest first."""
        query = (
            select(AuditEventRow)
            .order_by(col(AuditEventRow.at).desc(), col(AuditEventRow.id).desc())
            .limit(limit)
            .offset(offset)
        )
        with self._statements() as s:
            return list(s.exec(query))

    # --- housekeeping -------------------------------------------------------------

    def _expired(
        self, now: int, session_idle_seconds: int | None
    ) -> list[tuple[str, type[SQLModel], Any, Any]]:
        """(kind, table, primary key, condition) of every row nobody can use any more.

        The audit trail is kept by design: it is the record of who did what and
        is never purged here (rotate it with the database's own tools).
        """
        session_dead = col(BrowserSessionRow.expires_at) <= now
        if session_idle_seconds is not None:
            session_dead = or_(
                session_dead, col(BrowserSessionRow.last_seen_at) <= now - session_idle_seconds
            )
        return [
            ("sessions", BrowserSessionRow, col(BrowserSessionRow.id_hash), session_dead),
            (
                "pending requests",
                PendingRequestRow,
                col(PendingRequestRow.id_hash),
                col(PendingRequestRow.expires_at) <= now,
            ),
            (
                "codes",
                AuthorizationCodeRow,
                col(AuthorizationCodeRow.code_hash),
                col(AuthorizationCodeRow.expires_at) <= now - CODE_KEEP_SECONDS,
            ),
            # A grant's expiry covers all its tokens (issue_tokens extends it), so
            # a revoked family goes as a whole once its last token has expired.
            (
                "tokens",
                TokenRow,
                col(TokenRow.token_hash),
                col(TokenRow.expires_at) <= now - TOKEN_KEEP_SECONDS,
            ),
            (
                "grants",
                GrantRow,
                col(GrantRow.id),
                col(GrantRow.expires_at) <= now - TOKEN_KEEP_SECONDS,
            ),
            (
                "throttle counters",
                LoginThrottleRow,
                col(LoginThrottleRow.key_hash),
                col(LoginThrottleRow.last_failure_at) <= now - THROTTLE_KEEP_SECONDS,
            ),
        ]

    def purge_expired(
        self,
        *,
        now: int,
        session_idle_seconds: int | None = None,
        batch_size: int = PURGE_BATCH,
    ) -> dict[str, int] | None:
        """Delete state nobody can use any more; returns how many rows went, per kind.

        Deletes in batches of ``batch_size`` rows, each its own transaction, so
        a large backlog never holds a lock for long and an interrupted purge
        has still done its part (running it again is always safe). Sessions
        idle for ``session_idle_seconds`` count as expired. On PostgreSQL one
        process purges at a time: while another holds the purge lock this
        returns None at once.
        """
        postgres = self.db.backend == "postgresql"
        counts: dict[str, int] = {}
        with translate_unavailable(), self.db.engine.connect() as conn:
            if postgres:
                got = conn.execute(
                    text("SELECT pg_try_advisory_lock(:id)"), {"id": _PURGE_LOCK_ID}
                ).scalar()
                conn.commit()
                if not got:
                    return None
            try:
                for kind, model, key, condition in self._expired(now, session_idle_seconds):
                    victims = select(key).where(condition).limit(batch_size)
                    query = delete(model).where(key.in_(victims))
                    counts[kind] = 0
                    while True:
                        removed = int(conn.execute(query).rowcount)
                        conn.commit()
                        counts[kind] += removed
                        if removed < batch_size:
                            break
            finally:
                if postgres:
                    conn.rollback()
                    conn.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": _PURGE_LOCK_ID})
                    conn.commit()
        return counts
