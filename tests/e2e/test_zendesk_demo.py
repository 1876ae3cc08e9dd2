"""The demo Zendesk over real HTTP: it refuses what Zendesk refuses and runs in ``bridge demo``.

Tokens are forged here with PyJWT to hit each check of the receiver (algorithm,
signature, iat window, jti, email, name, phone); each refusal must come back to
the bridge's remote logout URL with ``kind=error`` like Zendesk does. The last
test runs the real demo configuration (``write_demo_config``) with the demo
Zendesk mounted at ``/_demo/zendesk`` and walks the whole loop.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import pytest

from bridge.app import create_app
from bridge.demo.run import DEMO_ZENDESK_SLUG, DEMO_ZENDESK_SUBDOMAIN, write_demo_config
from bridge.demo.zendesk import create_demo_zendesk
from bridge.settings import load_settings
from tests.support.bridge import Harness, hidden_fields, running_bridge
from tests.support.servers import free_port, serve

SECRET = "demo-desk-shared-secret-0123456789abcdef"
DESK = f"""
name = "Demo Desk"
profile = "zendesk"
subdomain = "acme"
shared_secret = "{SECRET}"
"""


@dataclass
class Setup:
    bridge: Harness
    zendesk: str

    @property
    def jwt_url(self) -> str:
        return f"{self.zendesk}/acme/access/jwt"


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, database_url: str) -> Iterator[Setup]:
    tmp: Path = tmp_path_factory.mktemp("zendesk-demo")
    port = free_port()
    zendesk = f"http://127.0.0.1:{port}"
    extra = f'zendesk_base_url = "{zendesk}/{{subdomain}}"'
    with ExitStack() as stack:
        h = stack.enter_context(
            running_bridge(tmp, database_url, registrations={"acme-desk": DESK}, extra=extra)
        )

        # By slug: the shared test database also holds other modules' registrations.
        def secret(subdomain: str) -> str | None:
            return SECRET if subdomain == "acme" else None

        def remote_login_url(subdomain: str) -> str | None:
            return f"{h.url}/zendesk/acme-desk" if subdomain == "acme" else None

        stack.enter_context(serve(create_demo_zendesk(secret, remote_login_url), port=port))
        yield Setup(bridge=h, zendesk=zendesk)


def claims(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "iat": int(time.time()),
        "jti": secrets.token_urlsafe(16),
        "email": "jane.doe@example.org",
        "name": "Jane Doe",
        "external_id": "23210",
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def sign(payload: dict[str, Any], key: str = SECRET, alg: str = "HS256") -> str:
    return jwt.encode(payload, key, algorithm=alg, headers={"typ": "JWT"})


def unsigned(payload: dict[str, Any]) -> str:
    def part(data: dict[str, Any]) -> str:
        raw = json.dumps(data, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    return f"{part({'typ': 'JWT', 'alg': 'none'})}.{part(payload)}."


def refusal(setup: Setup, token: str) -> str:
    """Post ``token``; assert Zendesk-style redirect to the bridge; return the message."""
    response = httpx.post(setup.jwt_url, data={"jwt": token})
    assert response.status_code == 302, response.text
    target = urlsplit(response.headers["location"])
    assert f"{target.scheme}://{target.netloc}{target.path}" == (
        f"{setup.bridge.url}/zendesk/acme-desk/logout"
    )
    query = parse_qs(target.query)
    assert query["kind"] == ["error"]
    return query["message"][0]


def test_a_good_token_signs_in_to_the_demo(setup: Setup) -> None:
    with httpx.Client() as browser:
        response = browser.post(setup.jwt_url, data={"jwt": sign(claims(phone="+12025550100"))})
        assert response.status_code == 303
        assert response.headers["location"] == "/acme/hc"
        page = browser.get(f"{setup.zendesk}/acme/hc")
    assert page.status_code == 200
    assert "Demo Zendesk — Help Center" in page.text
    assert "Signed in as <strong>Jane Doe</strong>" in page.text
    assert "+12025550100" in page.text


@pytest.mark.parametrize(
    ("make_token", "expected"),
    [
        (lambda: unsigned(claims()), "only HS256"),
        (lambda: sign(claims(), key=SECRET * 2, alg="HS512"), "only HS256"),
        (
            lambda: sign(claims(), key="not-the-shared-secret-0123456789abcdef"),
            "Invalid JWT signature",
        ),
        (lambda: sign(claims(iat=int(time.time()) - 600)), "expired"),
        (lambda: sign(claims(iat=int(time.time()) + 600)), "expired"),
        (lambda: sign(claims(iat="1700000000")), "iat"),
        (lambda: sign(claims(jti=None)), "jti"),
        (lambda: sign(claims(email=None)), "valid email"),
        (lambda: sign(claims(email="not-an-email")), "valid email"),
        (lambda: sign(claims(name="  ")), "name"),
        (lambda: sign(claims(phone="(202) 555-0143")), "E.164"),
        (lambda: "garbage", "could not be read"),
    ],
)
def test_the_demo_refuses_what_zendesk_refuses(
    setup: Setup, make_token: Callable[[], str], expected: str
) -> None:
    # Signed when the test runs, not when pytest collects: "iat" must be fresh.
    assert expected in refusal(setup, make_token())


def test_a_replayed_jti_is_refused(setup: Setup) -> None:
    token = sign(claims())
    assert httpx.post(setup.jwt_url, data={"jwt": token}).status_code == 303
    assert "already been used" in refusal(setup, token)


def test_jwt_by_get_is_not_accepted(setup: Setup) -> None:
    assert httpx.get(setup.jwt_url, params={"jwt": sign(claims())}).status_code == 405


def test_help_center_sends_strangers_to_the_remote_login_url(setup: Setup) -> None:
    response = httpx.get(f"{setup.zendesk}/acme/hc/en-us/articles/1?x=1")
    assert response.status_code == 302
    target = urlsplit(response.headers["location"])
    assert f"{target.scheme}://{target.netloc}{target.path}" == (
        f"{setup.bridge.url}/zendesk/acme-desk"
    )
    query = parse_qs(target.query)
    assert query["return_to"] == [f"{setup.zendesk}/acme/hc/en-us/articles/1?x=1"]
    assert set(query) == {"return_to", "brand_id", "locale_id", "timestamp"}


@pytest.mark.parametrize("page", ["access/normal", "access/sso_bypass"])
def test_fallback_pages_exist_and_say_they_are_a_demo(setup: Setup, page: str) -> None:
    response = httpx.get(f"{setup.zendesk}/acme/{page}")
    assert response.status_code == 200
    assert "Not the real Zendesk" in response.text


def test_unknown_subdomain_is_a_404(setup: Setup) -> None:
    assert httpx.get(f"{setup.zendesk}/nobody/hc").status_code == 404


def test_the_demo_bridge_mounts_the_demo_zendesk_and_the_loop_closes(tmp_path: Path) -> None:
    port = free_port()
    settings = load_settings(write_demo_config(tmp_path / "demo", port), env={}, allow_demo=True)
    assert settings.demo
    with serve(create_app(settings), port=port) as url, httpx.Client(timeout=30) as browser:
        hc = f"{url}/_demo/zendesk/{DEMO_ZENDESK_SUBDOMAIN}/hc"
        response = browser.get(hc)
        assert response.headers["location"].startswith(f"{url}/zendesk/{DEMO_ZENDESK_SLUG}?")
        response = browser.get(response.headers["location"])
        login_page = browser.get(url + response.headers["location"])
        signed_in = browser.post(
            f"{url}/login",
            data={**hidden_fields(login_page.text), "username": "jdoe", "password": "password1"},
        )
        response = browser.get(url + signed_in.headers["location"])  # /zendesk/continue
        form = browser.get(url + response.headers["location"])
        assert form.status_code == 200
        action = re.search(r'<form id="zendesk-jwt"[^>]*action="([^"]+)"', form.text)
        assert action is not None
        assert action.group(1) == f"{url}/_demo/zendesk/{DEMO_ZENDESK_SUBDOMAIN}/access/jwt"
        received = browser.post(action.group(1), data=hidden_fields(form.text))
        assert received.status_code == 303
        assert received.headers["location"] == hc
        page = browser.get(hc)
        assert "Signed in as <strong>Jane Doe</strong>" in page.text
        signed_out = browser.get(f"{url}/_demo/zendesk/{DEMO_ZENDESK_SUBDOMAIN}/access/logout")
        bridge_logout = browser.get(signed_out.headers["location"])
        assert bridge_logout.status_code == 200
        assert "You are signed out" in bridge_logout.text
        again = browser.get(f"{url}/zendesk/{DEMO_ZENDESK_SLUG}")
        assert again.headers["location"].startswith("/login")
