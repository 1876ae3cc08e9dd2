"""The OAuth 2 / OpenID Connect token side on Authlib: grants, PKCE, ID tokens, endpoints.

Authlib runs the grant logic (client authentication, code and refresh grants,
PKCE verification, revocation RFC 7009, introspection RFC 7662). We supply the
storage hooks and override what it gets wrong for us:

- code redemption is one atomic conditional UPDATE (``Store.redeem_code``, via
  :mod:`bridge.oauth.codes`, which also mints the codes) so of N parallel
  redemptions exactly one wins; a replayed code revokes every token its grant
  issued (SECURITY B1). The redemption, the grant and the tokens commit in one
  transaction, so a replay, in any process, always catches the tokens; within
  one process requests for the same code also take turns;
- refresh tokens rotate atomically and never fork: a second exchange of one
  token within the grace window (0 s by default) revokes what the first one
  issued, and any other reuse revokes the whole family (B4). The rotation and
  the new tokens commit in one transaction. A refresh may
  narrow the access token's scope, while the new refresh token keeps the
  grant's (RFC 6749 §6);
- client authentication is strict (SECURITY B3, G5): a malformed Basic header
  (not base64, not UTF-8, no ``:``) is ``invalid_client``, never a 500; Basic
  credentials are form-urlencoded before base64 and decoded so (RFC 6749
  §2.3.1); a request that authenticates in two ways at once, or whose body
  ``client_id`` differs from its Basic one, is ``invalid_request`` (§2.3, §5.2);
- every ``invalid_client`` is a 401 with a ``Basic`` challenge (RFC 6749 §5.2),
  and token type hints we cannot use are ignored (RFC 7009 §2.1);
- ID tokens are signed by our key store (RS256 by default, ES256 per
  registration) with ``kid`` and ``at_hash`` (C1).

Authlib is synchronous: the HTTP layer awaits the body, then calls
:meth:`OAuthServer.token_response` and friends in a worker thread. Nothing here
knows about Starlette.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any
from urllib.parse import unquote_plus

from authlib.oauth2.rfc6749 import (
    AuthorizationServer,
    InvalidClientError,
    InvalidGrantError,
    InvalidRequestError,
    InvalidScopeError,
    OAuth2Request,
)
from authlib.oauth2.rfc6749.grants import AuthorizationCodeGrant, RefreshTokenGrant
from authlib.oauth2.rfc6749.requests import BasicOAuth2Payload
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oauth2.rfc7662 import IntrospectionEndpoint

from bridge.claims import claims_for
from bridge.identity import Identity
from bridge.keys import KeyStore
from bridge.metrics import Metrics
from bridge.oauth import codes
from bridge.oauth.authorize import has_control_chars
from bridge.oauth.client import SUPPORTED_SCOPES, client_options
from bridge.oauth.models import AuthorizationCode, Client, GrantUser, Token
from bridge.registry import Registry
from bridge.settings import Settings
from bridge.storage import Conflict, RefreshReused, Store

log = logging.getLogger("bridge.oauth")

CLIENT_AUTH_METHODS = ("client_secret_basic", "client_secret_post", "none")
Response = tuple[int, dict[str, Any], list[tuple[str, str]]]
NO_STORE = [("Cache-Control", "no-store"), ("Pragma", "no-cache")]


def basic_credentials(headers: Mapping[str, str]) -> tuple[str, str] | None:
    """The ``(client_id, client_secret)`` of an ``Authorization: Basic`` header, or None
    if the request has no Basic header.

    RFC 6749 §2.3.1: both parts are form-urlencoded, then joined by ``:`` and
    base64-encoded (RFC 7617). Anything else under the Basic scheme (bad base64,
    bytes that are not UTF-8, no ``:``, bad percent-escapes, an empty part) is
    :class:`InvalidClientError`, a 401, never a crash (SECURITY B3, G5).
    """
    scheme, _, value = headers.get("authorization", "").strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        raw_id, colon, raw_secret = decoded.partition(":")
        client_id = unquote_plus(raw_id, errors="strict")
        secret = unquote_plus(raw_secret, errors="strict")
    except (binascii.Error, ValueError):  # UnicodeError is a ValueError
        client_id = secret = colon = ""
    if not (colon and client_id and secret):
        raise InvalidClientError(
            status_code=401,
            description="the Authorization header does not hold Basic client credentials",
        )
    return client_id, secret


def _authenticate_basic(query_client: Any, request: OAuth2Request) -> Client | None:
    """``client_secret_basic`` with :func:`basic_credentials` (Authlib's own parser
    crashes on bytes that are not UTF-8 and does not decode ``+`` as a space)."""
    credentials = basic_credentials(request.headers)
    if credentials is None:
        return None
    client_id, secret = credentials
    client: Client | None = query_client(client_id)
    if client is None or not client.check_client_secret(secret):
        return None
    return client


def at_hash(access_token: str) -> str:
    """OIDC Core §3.1.3.6: left half of SHA-256 (RS256 and ES256 both hash with SHA-256)."""
    digest = hashlib.sha256(access_token.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest[: len(digest) // 2]).rstrip(b"=").decode("ascii")


class CodeGrant(AuthorizationCodeGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = CLIENT_AUTH_METHODS

    def query_authorization_code(self, code: str, client: Client) -> AuthorizationCode | None:
        server: OAuthServer = self.server
        # The client is authenticated: from here the exchange is one transaction.
        server.store.begin_unit()
        row = codes.redeem_code(
            server.store, code, client_id=client.get_client_id(), now=int(time.time())
        )
        return None if row is None else AuthorizationCode(row)

    def delete_authorization_code(self, authorization_code: AuthorizationCode) -> None:
        """Already redeemed atomically in :meth:`query_authorization_code`."""

    def save_authorization_code(self, code: str, request: OAuth2Request) -> None:
        raise NotImplementedError("codes are minted by bridge.oauth.codes.mint_code")

    def authenticate_user(self, authorization_code: AuthorizationCode) -> GrantUser:
        server: OAuthServer = self.server
        row = authorization_code.row
        now = int(time.time())
        try:
            server.store.create_grant(
                grant_id=row.grant_id,
                client_id=row.client_id,
                imis_id=row.imis_id,
                scope=row.scope,
                # An offline_access grant outlives the browser session (OIDC Core §11);
                # every other grant ends when the person signs out.
                session_hash=None if "offline_access" in row.scope.split() else row.session_hash,
                identity_json=row.identity_json,
                auth_time=row.auth_time,
                now=now,
                ttl_seconds=server.settings.tokens.refresh_token_seconds,
            )
        except Conflict as exc:
            raise InvalidGrantError("the code was replayed") from exc
        return GrantUser(row.grant_id, authorization_code.identity, row.auth_time)


class PkceS256(CodeChallenge):  # type: ignore[misc]
    """PKCE with S256 only; every code carries a challenge (checked at /authorize)."""

    SUPPORTED_CODE_CHALLENGE_METHOD = ("S256",)

    def get_authorization_code_challenge(self, authorization_code: AuthorizationCode) -> str:
        return authorization_code.code_challenge

    def get_authorization_code_challenge_method(self, authorization_code: AuthorizationCode) -> str:
        return authorization_code.code_challenge_method


class IdToken:
    """Adds the ID token to a code grant's token response (OIDC Core §3.1.3.3)."""

    def __call__(self, grant: CodeGrant) -> None:
        grant.register_hook("after_create_token_response", self.process_token)

    def process_token(self, grant: CodeGrant, response: Response) -> Response:
        _, token, _ = response
        scope = token.get("scope", "")
        if "openid" not in scope.split():
            return response
        server: OAuthServer = grant.server
        request = grant.request
        code: AuthorizationCode = request.authorization_code
        client: Client = request.client
        token["id_token"] = server.id_token(
            client,
            code.identity,
            scope=scope,
            auth_time=code.get_auth_time(),
            nonce=code.get_nonce(),
            access_token=token["access_token"],
        )
        return response


class RefreshGrant(RefreshTokenGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = CLIENT_AUTH_METHODS
    INCLUDE_NEW_REFRESH_TOKEN = True

    def authenticate_refresh_token(self, refresh_token: str) -> Token | None:
        server: OAuthServer = self.server
        client: Client = self.request.client
        # The client is authenticated: from here the exchange is one transaction.
        server.store.begin_unit()
        self._check_scope_before_rotation(refresh_token, client)
        result = server.store.rotate_refresh(
            refresh_token,
            client_id=client.get_client_id(),
            now=int(time.time()),
            grace_seconds=server.settings.tokens.refresh_reuse_grace_seconds,
        )
        if result.status == "reused":
            log.warning("refresh token reused: client=%s family revoked", client.client_id)
            return None
        if result.status != "ok" or result.token is None or result.grant is None:
            return None
        return Token(refresh_token, result.token, result.grant)

    def _check_scope_before_rotation(self, refresh_token: str, client: Client) -> None:
        """Authlib checks the requested scope after :meth:`authenticate_refresh_token`,
        which rotates: a refused scope would use the token up (and a later use of it
        would revoke the family). So check first, when a scope is asked for."""
        requested = self.request.payload.scope
        if not requested:
            return
        server: OAuthServer = self.server
        found = server.store.active_token(refresh_token, now=int(time.time()), kind="refresh")
        if found is None or found[0].client_id != client.get_client_id():
            return  # rotation tells unknown, reused and grace-window tokens apart
        if not set(requested.split()) <= set(found[0].scope.split()):
            raise InvalidScopeError()

    def authenticate_user(self, refresh_token: Token) -> GrantUser:
        return refresh_token.get_user()

    def issue_token(self, user: GrantUser, refresh_token: Token) -> dict[str, Any]:
        """RFC 6749 §6: the access token may be narrowed to the requested scope; the new
        refresh token keeps the scope of the one it replaces (less what the
        registration no longer allows, A6)."""
        server: OAuthServer = self.server
        client: Client = self.request.client
        granted = client.get_allowed_scope(refresh_token.get_scope())
        requested = self.request.payload.scope
        scope = client.get_allowed_scope(requested) if requested else granted
        return server.issue(
            client,
            user,
            scope=scope,
            refresh_scope=granted,
            parent_hash=refresh_token.row.token_hash,
            grant_type=self.GRANT_TYPE,
        )

    def revoke_old_credential(self, refresh_token: Token) -> None:
        """Rotation already marked the old token in :meth:`authenticate_refresh_token`."""


class _TokenLookup:
    server: OAuthServer

    def check_params(self, request: OAuth2Request, client: Client) -> None:
        """Only ``token`` is required; any ``token_type_hint`` is ignored, as RFC 7009 §2.1
        allows: tokens are found by their hash whatever their type."""
        if not request.form.get("token"):
            raise InvalidRequestError("token is required")

    def query_token(self, token_string: str, token_type_hint: str | None) -> Token | None:
        if not token_string or len(token_string) > 512:
            return None
        found = self.server.store.active_token(token_string, now=int(time.time()))
        if found is None:
            return None
        row, grant = found
        return Token(token_string, row, grant)


class Revocation(_TokenLookup, RevocationEndpoint):  # type: ignore[misc]
    CLIENT_AUTH_METHODS = CLIENT_AUTH_METHODS

    def authenticate_token(self, request: OAuth2Request, client: Client) -> Token | None:
        self.check_params(request, client)
        token = self.query_token(request.form["token"], request.form.get("token_type_hint"))
        # RFC 7009 §2.2: a token of another client is not revoked, and says nothing.
        if token is not None and not token.check_client(client):
            return None
        return token

    def revoke_token(self, token: Token, request: OAuth2Request) -> None:
        self.server.store.revoke_token(
            token.raw, client_id=token.row.client_id, now=int(time.time())
        )


class Introspection(_TokenLookup, IntrospectionEndpoint):  # type: ignore[misc]
    CLIENT_AUTH_METHODS = ("client_secret_basic", "client_secret_post")

    def check_permission(self, token: Token, client: Client, request: OAuth2Request) -> bool:
        return token.check_client(client)

    def introspect_token(self, token: Token) -> dict[str, Any]:
        identity = Identity.from_json(token.grant.identity_json)
        return {
            "active": True,
            "scope": token.row.scope,
            "client_id": token.row.client_id,
            "username": identity.username,
            "token_type": "Bearer" if token.row.kind == "access" else "refresh_token",
            "exp": token.row.expires_at,
            "iat": token.row.issued_at,
            "sub": identity.imis_id,
            "aud": token.row.client_id,
            "iss": self.server.settings.issuer,
        }


class OAuthServer(AuthorizationServer):  # type: ignore[misc]
    """Authlib's authorization server, given the parts of the bridge it uses."""

    def __init__(
        self,
        *,
        settings: Settings,
        store: Store,
        registry: Registry,
        keys: KeyStore,
        metrics: Metrics | None = None,
    ) -> None:
        super().__init__(scopes_supported=list(SUPPORTED_SCOPES))
        self.metrics = Metrics() if metrics is None else metrics
        self.settings = settings
        self.store = store
        self.registry = registry
        self.keys = keys
        self.register_grant(CodeGrant, [PkceS256(required=True), IdToken()])
        self.register_grant(RefreshGrant)
        self.register_endpoint(Revocation)
        self.register_endpoint(Introspection)
        self.register_client_auth_method("client_secret_basic", _authenticate_basic)
        self._redemptions = _KeyedLocks()

    # --- Authlib hooks ------------------------------------------------------------

    def query_client(self, client_id: str) -> Client | None:
        if not client_id or len(client_id) > 200 or has_control_chars(client_id):
            return None
        registration = self.registry.by_client_id(client_id)
        if registration is None or client_options(registration) is None or not registration.enabled:
            return None
        return Client(registration)

    def authenticate_client(
        self, request: OAuth2Request, methods: Sequence[str], endpoint: str = "token"
    ) -> Client:
        """RFC 6749 §2.3: one client, authenticated one way. With a Basic header only
        ``client_secret_basic`` is tried; a ``client_secret`` in the body as well, or a
        body ``client_id`` naming another client, is invalid_request (§5.2)."""
        basic = basic_credentials(request.headers)
        if basic is not None:
            if "client_secret" in request.form:
                raise InvalidRequestError(
                    "the client authenticated in two ways (Basic header and client_secret)"
                )
            body_id = request.form.get("client_id")
            if body_id is not None and body_id != basic[0]:
                raise InvalidRequestError("client_id differs from the one in the Basic header")
            methods = [m for m in methods if m == "client_secret_basic"]
        client: Client = super().authenticate_client(request, methods, endpoint)
        return client

    def generate_token(
        self,
        grant_type: str,
        client: Client,
        user: GrantUser | None = None,
        scope: str | None = None,
        expires_in: int | None = None,
        include_refresh_token: bool = True,
    ) -> dict[str, Any]:
        assert user is not None
        scope = scope or ""
        return self.issue(
            client,
            user,
            scope=scope,
            refresh_scope=scope if include_refresh_token else None,
            grant_type=grant_type,
        )

    def issue(
        self,
        client: Client,
        user: GrantUser,
        *,
        scope: str,
        refresh_scope: str | None,
        parent_hash: str | None = None,
        grant_type: str,
    ) -> dict[str, Any]:
        """Mint an access token for ``scope`` and, if ``refresh_scope`` holds
        offline_access, a refresh token for ``refresh_scope``. Tokens of a grant
        revoked meanwhile are minted dead (the store checks the grant on every use).
        ``parent_hash``: the refresh token exchanged for these (its earlier
        successors are revoked, B4); ``grant_type``: the grant asked for them
        (counted in the metrics)."""
        tokens = self.settings.tokens
        if refresh_scope is not None and "offline_access" not in refresh_scope.split():
            refresh_scope = None
        try:
            access, refresh = self.store.issue_tokens(
                grant_id=user.grant_id,
                client_id=client.get_client_id(),
                scope=scope,
                now=int(time.time()),
                access_ttl=tokens.access_token_seconds,
                refresh_ttl=tokens.refresh_token_seconds if refresh_scope else None,
                refresh_scope=refresh_scope,
                parent_hash=parent_hash,
            )
        except RefreshReused as exc:
            log.warning("refresh token reused: client=%s family revoked", client.client_id)
            raise InvalidGrantError("the refresh token was already used") from exc
        except Conflict as exc:
            raise InvalidGrantError("the grant no longer exists") from exc
        self.metrics.token_issued(grant_type)
        token: dict[str, Any] = {
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": tokens.access_token_seconds,
            "scope": scope,
        }
        if refresh:
            token["refresh_token"] = refresh
        return token

    def save_token(self, token: dict[str, Any], request: OAuth2Request) -> None:
        """Tokens are stored (hashed) when generated."""

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        return None

    def create_oauth2_request(self, request: OAuth2Request) -> OAuth2Request:
        return request

    def handle_response(self, status: int, body: Any, headers: Any) -> Response:
        dropped = ("cache-control", "pragma", "www-authenticate")
        merged = [(k, v) for k, v in (headers or []) if k.lower() not in dropped]
        if isinstance(body, dict) and body.get("error") == "invalid_client":
            # RFC 6749 §5.2: 401 with a challenge of a scheme we accept (Authlib
            # answers 400 to a client_secret_post client it does not know).
            status = 401
        if status == 401:
            merged.append(("WWW-Authenticate", f'Basic realm="{self.settings.issuer}"'))
        return status, body, merged + NO_STORE

    # --- ID tokens ------------------------------------------------------------------

    def id_token(
        self,
        client: Client,
        identity: Identity,
        *,
        scope: str,
        auth_time: int,
        nonce: str | None,
        access_token: str | None,
    ) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.settings.issuer,
            "sub": identity.imis_id,
            "aud": client.get_client_id(),
            "azp": client.get_client_id(),
            "iat": now,
            "exp": now + self.settings.tokens.id_token_seconds,
            "auth_time": auth_time,
            "amr": ["pwd"],
        }
        if nonce:
            claims["nonce"] = nonce
        if access_token:
            claims["at_hash"] = at_hash(access_token)
        claims.update(
            claims_for(
                identity,
                scope.split(),
                client.registration.claims,
                emails_verified=self.settings.imis.emails_verified,
            )
        )
        alg = client.options.id_token_signed_response_alg
        keys = self.keys
        keys.reload_if_cheap()  # a folder's rotation by another process signs at once
        signed: str = keys.sign_jwt(claims, alg=alg)
        return signed

    # --- entry points (called in a worker thread) --------------------------------------

    def token_response(self, request: OAuth2Request) -> Response:
        if not request.form.get("grant_type"):
            # Authlib would say unsupported_grant_type; RFC 6749 §5.2 says a
            # missing parameter is invalid_request.
            error = InvalidRequestError("grant_type is required")
            result: Response = self.handle_error_response(request, error)
            return result
        code = request.form.get("code")
        turn: AbstractContextManager[None] = nullcontext()
        if request.form["grant_type"] == "authorization_code" and code:
            turn = self._redemptions.hold(code)
        # The grants begin the shared transaction once the client is authenticated.
        with turn, self.store.unit_of_work():
            result = self.create_token_response(request)
        return result

    def endpoint_response(self, name: str, request: OAuth2Request) -> Response:
        result: Response = self.create_endpoint_response(name, request)
        return result


class _KeyedLocks:
    """One lock per key (a code), kept only while a request holds or waits for it."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, tuple[threading.Lock, int]] = {}

    @contextmanager
    def hold(self, key: str) -> Iterator[None]:
        with self._guard:
            lock, users = self._locks.get(key, (threading.Lock(), 0))
            self._locks[key] = (lock, users + 1)
        try:
            with lock:
                yield
        finally:
            with self._guard:
                lock, users = self._locks[key]
                if users == 1:
                    del self._locks[key]
                else:
                    self._locks[key] = (lock, users - 1)


class _FormRequest(OAuth2Request):  # type: ignore[misc]
    """An Authlib request over a form the route has already read."""

    def __init__(
        self, method: str, uri: str, headers: Mapping[str, str], form: dict[str, str]
    ) -> None:
        super().__init__(method, uri, headers=headers)
        self._form = form

    @property
    def form(self) -> dict[str, str]:
        return self._form

    @property
    def args(self) -> dict[str, str]:
        return {}


def oauth_request(
    method: str, uri: str, headers: Mapping[str, str], form: Sequence[tuple[str, str]]
) -> OAuth2Request:
    """An Authlib request from already-parsed HTTP parts (the body was awaited by the route)."""
    data: dict[str, str] = {}
    for key, value in form:
        data.setdefault(key, value)
    # ``headers`` must stay case-insensitive: Authlib asks for "Authorization".
    request = _FormRequest(method, uri, headers, data)
    payload = BasicOAuth2Payload(data)
    datalist: dict[str, list[str]] = {}
    for key, value in form:
        datalist.setdefault(key, []).append(value)
    payload._datalist = datalist
    request.payload = payload
    return request


__all__ = ["InvalidGrantError", "OAuthServer", "at_hash", "oauth_request"]
