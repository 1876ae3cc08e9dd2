"""Stored authorization codes, grants and tokens.

This module owns what the OAuth token side relies on in the database: minting
a code and redeeming it at most once however many requests race (SECURITY B1),
recording the grant a redeemed code gives, issuing access and refresh tokens
(only their hashes are stored), rotating refresh tokens with reuse detection
(B4, ``parent_hash`` links a token to the one it replaced), revocation (RFC
7009, a replay, a sign-out) and finding the live token behind a bearer. Each
method is atomic where it matters; a token exchange runs its calls in one
:meth:`~bridge.storage.base.StoreBase.unit_of_work`. Lifetimes are passed in;
wire formats and policy are :mod:`bridge.oauth`'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import sqlalchemy as sql
from sqlalchemy import BindParameter, ColumnElement, bindparam, case, func, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.dml import UpdateBase
from sqlmodel import Session, col, select

from bridge.storage.base import (
    Conflict,
    Prepared,
    StoreBase,
    connection_of,
    hash_token,
    new_secret,
    row_as,
    table_of,
    update_rows,
)
from bridge.storage.models import AuthorizationCodeRow, GrantRow, TokenRow

#: Redeemed and expired codes are kept this long so a late replay is still
#: recognised as a replay (and its grant revoked) rather than as garbage.
CODE_KEEP_SECONDS = 24 * 3600
#: Expired tokens and grants are kept this long (introspection, audits).
TOKEN_KEEP_SECONDS = 24 * 3600


class RefreshReused(Conflict):
    """A refresh token was exchanged again after a successor of it was used: the
    family (grant) is revoked (SECURITY B4)."""


@dataclass(frozen=True, slots=True)
class CodeRedemption:
    """Outcome of :meth:`GrantStore.redeem_code`.

    ``ok``: this call redeemed the code. ``replayed``: it was redeemed before;
    ``row`` says which grant to revoke. ``invalid``: unknown or expired.
    """

    status: Literal["ok", "replayed", "invalid"]
    row: AuthorizationCodeRow | None = None


@dataclass(frozen=True, slots=True)
class RefreshRotation:
    """Outcome of :meth:`GrantStore.rotate_refresh`.

    ``ok``: issue a new pair for ``grant`` with ``parent_hash=token.token_hash``
    (also for a retry within the grace period: the pair issued before is then
    revoked). ``reused``: a rotated token came back after the grace period, or
    after its successor was used; the whole grant is now revoked. ``invalid``:
    unknown, expired, revoked or another client's token.
    """

    status: Literal["ok", "reused", "invalid"]
    token: TokenRow | None = None
    grant: GrantRow | None = None


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


def _unused_code(now: int | BindParameter[int]) -> tuple[ColumnElement[bool], ColumnElement[bool]]:
    """A code that can still be redeemed: not yet, and not expired (``now`` a value, or
    a bound parameter of a statement built once)."""
    return (
        col(AuthorizationCodeRow.redeemed_at).is_(None),
        col(AuthorizationCodeRow.expires_at) > now,
    )


# Every bearer request (userinfo, introspection) runs one of these: built once.
_TOKENS = table_of(TokenRow)
_GRANTS = table_of(GrantRow)
_ACTIVE_TOKEN = (
    sql.select(*_TOKENS.columns, *_GRANTS.columns)
    .select_from(_TOKENS.join(_GRANTS, _GRANTS.c.id == _TOKENS.c.grant_id))
    .where(
        _TOKENS.c.token_hash == bindparam("digest"),
        _TOKENS.c.expires_at > bindparam("now"),
        _TOKENS.c.revoked_at.is_(None),
        _TOKENS.c.rotated_at.is_(None),
        _GRANTS.c.revoked_at.is_(None),
    )
)
_ACTIVE_TOKEN_OF_KIND = Prepared(_ACTIVE_TOKEN.where(_TOKENS.c.kind == bindparam("kind")))
_ACTIVE_TOKEN_ANY_KIND = Prepared(_ACTIVE_TOKEN)


# A code flow and a refresh run these: built once (a multi-row VALUES insert
# would even be compiled anew each time: its cache key holds no row count).
# Bound parameter names avoid column names (those are the SET clause's own).
_CODES = table_of(AuthorizationCodeRow)
_INSERT_CODE = Prepared(sql.insert(_CODES))
_REDEEM_CODE = Prepared(
    update(_CODES)
    .where(_CODES.c.code_hash == bindparam("digest"), *_unused_code(bindparam("now")))
    .values(redeemed_at=bindparam("now"))
    .returning(*_CODES.columns)
)
_CODE_BY_HASH = Prepared(sql.select(_CODES).where(_CODES.c.code_hash == bindparam("digest")))
_INSERT_GRANT = {
    backend: Prepared(
        dialect_insert(_GRANTS)
        .on_conflict_do_nothing(index_elements=[_GRANTS.c.id])
        .returning(_GRANTS.c.id)
    )
    for backend, dialect_insert in (("sqlite", sqlite.insert), ("postgresql", postgresql.insert))
}
_EXTEND_GRANT = Prepared(
    update(_GRANTS)
    .where(_GRANTS.c.id == bindparam("grant"), _GRANTS.c.client_id == bindparam("client"))
    .values(
        expires_at=case(
            (_GRANTS.c.expires_at < bindparam("horizon"), bindparam("horizon")),
            else_=_GRANTS.c.expires_at,
        )
    )
)
_GRANT_BY_ID = Prepared(sql.select(_GRANTS).where(_GRANTS.c.id == bindparam("grant")))
_INSERT_TOKEN = Prepared(sql.insert(_TOKENS))
_ROTATE_REFRESH = Prepared(
    update(_TOKENS)
    .where(
        _TOKENS.c.token_hash == bindparam("digest"),
        _TOKENS.c.kind == "refresh",
        _TOKENS.c.client_id == bindparam("client"),
        _TOKENS.c.rotated_at.is_(None),
        _TOKENS.c.revoked_at.is_(None),
        _TOKENS.c.expires_at > bindparam("now"),
        sql.exists().where(_GRANTS.c.id == _TOKENS.c.grant_id, _GRANTS.c.revoked_at.is_(None)),
    )
    .values(rotated_at=bindparam("now"))
    .returning(*_TOKENS.columns)
)
_REVOKE_SUCCESSORS = Prepared(
    update(_TOKENS)
    .where(_TOKENS.c.parent_hash == bindparam("parent"), _TOKENS.c.revoked_at.is_(None))
    .values(revoked_at=bindparam("now"))
)
_SUCCESSOR_USED = Prepared(
    sql.select(_TOKENS.c.token_hash)
    .where(
        _TOKENS.c.parent_hash == bindparam("parent"),
        _TOKENS.c.kind == "refresh",
        _TOKENS.c.rotated_at.is_not(None),
    )
    .limit(1)
)


def _successor_used(s: Session, parent_hash: str) -> bool:
    found = _SUCCESSOR_USED.run(connection_of(s), {"parent": parent_hash}).fetchone()
    return found is not None


def _token_and_grant(row: Sequence[Any]) -> tuple[TokenRow, GrantRow]:
    """Split a row of :data:`_ACTIVE_TOKEN` (the token's columns, then the grant's)."""
    split = len(_TOKENS.columns)
    return row_as(TokenRow, row[:split]), row_as(GrantRow, row[split:])


class GrantStore(StoreBase):
    """Codes, grants and tokens.

    Locks, where a transaction holds several: code, then grant, then tokens,
    on every path, so concurrent exchanges, revocations and sign-outs take
    turns rather than deadlock.
    """

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
        row = {
            "code_hash": digest,
            "grant_id": grant_id,
            "client_id": client_id,
            "redirect_uri": redirect_uri,
            "scope": scope,
            "nonce": nonce,
            "code_challenge": code_challenge,
            "code_challenge_method": code_challenge_method,
            "session_hash": session_hash,
            "imis_id": imis_id,
            "identity_json": identity_json,
            "auth_time": auth_time,
            "created_at": now,
            "expires_at": now + ttl_seconds,
            "redeemed_at": None,
        }
        with self._core() as connection:
            _INSERT_CODE.run(connection, row)
        return raw

    def redeem_code(self, raw_code: str, *, now: int) -> CodeRedemption:
        """Redeem a code at most once, however many requests race for it.

        The winner is decided by one conditional UPDATE ... RETURNING; only a
        loser pays a second statement to tell a replay from garbage.
        """
        params = {"digest": hash_token(raw_code), "now": now}
        with self._core() as connection:
            won = _REDEEM_CODE.run(connection, params).fetchone()
            if won is not None:
                return CodeRedemption("ok", row_as(AuthorizationCodeRow, won))
            found = _CODE_BY_HASH.run(connection, params).fetchone()
        replayed = None if found is None else row_as(AuthorizationCodeRow, found)
        if replayed is not None and replayed.redeemed_at is not None:
            return CodeRedemption("replayed", replayed)
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
        code, see :meth:`revoke_grant_for_replay`) before this call. A conflict
        leaves the transaction usable (ON CONFLICT DO NOTHING, not an error).
        """
        row = {
            "id": grant_id,
            "client_id": client_id,
            "imis_id": imis_id,
            "scope": scope,
            "session_hash": session_hash,
            "identity_json": identity_json,
            "auth_time": auth_time,
            "created_at": now,
            "expires_at": now + ttl_seconds,
            "revoked_at": None,
        }
        with self._core() as connection:
            created = _INSERT_GRANT[self.db.backend].run(connection, row).fetchone() is not None
        if not created:
            raise Conflict("the grant exists already or was revoked")

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
        tokens = [_token(access_hash, "access", grant_id, client_id, scope, now, access_ttl)]
        refresh: str | None = None
        if refresh_ttl is not None:
            refresh, refresh_hash = new_secret()
            refresh_row = _token(
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
            token.update(parent_hash=parent_hash, rotated_at=None, revoked_at=None)
        extend = {
            "grant": grant_id,
            "client": client_id,
            "horizon": max(token["expires_at"] for token in tokens),
        }
        reused = False
        # Without a parent, every prefix of the statements is consistent: no transaction.
        with self._transaction() if parent_hash is not None else self._statements() as s:
            connection = connection_of(s)
            if _EXTEND_GRANT.run(connection, extend).rowcount != 1:
                raise Conflict(f"there is no grant {grant_id!r} for client {client_id!r}")
            if parent_hash is not None:
                reused = self._replace_successors(s, parent_hash, grant_id, now)
            if not reused:
                _INSERT_TOKEN.run_many(connection, tokens)
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
        _REVOKE_SUCCESSORS.run(connection_of(s), {"parent": parent_hash, "now": now})
        if not _successor_used(s, parent_hash):
            return False
        self._revoke_grant(s, grant_id, now)
        return True

    def active_token(
        self, raw: str, *, now: int, kind: str | None = None
    ) -> tuple[TokenRow, GrantRow] | None:
        """The token and its grant if the token is usable now, else None.

        Unusable: unknown, expired, revoked, a refresh token already rotated,
        or its grant revoked. ``kind`` ("access" | "refresh") narrows the match.
        """
        params = {"digest": hash_token(raw), "now": now}
        with self._core() as connection:
            if kind is None:
                found = _ACTIVE_TOKEN_ANY_KIND.run(connection, params).fetchone()
            else:
                found = _ACTIVE_TOKEN_OF_KIND.run(connection, {**params, "kind": kind}).fetchone()
        if found is None:
            return None
        return _token_and_grant(found)

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
        params = {"digest": digest, "client": client_id, "now": now}
        with self._statements() as s:
            if self._shared() is not None:
                self._lock_family(s, digest)
            connection = connection_of(s)
            rotated = _ROTATE_REFRESH.run(connection, params).fetchone()
            if rotated is not None:
                token = row_as(TokenRow, rotated)
                of_grant = _GRANT_BY_ID.run(connection, {"grant": token.grant_id}).fetchone()
                grant = None if of_grant is None else row_as(GrantRow, of_grant)
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
                and not _successor_used(s, digest)
            ):
                return RefreshRotation("ok", token, grant)
            self._revoke_grant(s, grant.id, now)
            return RefreshRotation("reused", token, grant)

    def _lock_family(self, s: Session, token_hash: str) -> None:
        """In a unit of work on PostgreSQL, lock the token's grant before the token
        itself: the rotation and the issuing that follows then take the grant's
        lock first, as :meth:`issue_tokens` alone does, so concurrent exchanges of
        one family take turns. (SQLite's write lock already serialises them.)"""
        if self.db.backend != "postgresql":
            return
        of_token = select(col(TokenRow.grant_id)).where(col(TokenRow.token_hash) == token_hash)
        s.exec(
            select(col(GrantRow.id))
            .where(col(GrantRow.id) == of_token.scalar_subquery())
            .with_for_update()
        )

    def revoke_token(self, raw: str, *, client_id: str, now: int) -> bool:
        """RFC 7009: revoke a token of ``client_id`` (a refresh token takes its grant along).

        False if no such token belongs to this client (nothing is changed).
        """
        query = (
            update_rows(TokenRow)
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

    def revoke_grant_for_replay(self, grant_id: str, *, now: int) -> None:
        """Revoke the grant of a replayed code and every token of it, even a grant not
        created yet.

        A token exchange commits the code's redemption together with its grant
        and tokens, so a replay normally finds the grant. Should a redemption
        ever be committed on its own first (as an older bridge process does
        during a rolling upgrade), this leaves a revoked placeholder, so that
        :meth:`create_grant`, and so that exchange, fails with :class:`Conflict`.
        """
        with self._transaction() as s:
            self._revoke_grant(s, grant_id, now, placeholder=True)

    def revoke_grants_of_session(self, session_hash: str, *, now: int) -> int:
        """Sign-out: revoke every grant made in a browser session (and their tokens), and
        void the session's codes not yet redeemed (their expiry becomes now).

        Returns how many grants were revoked by this call.
        """
        revoke = (
            update_rows(GrantRow)
            .where(col(GrantRow.session_hash) == session_hash, col(GrantRow.revoked_at).is_(None))
            .values(revoked_at=now)
            .returning(col(GrantRow.id))
        )
        void_codes = (
            update_rows(AuthorizationCodeRow)
            .where(col(AuthorizationCodeRow.session_hash) == session_hash, *_unused_code(now))
            .values(expires_at=now)
        )
        with self._transaction() as s:
            s.exec(void_codes)
            grant_ids = list(s.exec(revoke).scalars())
            if grant_ids:
                s.exec(
                    update_rows(TokenRow)
                    .where(
                        col(TokenRow.grant_id).in_(grant_ids), col(TokenRow.revoked_at).is_(None)
                    )
                    .values(revoked_at=now)
                )
        return len(grant_ids)

    def _revoke_grant(
        self, s: Session, grant_id: str, now: int, *, placeholder: bool = False
    ) -> None:
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
                update_rows(GrantRow)
                .where(col(GrantRow.id) == grant_id)
                .values(revoked_at=revoked_at)
            )
        # The grant's revocation is what makes its tokens inactive (so tokens
        # an issue_tokens adds concurrently are dead too); revoking the token
        # rows as well keeps each row's own state truthful for audits.
        s.exec(revoke)
        s.exec(
            update_rows(TokenRow)
            .where(col(TokenRow.grant_id) == grant_id, col(TokenRow.revoked_at).is_(None))
            .values(revoked_at=now)
        )
