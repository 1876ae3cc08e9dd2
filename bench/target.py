"""What the load generator needs to know about one OIDC server under test.

Both servers of the comparison (the bridge and the peer, panva's
oidc-provider) are described by one :class:`Target`, prepared before the
measured window: a live session cookie (so authorize answers with a code and
no interaction), a confidential client (client_secret_basic, PKCE S256), a
refresh token to start each refresh chain from, and an access token to
introspect. The load generator then runs the same requests against either.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Target:
    """One server, ready for the measured window. URLs are absolute, on loopback."""

    name: str
    #: The pid whose /proc stat is read (its children's CPU is added).
    pid: int
    base_url: str
    authorize_url: str
    token_url: str
    userinfo_url: str
    introspection_url: str
    client_id: str
    client_secret: str
    redirect_uri: str
    scope: str
    #: Cookie header value of a live sign-in session (``name=value; name2=value2``).
    session_cookie: str
    #: Refresh tokens to start refresh chains from (one per connection at most;
    #: each chain rotates its own token).
    refresh_tokens: tuple[str, ...] = ()
    #: An access token that stays valid for the whole window, to introspect.
    access_token: str = ""
    #: Extra query parameters the authorize request needs (e.g. ``prompt``).
    authorize_extra: dict[str, str] = field(default_factory=dict)
    #: Storage behind this server, for the report ("SQLite", "memory (Map)").
    storage: str = ""
