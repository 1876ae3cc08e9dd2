"""The client, code and token objects Authlib's grant logic asks questions of.

Thin adapters: each wraps a registration or a stored row and answers Authlib's
mixin methods from it. They hold no state of their own and never touch the
database; :mod:`bridge.oauth.server` loads and stores them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from authlib.oauth2.rfc6749 import AuthorizationCodeMixin, ClientMixin, TokenMixin

from bridge.identity import Identity
from bridge.keys import verify_secret
from bridge.oauth.client import client_options
from bridge.registry import Registration
from bridge.storage.models import AuthorizationCodeRow, GrantRow, TokenRow


class Client(ClientMixin):  # type: ignore[misc]
    """An ``oidc`` registration seen as an OAuth client."""

    def __init__(self, registration: Registration) -> None:
        options = client_options(registration)
        if options is None:
            raise TypeError(f"registration {registration.slug} is not an OAuth client")
        self.registration = registration
        self.options = options

    @property
    def client_id(self) -> str:
        return self.options.client_id

    def get_client_id(self) -> str:
        return self.options.client_id

    def get_default_redirect_uri(self) -> str | None:
        return self.options.redirect_uris[0] if self.options.redirect_uris else None

    def get_allowed_scope(self, scope: str) -> str:
        allowed = set(self.options.scopes)
        return " ".join(s for s in scope.split() if s in allowed)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.options.redirect_uris

    def check_client_secret(self, client_secret: str) -> bool:
        stored = self.options.client_secret_hash
        return stored is not None and verify_secret(client_secret, stored)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        if self.options.is_public:
            return method == "none"
        return method in ("client_secret_basic", "client_secret_post")

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        if grant_type == "refresh_token":
            return "offline_access" in self.options.scopes
        return grant_type == "authorization_code"


@dataclass
class GrantUser:
    """The person behind a grant, as Authlib's ``user``; carries the grant id."""

    grant_id: str
    identity: Identity
    auth_time: int


class AuthorizationCode(AuthorizationCodeMixin):  # type: ignore[misc]
    def __init__(self, row: AuthorizationCodeRow) -> None:
        self.row = row
        self.identity = Identity.from_json(row.identity_json)

    def get_redirect_uri(self) -> str:
        return self.row.redirect_uri

    def get_scope(self) -> str:
        return self.row.scope

    def get_nonce(self) -> str | None:
        return self.row.nonce

    def get_auth_time(self) -> int:
        return self.row.auth_time

    def get_acr(self) -> None:
        return None

    def get_amr(self) -> list[str]:
        return ["pwd"]

    # PKCE (authlib.oauth2.rfc7636.CodeChallenge reads these through the grant)
    @property
    def code_challenge(self) -> str:
        return self.row.code_challenge

    @property
    def code_challenge_method(self) -> str:
        return self.row.code_challenge_method


class Token(TokenMixin):  # type: ignore[misc]
    """A stored access or refresh token with its grant (raw value kept for revocation)."""

    def __init__(self, raw: str, row: TokenRow, grant: GrantRow) -> None:
        self.raw = raw
        self.row = row
        self.grant = grant

    def check_client(self, client: Client) -> bool:
        return self.row.client_id == client.get_client_id()

    def get_scope(self) -> str:
        return self.row.scope

    def get_expires_in(self) -> int:
        return max(0, self.row.expires_at - int(time.time()))

    def is_expired(self) -> bool:
        return self.row.expires_at <= int(time.time())

    def is_revoked(self) -> bool:
        return self.row.revoked_at is not None or self.grant.revoked_at is not None

    def get_user(self) -> GrantUser:
        return GrantUser(
            self.grant.id, Identity.from_json(self.grant.identity_json), self.grant.auth_time
        )

    def get_client(self) -> None:  # pragma: no cover - Authlib does not need it here
        return None
