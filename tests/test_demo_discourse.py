"""The demo forum, over real HTTP, against the Discourse profile's protocol functions.

The test plays the bridge with :func:`verify_request` and :func:`build_response`
(the bridge's routes are tested in tests/e2e/test_discourse_flow.py), and the
forum checks the answer as Discourse does.
"""

from __future__ import annotations

import json
import re
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from starlette.applications import Starlette

from bridge.app import create_app
from bridge.demo.discourse import (
    NONCE_SECONDS,
    DemoForumSettings,
    ForumError,
    mount_demo_forum,
    parse_answer,
)
from bridge.demo.run import DEMO_FORUM_SLUG, demo_app, write_demo_config
from bridge.profiles.discourse import (
    ConnectRefused,
    DiscourseOptions,
    build_response,
    encode_payload,
    failed_response,
    redirect_url,
    sign,
    verify_request,
)
from bridge.settings import load_settings
from tests.support.servers import free_port, serve

SECRET = "discourse-connect-secret-0123456789abcdef"
CLAIMS: dict[str, Any] = {
    "sub": "23210",
    "name": "Jane Doe",
    "email": "jane.doe@example.org",
    "username": "jdoe",
    "groups": "members,board",
}


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Forum:
    """A demo forum on a loopback port, and the registration the bridge would have for it."""

    origin: str
    connect_url: str
    options: DiscourseOptions
    clock: Clock

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.origin, follow_redirects=False, timeout=30)


@contextmanager
def _serve_forum(secret: str = SECRET) -> Iterator[Forum]:
    port = free_port()
    origin = f"http://127.0.0.1:{port}"
    connect_url = f"{origin}/discourse/forum"  # the bridge's URL: not served here
    settings = DemoForumSettings(
        connect_url=connect_url, secret=secret, logout_redirect=f"{connect_url}/logout"
    )
    clock = Clock()
    app = Starlette(routes=[mount_demo_forum({"forum": settings}.get, clock=clock)])
    options = DiscourseOptions(
        discourse_url=f"{origin}/_demo/discourse/forum", connect_secret=SECRET
    )
    with serve(app, port=port):
        yield Forum(origin, connect_url, options, clock)


@pytest.fixture(scope="module")
def forum() -> Iterator[Forum]:
    with _serve_forum() as found:
        yield found


@pytest.fixture
def client(forum: Forum) -> Iterator[httpx.Client]:
    with forum.client() as browser:
        yield browser


def _ask(forum: Forum, client: httpx.Client, query: str = "") -> tuple[str, str]:
    """Log In on the demo forum; the (sso, sig) it sends the browser to the bridge with."""
    response = client.get(f"/_demo/discourse/forum/session/sso{query}")
    assert response.status_code == 302
    location = response.headers["location"]
    assert location.startswith(forum.connect_url + "?sso=")
    params = parse_qs(urlsplit(location).query)
    return params["sso"][0], params["sig"][0]


def _request(forum: Forum, client: httpx.Client, query: str = "") -> Any:
    return verify_request(*_ask(forum, client, query), forum.options)


def _answer(forum: Forum, client: httpx.Client, sso: str, sig: str) -> httpx.Response:
    url = f"{forum.origin}/_demo/discourse/forum/session/sso_login"
    return client.get(redirect_url(url, sso, sig))


def _build(forum: Forum, nonce: str, *, verified: bool = True) -> tuple[str, str]:
    return build_response(CLAIMS, nonce, forum.options, emails_verified=verified)


def test_the_whole_loop_signs_the_member_in(forum: Forum, client: httpx.Client) -> None:
    home = client.get("/_demo/discourse/forum/")
    assert home.status_code == 200
    assert "Log In" in home.text
    request = _request(forum, client)
    assert re.fullmatch(r"[0-9a-f]{32}", request.nonce)
    assert request.return_sso_url == f"{forum.origin}/_demo/discourse/forum/session/sso_login"
    assert not request.prompt_none
    sso, sig = _build(forum, request.nonce, verified=False)
    back = client.get(redirect_url(request.return_sso_url, sso, sig))
    assert back.status_code == 302
    assert back.headers["location"] == "/_demo/discourse/forum/"
    page = client.get("/_demo/discourse/forum/")
    assert "Welcome, Jane Doe" in page.text
    for value in ("23210", "jane.doe@example.org", "jdoe", "members,board", "require_activation"):
        assert value in page.text


def test_e7_a_forum_with_another_secret_gets_no_answer() -> None:
    with (
        _serve_forum(secret="x" * 40) as other,
        other.client() as browser,
        pytest.raises(ConnectRefused) as caught,
    ):
        _request(other, browser)
    assert caught.value.reason == "bad_signature"


def test_prompt_none_reaches_the_bridge_and_failed_is_shown(
    forum: Forum, client: httpx.Client
) -> None:
    request = _request(forum, client, "?prompt=none")
    assert request.prompt_none
    back = _answer(forum, client, *failed_response(request.nonce, forum.options))
    assert back.status_code == 302
    page = client.get(back.headers["location"])
    assert "failed=true" in page.text
    assert "Welcome" not in page.text


def test_a_replayed_answer_is_refused(forum: Forum, client: httpx.Client) -> None:
    answer = _build(forum, _request(forum, client).nonce)
    assert _answer(forum, client, *answer).status_code == 302
    again = _answer(forum, client, *answer)
    assert again.status_code == 400
    assert "Nonce has already been used" in again.text


def test_an_answer_with_an_unknown_nonce_is_refused(forum: Forum, client: httpx.Client) -> None:
    _ask(forum, client)
    refused = _answer(forum, client, *_build(forum, "f" * 32))
    assert refused.status_code == 400
    assert "Nonce is incorrect" in refused.text


def test_an_answer_in_another_browser_is_refused(forum: Forum, client: httpx.Client) -> None:
    nonce = _request(forum, client).nonce
    with forum.client() as other:
        _ask(forum, other)  # the other browser has its own forum cookie, not this nonce
        refused = _answer(forum, other, *_build(forum, nonce))
    assert refused.status_code == 400
    assert "different browser session" in refused.text
    assert _answer(forum, client, *_build(forum, nonce)).status_code == 302


def test_an_answer_after_ten_minutes_is_refused(forum: Forum, client: httpx.Client) -> None:
    nonce = _request(forum, client).nonce
    forum.clock.now += NONCE_SECONDS + 1
    refused = _answer(forum, client, *_build(forum, nonce))
    assert refused.status_code == 400
    assert "expired" in refused.text


def test_a_tampered_answer_is_refused(forum: Forum, client: httpx.Client) -> None:
    nonce = _request(forum, client).nonce
    sso, sig = _build(forum, nonce)
    forged = encode_payload([("nonce", nonce), ("external_id", "1"), ("email", "x@y")])
    refused = _answer(forum, client, forged, sig)
    assert refused.status_code == 400
    assert "Bad signature for payload" in refused.text
    # The nonce was not spent on the forgery: the genuine answer still works.
    assert _answer(forum, client, sso, sig).status_code == 302


def test_an_answer_without_external_id_is_refused(forum: Forum, client: httpx.Client) -> None:
    nonce = _request(forum, client).nonce
    sso = encode_payload([("nonce", nonce), ("email", "jane.doe@example.org")])
    refused = _answer(forum, client, sso, sign(sso, SECRET))
    assert refused.status_code == 400
    assert "external_id is blank" in refused.text


def test_e8_the_demo_refuses_an_answer_granting_staff_powers(
    forum: Forum, client: httpx.Client
) -> None:
    nonce = _request(forum, client).nonce
    fields = [("nonce", nonce), ("external_id", "1"), ("email", "a@b"), ("admin", "true")]
    sso = encode_payload(fields)
    refused = _answer(forum, client, sso, sign(sso, SECRET))
    assert refused.status_code == 400
    assert "admin" in refused.text
    assert "Welcome" not in client.get("/_demo/discourse/forum/").text


def test_log_out_goes_to_the_logout_redirect(forum: Forum, client: httpx.Client) -> None:
    _answer(forum, client, *_build(forum, _request(forum, client).nonce))
    assert "Welcome" in client.get("/_demo/discourse/forum/").text
    out = client.get("/_demo/discourse/forum/session/logout")
    assert out.status_code == 302
    assert out.headers["location"] == f"{forum.connect_url}/logout"
    assert "Welcome" not in client.get("/_demo/discourse/forum/").text


def test_return_path_stays_on_the_forum(forum: Forum, client: httpx.Client) -> None:
    nonce = _request(forum, client, "?return_path=//evil.example/x").nonce
    back = _answer(forum, client, *_build(forum, nonce))
    assert back.headers["location"] == "/_demo/discourse/forum/"
    nonce = _request(forum, client, "?return_path=/t/welcome/1").nonce
    back = _answer(forum, client, *_build(forum, nonce))
    assert back.headers["location"] == "/_demo/discourse/forum/t/welcome/1"


def test_an_unknown_forum_is_404(client: httpx.Client) -> None:
    assert client.get("/_demo/discourse/nope/").status_code == 404


def test_parse_answer_refuses_what_discourse_refuses() -> None:
    sso = encode_payload([("nonce", "n"), ("external_id", "1")])
    assert parse_answer(sso, sign(sso, SECRET), SECRET)["external_id"] == "1"
    with pytest.raises(ForumError, match="Base64 encoded"):
        parse_answer(sso + "%", sign(sso, SECRET), SECRET)
    with pytest.raises(ForumError, match="Bad signature"):
        parse_answer(sso, sign(sso, "y" * 40), SECRET)
    with pytest.raises(ForumError, match="Bad signature"):
        parse_answer(sso, None, SECRET)


# --- in `bridge demo` ------------------------------------------------------------------------


def test_the_demo_config_registers_the_demo_forum(tmp_path: Path) -> None:
    folder = write_demo_config(tmp_path / "demo", 8123)
    forum = (folder / "registrations" / f"{DEMO_FORUM_SLUG}.toml").read_text()
    assert 'profile = "discourse"' in forum
    assert f'discourse_url = "http://127.0.0.1:8123/_demo/discourse/{DEMO_FORUM_SLUG}"' in forum
    secrets_file = folder / "secrets.json"
    assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
    secret = json.loads(secrets_file.read_text())["discourse_secret"]
    assert re.fullmatch(r"[0-9a-f]{64}", secret)
    assert f'connect_secret = "{secret}"' in forum
    settings = load_settings(folder, env={}, allow_demo=True)  # the real loader accepts it
    assert settings.demo


def test_an_older_demo_folder_gets_a_connect_secret_and_keeps_its_others(tmp_path: Path) -> None:
    folder = tmp_path / "demo"
    folder.mkdir()
    (folder / "secrets.json").write_text(json.dumps({"zendesk_secret": "kept-" + "z" * 40}))
    write_demo_config(folder, 8123)
    kept = json.loads((folder / "secrets.json").read_text())
    assert kept["zendesk_secret"] == "kept-" + "z" * 40
    assert re.fullmatch(r"[0-9a-f]{64}", kept["discourse_secret"])
    assert stat.S_IMODE((folder / "secrets.json").stat().st_mode) == 0o600
    write_demo_config(folder, 8123)  # and keeps it from then on
    assert json.loads((folder / "secrets.json").read_text()) == kept


def test_the_demo_app_serves_the_forum_of_its_discourse_registration(tmp_path: Path) -> None:
    """``bridge demo``'s app: forum ``demo-forum`` plays the registration's forum, with its
    connect URL and current secret; no other slug is a forum."""
    port = free_port()
    settings = load_settings(write_demo_config(tmp_path / "demo", port), env={}, allow_demo=True)
    app = demo_app(settings, create_app)
    with serve(app, port=port) as url, httpx.Client(base_url=url, timeout=30) as browser:
        start = browser.get(f"/_demo/discourse/{DEMO_FORUM_SLUG}/session/sso")
        assert start.status_code == 302
        connect = start.headers["location"]
        assert connect.startswith(f"{url}/discourse/{DEMO_FORUM_SLUG}?sso=")
        to_login = browser.get(connect)  # the bridge verified the forum's signature
        assert to_login.status_code == 303
        assert to_login.headers["location"].startswith("/login?request=")
        for slug in ("demo-helpdesk", "demo-client", "nope"):
            missing = browser.get(f"/_demo/discourse/{slug}/")
            assert missing.status_code == 404
            assert "No such forum" in missing.text
