"""Authorization codes: minted for an approved request, redeemed once at the token endpoint.

This module owns the life of a code on the bridge's side. Minting gives an
approved authorization request (the person is signed in and may use the app)
a new grant id and a one-time code for it that lives at most a minute; only
the code's hash is stored. Redemption happens at most once however many
requests race (SECURITY B1), only by the client the code was issued to, and a
replay revokes whatever the code's grant issued. The grant itself is recorded
when the code is redeemed (:mod:`bridge.oauth.server`, in the same transaction
as the redemption and the tokens). Storage is :class:`~bridge.storage.Store`'s;
redirects and token responses are the caller's.
"""

from __future__ import annotations

import logging
import secrets

from bridge.identity import Identity
from bridge.oauth.authorize import AuthorizationRequest
from bridge.storage import Store
from bridge.storage.models import AuthorizationCodeRow

log = logging.getLogger("bridge.oauth")

#: A code lives at most this long, whatever ``[tokens] code_seconds`` says.
CODE_MAX_SECONDS = 60


def new_grant_id() -> str:
    return secrets.token_urlsafe(24)


def mint_code(
    store: Store,
    request: AuthorizationRequest,
    *,
    identity: Identity,
    session_hash: str | None,
    auth_time: int,
    now: int,
    code_seconds: int,
) -> str:
    """A one-time code, for a new grant, answering an approved authorization request.

    ``identity`` is what the grant releases (already checked against the
    registration's access rule), ``session_hash`` the browser session it was
    made in (a sign-out revokes it). Returns the raw code; only its hash is kept.
    """
    return store.create_code(
        grant_id=new_grant_id(),
        client_id=request.client_id,
        redirect_uri=request.redirect_uri,
        scope=request.scope,
        nonce=request.nonce,
        code_challenge=request.code_challenge,
        code_challenge_method=request.code_challenge_method,
        session_hash=session_hash,
        imis_id=identity.imis_id,
        identity_json=identity.to_json(),
        auth_time=auth_time,
        now=now,
        ttl_seconds=min(code_seconds, CODE_MAX_SECONDS),
    )


def redeem_code(
    store: Store, code: str, *, client_id: str, now: int
) -> AuthorizationCodeRow | None:
    """The code's row if this call redeemed it for ``client_id``, else None.

    A code already redeemed is a replay: the grant it was minted for is revoked
    with every token it issued (B1), also when the first redemption has not
    recorded that grant yet (it then never will). A code of another client is
    used up all the same, and refused.
    """
    result = store.redeem_code(code, now=now)
    if result.status == "replayed" and result.row is not None:
        log.warning("authorization code replayed: client=%s grant revoked", client_id)
        store.revoke_grant_for_replay(result.row.grant_id, now=now)
        return None
    if result.status != "ok" or result.row is None:
        return None
    if result.row.client_id != client_id:
        log.warning("code presented by another client: %s", client_id)
        return None
    return result.row


__all__ = ["CODE_MAX_SECONDS", "mint_code", "new_grant_id", "redeem_code"]
