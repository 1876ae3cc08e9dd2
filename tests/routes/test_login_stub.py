"""The sign-in routes behind an https front, with a stub user store.

The bridge runs on a loopback port as usual, but with an https issuer, and the
client reaches it through :class:`HttpsFront`, which plays a TLS-terminating
proxy: the client (and its cookie jar) sees ``https://sso.example.org`` and the
bridge sees ``X-Forwarded-Proto: https``. That shows the cookie names and flags
used in production (SECURITY D1, D4, D5). The stub store gives the outcomes the
simulator does not produce (a disabled account that passed the password check)
and records the calls.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge.app import create_app
from bridge.connectors import (
    AccountDisabled,
    LookupOutcome,
    NotFound,
    SignInOutcome,
    Unavailable,
    WrongCredentials,
)
from bridge.identity import Identity
from bridge.settings import load_settings
from tests.routes.test_login import page
from tests.support.bridge import write_config
from tests.support.servers import serve

ISSUER = "https://sso.example.org"
JANE = Identity(imis_id="23210", username="jdoe", full_name="Jane Doe", email="jane@example.org")


class StubUsers:
    """A UserStore whose answers are chosen per username."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[str, ...]]] = []

    async def authenticate(
        self, username: str, password: str, *, properties: Sequence[str] = ()
    ) -> SignInOutcome:
        self.calls.append((username, tuple(properties)))
        if username == "disabled":
            return AccountDisabled(detail="IsDisabled")
        if username == "down":
            return Unavailable(retry_after=42, detail="stub")
        if username == "jdoe" and password == "right":
            return JANE
        return WrongCredentials()

    async def lookup(self, imis_id: str, *, properties: Sequence[str] = ()) -> LookupOutcome:
        return NotFound(imis_id)

    async def others_sharing_email(self, identity: Identity) -> tuple[str, ...] | Unavailable:
        return ()

    async def aclose(self) -> None:
        pass


class HttpsFront(httpx.BaseTransport):
    """Sends each request for the https issuer to the bridge's plain loopback port."""

    def __init__(self, url: str) -> None:
        self._url = httpx.URL(url)
        self._inner = httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        # A new request: httpx files cookies under the original (https) one.
        inner = httpx.Request(
            request.method,
            request.url.copy_with(scheme="http", host=self._url.host, port=self._url.port),
            headers=[*request.headers.raw, (b"x-forwarded-proto", b"https")],
            content=request.read(),
        )
        return self._inner.handle_request(inner)

    def close(self) -> None:
        self._inner.close()


@pytest.fixture
def users() -> StubUsers:
    return StubUsers()


@pytest.fixture
def client(tmp_path: Path, database_factory: Any, users: StubUsers) -> Iterator[httpx.Client]:
    url = database_factory.migrated_url()
    config = write_config(
        tmp_path / "config",
        issuer=ISSUER,
        database_url=url,
        imis_url="http://127.0.0.1:9",
        extra='[ui]\nsupport_email = "help@example.org"\n',
    )
    app = create_app(load_settings(config, env={}), users=users)
    with (
        serve(app) as url,
        httpx.Client(base_url=ISSUER, transport=HttpsFront(url), timeout=30) as https_client,
    ):
        yield https_client


def _set_cookie(response: Any, name: str) -> list[str]:
    found = [h for h in response.headers.get_list("set-cookie") if h.startswith(f"{name}=")]
    assert len(found) == 1, response.headers.get_list("set-cookie")
    return [part.strip().lower() for part in found[0].split(";")]


def test_d4_https_session_cookie_is_host_prefixed_secure_httponly_lax(
    client: httpx.Client,
) -> None:
    form = page(client.get("/login"))
    response = client.post("/login", data=form.data(username="jdoe", password="right"))
    assert response.status_code == 303
    attributes = _set_cookie(response, "__Host-bridge-session")
    assert {"secure", "httponly", "samesite=lax", "path=/"} <= set(attributes)
    assert not any(a.startswith("domain=") for a in attributes)
    assert not any(a.startswith(("max-age=", "expires=")) for a in attributes)
    assert "You are signed in as <strong>Jane Doe</strong>" in client.get("/login").text


def test_d1_https_csrf_cookie_is_host_prefixed_and_secure(client: httpx.Client) -> None:
    attributes = _set_cookie(client.get("/login"), "__Host-bridge-csrf")
    assert {"secure", "httponly", "samesite=lax", "path=/"} <= set(attributes)


def test_d5_https_responses_add_strict_transport_security(client: httpx.Client) -> None:
    assert client.get("/login").headers["strict-transport-security"].startswith("max-age=")


def test_disabled_account_is_told_to_contact_support(client: httpx.Client) -> None:
    form = page(client.get("/login"))
    response = client.post("/login", data=form.data(username="disabled", password="right"))
    shown = page(response)
    assert shown.status == 403
    assert shown.alerts == [
        "Your iMIS account is disabled, so it cannot be used to sign in. "
        "Please contact help@example.org."
    ]
    assert "incorrect" not in response.text
    assert "__Host-bridge-session" not in response.headers.get("set-cookie", "")


def test_unavailable_passes_on_the_connectors_retry_after(client: httpx.Client) -> None:
    form = page(client.get("/login"))
    response = client.post("/login", data=form.data(username="down", password="right"))
    assert response.status_code == 503
    assert response.headers["retry-after"] == "42"


def test_bridge_sign_in_asks_for_no_extra_properties(
    client: httpx.Client, users: StubUsers
) -> None:
    form = page(client.get("/login"))
    client.post("/login", data=form.data(username=" jdoe  ", password="right"))
    assert users.calls == [("jdoe", ())]
