"""The sign-in page over real HTTP: a bridge and the iMIS simulator on loopback ports.

Covers what a member sees (the page, the outcomes of a sign-in) and SECURITY
D1-D6 and G1 for ``/login`` and ``/logout``. Each bridge here gets a database of
its own: failed sign-ins from 127.0.0.1 are counted per address, and must not
leak into (or in from) other test modules.
"""

from __future__ import annotations

import asyncio
import json
import logging
import statistics
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from starlette.requests import Request

from bridge import sessions
from bridge.settings import ConfigurationError, load_settings
from tests.support.bridge import Harness, running_bridge, write_config

PORTAL = """\
name = "Member Portal"
profile = "oidc"
client_id = "member-portal"
redirect_uris = ["http://127.0.0.1:9/callback"]
"""
UI = """\
[ui]
forgot_password_url = "https://imis.example.org/reset-password"
support_email = "help@example.org"
"""
#: Most tests sign in wrongly many times from one address; throttling has its own tests.
NO_THROTTLE = "[login]\nthrottle_free_failures = 100000\n"
WRONG = "The username or password is incorrect."


# --- helpers -----------------------------------------------------------------------


@dataclass
class Page:
    """What a person (or a screen reader) gets from one HTML response."""

    status: int
    text: str
    headers: httpx.Headers
    forms: list[dict[str, Any]] = field(default_factory=list)
    alerts: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    scripts: int = 0

    @property
    def form(self) -> dict[str, Any]:
        assert len(self.forms) == 1, self.forms
        return self.forms[0]

    @property
    def fields(self) -> dict[str, dict[str, str]]:
        return {i["name"]: i for i in self.form["inputs"] if "name" in i}

    def data(self, **values: str) -> dict[str, str]:
        """The form's hidden fields plus ``values``, as a browser would send them."""
        sent = {n: i.get("value", "") for n, i in self.fields.items() if i.get("type") == "hidden"}
        return {**sent, **values}


class _Reader(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict[str, Any]] = []
        self.alerts: list[str] = []
        self.labels: dict[str, str] = {}
        self.scripts = 0
        self._alert_depth = 0
        self._label_for: str | None = None
        self._depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self._depth += 1
        if tag == "form":
            self.forms.append({**a, "inputs": []})
        elif tag in {"input", "button"} and self.forms:
            self.forms[-1]["inputs"].append({"tag": tag, **a})
        elif tag == "script":
            self.scripts += 1
        elif tag == "label":
            self._label_for = a.get("for")
            self.labels[self._label_for or ""] = ""
        if a.get("role") == "alert":
            self._alert_depth = self._depth
            self.alerts.append("")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        self._depth -= 1

    def handle_endtag(self, tag: str) -> None:
        if self._depth == self._alert_depth:
            self._alert_depth = 0
        if tag == "label":
            self._label_for = None
        self._depth -= 1

    def handle_data(self, data: str) -> None:
        if self._alert_depth:
            self.alerts[-1] = " ".join((self.alerts[-1] + " " + data).split())
        if self._label_for is not None:
            self.labels[self._label_for] += data.strip()


def page(response: httpx.Response) -> Page:
    reader = _Reader()
    reader.feed(response.text)
    return Page(
        status=response.status_code,
        text=response.text,
        headers=response.headers,
        forms=reader.forms,
        alerts=reader.alerts,
        labels=reader.labels,
        scripts=reader.scripts,
    )


def create_pending(
    harness: Harness, registration: str = "member-portal", *, login_hint: str | None = None
) -> sessions.Pending:
    """A pending sign-in, made through the same function the flows use."""
    app = SimpleNamespace(state=SimpleNamespace(services=harness.services))
    request = Request({"type": "http", "app": app, "headers": []})
    coroutine = harness.services.sessions.create_pending(
        request, kind="oidc", registration=registration, params={}, login_hint=login_hint
    )
    # In a thread of its own: a browser test's Playwright already owns this thread's loop.
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def sign_in(
    client: httpx.Client, username: str, password: str, *, pending: str | None = None
) -> httpx.Response:
    """Open the sign-in page, fill in the form and send it, as a browser would."""
    query = {"request": pending} if pending else {}
    form = page(client.get("/login", params=query))
    return client.post("/login", data=form.data(username=username, password=password))


def session_cookie(harness: Harness, response: httpx.Response) -> str | None:
    name = sessions.cookie_name(harness.settings)
    for header in response.headers.get_list("set-cookie"):
        if header.startswith(f"{name}=") and not header.startswith(f'{name}=""'):
            return header
    return None


def imis_calls(harness: Harness) -> int:
    stats = harness.imis_stats()
    return int(stats["token_requests"]) + int(stats["api_requests"])


@pytest.fixture(scope="module")
def new_database_url(database_factory: Any) -> Any:
    """A function that makes a fresh, migrated database (SQLite or PostgreSQL)."""
    return database_factory.migrated_url


@contextmanager
def bridge_with(
    tmp: Path, new_database_url: Any, extra: str = "", **kwargs: Any
) -> Iterator[Harness]:
    with running_bridge(
        tmp, new_database_url(), registrations={"member-portal": PORTAL}, extra=extra, **kwargs
    ) as harness:
        yield harness


@pytest.fixture(scope="module")
def bridge(tmp_path_factory: pytest.TempPathFactory, new_database_url: Any) -> Iterator[Harness]:
    """One bridge for the tests that do not depend on throttling or faults."""
    with bridge_with(tmp_path_factory.mktemp("login"), new_database_url, UI + NO_THROTTLE) as h:
        yield h


@pytest.fixture
def client(bridge: Harness) -> Iterator[httpx.Client]:
    with bridge.client() as c:
        yield c


# --- the page ------------------------------------------------------------------------


def test_sign_in_page_names_the_association_and_the_app(
    bridge: Harness, client: httpx.Client
) -> None:
    pending = create_pending(bridge)
    shown = page(client.get("/login", params={"request": pending.raw_id}))

    assert shown.status == 200
    assert 'Sign in to <span class="app-name">Member Portal</span>' in shown.text
    assert "Contoso Association" in shown.text
    assert "<title>Sign in to Member Portal · Contoso Association</title>" in shown.text
    form = shown.form
    assert (form["method"], form["action"]) == ("post", "/login")
    assert set(shown.fields) == {"csrf_token", "request", "username", "password"}
    assert shown.fields["request"]["value"] == pending.raw_id
    assert shown.fields["username"]["autocomplete"] == "username"
    assert shown.fields["password"]["autocomplete"] == "current-password"
    assert shown.fields["password"]["type"] == "password"
    assert shown.labels == {"username": "Username", "password": "Password"}
    assert '<a href="https://imis.example.org/reset-password">Forgot your password?</a>' in (
        shown.text
    )
    assert "help@example.org" in shown.text
    assert shown.scripts == 0, "the sign-in page must work without JavaScript"
    assert shown.alerts == []


def test_sign_in_page_without_forgot_password_url_has_no_such_link(
    tmp_path: Path, new_database_url: Any
) -> None:
    with bridge_with(tmp_path, new_database_url) as harness, harness.client() as client:
        shown = page(client.get("/login"))
    assert shown.status == 200
    assert "Forgot your password?" not in shown.text
    assert "<h1>Sign in</h1>" in shown.text
    assert "request" not in shown.fields


def test_sign_in_subtitle_names_the_app_by_default(bridge: Harness, client: httpx.Client) -> None:
    pending = create_pending(bridge)
    shown = page(client.get("/login", params={"request": pending.raw_id}))
    subtitle = "Use your Contoso Association iMIS account to continue to Member Portal."
    assert f'<p class="lead">{subtitle}</p>' in shown.text
    with bridge.client() as fresh:  # the bridge's own sign-in: no app to name
        own = page(fresh.get("/login"))
    assert "continue to Contoso Association.</p>" in own.text


def test_sign_in_subtitle_is_set_in_ui(tmp_path: Path, new_database_url: Any) -> None:
    extra = '[ui]\nsign_in_subtitle = "Members of {organization} <b>sign in</b> to {app}"\n'
    with bridge_with(tmp_path, new_database_url, extra) as harness, harness.client() as client:
        pending = create_pending(harness)
        shown = page(client.get("/login", params={"request": pending.raw_id}))
    expected = "Members of Contoso Association &lt;b&gt;sign in&lt;/b&gt; to Member Portal"
    assert f'<p class="lead">{expected}</p>' in shown.text


@pytest.mark.parametrize(
    ("subtitle", "reason"),
    [
        ("Hello {name}", "unknown placeholder {name}: use {app} or {organization}"),
        ("Hello {}", "unknown placeholder {}: use {app} or {organization}"),
        ("{app.__class__}", "unknown placeholder {app.__class__}: use {app} or {organization}"),
        ("{app!r}", "placeholders take no format or conversion: write {app} or {organization}"),
        ("{app:>999}", "placeholders take no format or conversion: write {app} or {organization}"),
        ("Sign in {here", "has a lone '{' or '}': write {{ or }} for a brace"),
    ],
)
def test_sign_in_subtitle_placeholders_are_checked_at_load(
    tmp_path: Path, subtitle: str, reason: str
) -> None:
    folder = write_config(
        tmp_path,
        issuer="http://127.0.0.1:8000",
        database_url="sqlite:///bridge.db",
        imis_url="http://127.0.0.1:9",
        extra=f"[ui]\nsign_in_subtitle = {json.dumps(subtitle)}\n",
    )
    with pytest.raises(ConfigurationError) as caught:
        load_settings(folder, env={})
    assert [(p.key, p.reason) for p in caught.value.problems] == [("ui.sign_in_subtitle", reason)]


def test_login_hint_prefills_the_username(bridge: Harness, client: httpx.Client) -> None:
    pending = create_pending(bridge, login_hint="jdoe")
    shown = page(client.get("/login", params={"request": pending.raw_id}))
    assert shown.fields["username"]["value"] == "jdoe"
    assert "autofocus" in shown.fields["password"]


@pytest.mark.parametrize("raw_id", ["no-such-request", "x" * 500, ""])
def test_unknown_sign_in_request_gets_a_friendly_expired_page(
    client: httpx.Client, raw_id: str
) -> None:
    shown = page(client.get("/login", params={"request": raw_id}))
    assert shown.status == 400
    assert "This sign-in link has expired" in shown.text
    assert "Go back to the app" in shown.text
    assert shown.forms == []


def test_expired_sign_in_request_gets_the_expired_page(
    bridge: Harness, client: httpx.Client
) -> None:
    store = bridge.services.store
    raw = store.create_pending(
        kind="oidc",
        registration="member-portal",
        params={"p": {}},
        now=int(time.time()) - 3600,
        ttl_seconds=60,
    )
    assert page(client.get("/login", params={"request": raw})).status == 400
    form = page(client.get("/login"))
    posted = client.post(
        "/login", data=form.data(username="jdoe", password="password1", request=raw)
    )
    assert posted.status_code == 400
    assert "This sign-in link has expired" in posted.text
    assert session_cookie(bridge, posted) is None


# --- outcomes --------------------------------------------------------------------------


def test_sign_in_continues_the_pending_request(bridge: Harness, client: httpx.Client) -> None:
    pending = create_pending(bridge)
    response = sign_in(client, "jdoe", "password1", pending=pending.raw_id)
    assert response.status_code == 303
    assert response.headers["location"] == pending.continue_url
    assert session_cookie(bridge, response) is not None


def test_sign_in_without_pending_request_shows_who_is_signed_in(bridge: Harness) -> None:
    with bridge.client() as client:
        response = sign_in(client, "JDoe ", "password1")
        assert (response.status_code, response.headers["location"]) == (303, "/login")
        shown = page(client.get("/login"))
    assert shown.status == 200
    assert "You are signed in as <strong>Jane Doe</strong>" in shown.text
    assert (shown.form["method"], shown.form["action"]) == ("post", "/logout")
    assert "csrf_token" in shown.fields


def test_signed_in_browser_skips_the_form_for_a_new_request(bridge: Harness) -> None:
    with bridge.client() as client:
        assert sign_in(client, "bsmith", "password1").status_code == 303
        pending = create_pending(bridge)
        response = client.get("/login", params={"request": pending.raw_id})
    assert response.status_code == 303
    assert response.headers["location"] == pending.continue_url


def test_wrong_password_keeps_the_username_and_never_the_password(
    bridge: Harness, client: httpx.Client
) -> None:
    pending = create_pending(bridge)
    response = sign_in(client, "jdoe", "Not-The-Password-4417", pending=pending.raw_id)
    shown = page(response)
    assert shown.status == 401
    assert shown.alerts == [WRONG]
    assert shown.fields["username"]["value"] == "jdoe"
    assert shown.fields["username"]["aria-describedby"] == "login-error"
    assert shown.fields["password"]["aria-invalid"] == "true"
    assert shown.fields["password"]["aria-describedby"] == "login-error"
    assert "autofocus" in shown.fields["password"], "the person types the password again"
    assert "value" not in shown.fields["password"]
    assert "Not-The-Password-4417" not in response.text
    assert shown.fields["request"]["value"] == pending.raw_id, "the person can simply try again"
    assert session_cookie(bridge, response) is None


def test_organization_account_is_told_to_use_a_personal_account(
    bridge: Harness, client: httpx.Client
) -> None:
    response = sign_in(client, "contoso", "password1")
    shown = page(response)
    assert shown.status == 403
    assert shown.alerts == [
        "This is an organization's account; organizations cannot sign in. "
        "Sign in with your personal account."
    ]
    assert shown.fields["username"]["value"] == ""
    assert session_cookie(bridge, response) is None


def test_empty_fields_ask_for_username_and_password(bridge: Harness, client: httpx.Client) -> None:
    before = imis_calls(bridge)
    shown = page(sign_in(client, "jdoe", ""))
    assert shown.status == 400
    assert shown.alerts == ["Enter your username and password."]
    assert imis_calls(bridge) == before


# --- D1 CSRF ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"csrf_token": None}, id="missing-field"),
        pytest.param({"csrf_token": "A" * 43}, id="wrong-token"),
        pytest.param({"cookie": None}, id="missing-cookie"),
        pytest.param({"csrf_token": "short"}, id="malformed-token"),
    ],
)
def test_d1_sign_in_without_a_matching_csrf_token_is_refused(
    bridge: Harness, change: dict[str, Any]
) -> None:
    with bridge.client() as client:
        form = page(client.get("/login"))
        data = form.data(username="jdoe", password="password1")
        if "csrf_token" in change:
            data.pop("csrf_token")
            if change["csrf_token"] is not None:
                data["csrf_token"] = change["csrf_token"]
        if "cookie" in change:
            client.cookies.clear()
        before = imis_calls(bridge)
        response = client.post("/login", data=data)
    shown = page(response)
    assert shown.status == 400
    assert shown.alerts == ["Your session expired or the form was sent twice. Please try again."]
    assert session_cookie(bridge, response) is None, "no session may be started"
    assert imis_calls(bridge) == before, "iMIS is not asked"
    assert "csrf_token" in shown.fields, "a fresh form lets the person try again"


def test_d1_csrf_token_from_another_browser_is_refused(bridge: Harness) -> None:
    with bridge.client() as attacker, bridge.client() as victim:
        planted = page(attacker.get("/login")).data(username="jdoe", password="password1")
        victim.get("/login")
        response = victim.post("/login", data=planted)
    assert response.status_code == 400
    assert session_cookie(bridge, response) is None


def test_d1_two_tabs_share_one_csrf_token(bridge: Harness) -> None:
    with bridge.client() as client:
        first = page(client.get("/login"))
        second = page(client.get("/login"))
        assert first.data()["csrf_token"] == second.data()["csrf_token"]
        response = client.post("/login", data=first.data(username="jdoe", password="password1"))
    assert response.status_code == 303


def test_d1_sign_out_without_csrf_token_is_refused(bridge: Harness) -> None:
    with bridge.client() as client:
        assert sign_in(client, "jdoe", "password1").status_code == 303
        refused = page(client.post("/logout", data={}))
        assert refused.status == 400
        assert refused.alerts == [
            "Your session expired or the form was sent twice. Please try again."
        ]
        assert "You are signed in as" in page(client.get("/login")).text


def test_d1_sign_out_from_a_foreign_site_without_any_cookie_is_refused(
    client: httpx.Client,
) -> None:
    assert client.post("/logout", data={"csrf_token": "A" * 43}).status_code == 400


# --- D2 same answer for unknown user and wrong password ----------------------------------


def without(shown: Page, username: str) -> str:
    """The page minus what differs by design: the CSRF token and the username typed."""
    return shown.text.replace(shown.data()["csrf_token"], "").replace(username, "")


def test_d2_unknown_user_and_wrong_password_get_the_same_answer(bridge: Harness) -> None:
    def attempt(username: str) -> tuple[float, httpx.Response]:
        with bridge.client() as client:
            form = page(client.get("/login"))
            started = time.perf_counter()
            response = client.post("/login", data=form.data(username=username, password="nope-1"))
            return time.perf_counter() - started, response

    attempt("jdoe"), attempt("nobody-here")  # warm up connection pools
    known = [attempt("jdoe") for _ in range(7)]
    unknown = [attempt("nobody-here") for _ in range(7)]

    a, b = page(known[0][1]), page(unknown[0][1])
    assert a.status == b.status == 401
    assert a.alerts == b.alerts == [WRONG]
    assert without(a, "jdoe") == without(b, "nobody-here")
    median_known = statistics.median(t for t, _ in known)
    median_unknown = statistics.median(t for t, _ in unknown)
    assert abs(median_known - median_unknown) < max(0.05, 0.5 * min(median_known, median_unknown))


# --- D4 session cookie -----------------------------------------------------------------


def test_d4_session_cookie_is_a_random_id_with_safe_attributes(bridge: Harness) -> None:
    cookies = []
    for _ in range(2):
        with bridge.client() as client:
            cookies.append(session_cookie(bridge, sign_in(client, "jdoe", "password1")))
    first, second = cookies
    assert first is not None
    assert second is not None
    attributes = [part.strip().lower() for part in first.split(";")]
    value = attributes[0].split("=", 1)[1]
    assert first.startswith("bridge-session="), "http issuer: no __Host- prefix possible"
    assert "httponly" in attributes
    assert "samesite=lax" in attributes
    assert "path=/" in attributes
    assert not any(a.startswith("domain=") for a in attributes)
    # A browser-session cookie: it dies with the browser; the server enforces the lifetime.
    assert not any(a.startswith(("max-age=", "expires=")) for a in attributes)
    assert len(value) >= 32
    assert value != second.split(";")[0].split("=", 1)[1]
    for identity_part in ("jdoe", "23210", "jane", "doe", "example"):
        assert identity_part not in value.lower()


def test_d4_sign_out_ends_the_session_on_the_server(bridge: Harness) -> None:
    name = sessions.cookie_name(bridge.settings)
    with bridge.client() as client:
        assert sign_in(client, "jdoe", "password1").status_code == 303
        stolen = client.cookies[name]
        signed_in = page(client.get("/login"))
        signed_out = client.post("/logout", data=signed_in.data())
        assert signed_out.status_code == 200
        assert "You are signed out" in signed_out.text
        assert any(h.startswith(f'{name}=""') for h in signed_out.headers.get_list("set-cookie"))
    with bridge.client(cookies={name: stolen}) as replay:
        shown = page(replay.get("/login"))
    assert "You are signed in" not in shown.text
    assert shown.fields["username"]["value"] == ""


# --- D5 headers --------------------------------------------------------------------------


def test_d5_every_login_response_is_unframeable_and_not_cached(
    bridge: Harness, client: httpx.Client
) -> None:
    pending = create_pending(bridge)
    responses = {
        "form": client.get("/login", params={"request": pending.raw_id}),
        "expired": client.get("/login", params={"request": "gone"}),
        "wrong password": sign_in(client, "jdoe", "nope-2"),
        "bad form": client.post(
            "/login", content=b"{}", headers={"content-type": "application/json"}
        ),
        "signed in": sign_in(client, "jdoe", "password1"),
        "signed-in page": client.get("/login"),
    }
    for what, response in responses.items():
        headers = response.headers
        assert "frame-ancestors 'none'" in headers["content-security-policy"], what
        assert "script-src" not in headers["content-security-policy"], what
        assert headers["x-frame-options"] == "DENY", what
        assert headers["x-content-type-options"] == "nosniff", what
        assert headers["cache-control"] == "no-store", what
        assert headers["referrer-policy"] == "no-referrer", what


# --- D6 logs -----------------------------------------------------------------------------


def test_d6_no_password_reaches_any_log_record(
    bridge: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "Secret-Guess-8812"
    with bridge.client() as client:
        sign_in(client, "jdoe", wrong)
        sign_in(client, "nobody-at-all", wrong)
        sign_in(client, "disabled", "password1")
        sign_in(client, "contoso", "password1")
        pending = create_pending(bridge)
        sign_in(client, "jdoe", "password1", pending=pending.raw_id)
    texts = [f"{r.getMessage()} {r.args!r} {r.exc_text or ''}" for r in caplog.records]
    assert texts, "sign-ins are logged"
    for text in texts:
        assert wrong not in text
        assert "password1" not in text
        assert "service-password" not in text
    messages = [r.getMessage() for r in caplog.records if r.name == "bridge.login"]
    assert any("sign-in ok" in m and "'jdoe'" in m and "member-portal" in m for m in messages)
    assert any("wrong credentials" in m and "'nobody-at-all'" in m for m in messages)


# --- malformed input (G5 on /login) ---------------------------------------------------------


URLENCODED = "application/x-www-form-urlencoded"
MULTIPART = b"--x\r\nContent-Disposition: form-data; name=username\r\n\r\njdoe\r\n--x--\r\n"


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        pytest.param(b'{"username": "jdoe"}', "application/json", id="json"),
        pytest.param(b"username=jdoe&password=\xff\xfe", URLENCODED, id="raw-bad-utf8"),
        pytest.param(b"username=jdoe&password=%ff%fe", URLENCODED, id="escaped-bad-utf8"),
        pytest.param(b"username=jdoe&username=bsmith&password=x", URLENCODED, id="duplicate"),
        pytest.param(b"&".join(b"f%d=1" % i for i in range(100)), URLENCODED, id="many-fields"),
        pytest.param(b"username=" + b"a" * 300 + b"&password=x", URLENCODED, id="long-username"),
        pytest.param(b"username=jdoe&password=" + b"p" * 2000, URLENCODED, id="long-password"),
        pytest.param(b"username=j%00doe&password=x", URLENCODED, id="nul-in-username"),
        pytest.param(MULTIPART, "multipart/form-data; boundary=x", id="multipart"),
        pytest.param(b"username=jdoe", "", id="no-content-type"),
    ],
)
def test_malformed_sign_in_bodies_get_400_without_asking_imis(
    bridge: Harness, client: httpx.Client, body: bytes, content_type: str
) -> None:
    form = page(client.get("/login"))
    token = form.data()["csrf_token"].encode()
    before = imis_calls(bridge)
    headers = {"content-type": content_type} if content_type else {}
    response = client.post("/login", content=body + b"&csrf_token=" + token, headers=headers)
    assert response.status_code == 400
    assert "Traceback" not in response.text
    assert imis_calls(bridge) == before


def test_oversized_body_gets_413(client: httpx.Client) -> None:
    response = client.post(
        "/login",
        content=b"username=" + b"a" * 70_000,
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 413


def test_request_parameter_twice_gets_400(client: httpx.Client) -> None:
    assert client.get("/login?request=a&request=b").status_code == 400


# --- D3 throttling -----------------------------------------------------------------------

THROTTLE = (
    "[login]\nthrottle_free_failures = 2\nthrottle_base_seconds = 2\nthrottle_max_seconds = 2\n"
)


@pytest.fixture
def strict(tmp_path: Path, new_database_url: Any) -> Iterator[Harness]:
    """A bridge that throttles after 2 failures: 2 s after each further failure.

    (Failure times are whole seconds, so a 1 s delay could pass in a moment.)
    """
    with bridge_with(tmp_path, new_database_url, THROTTLE) as harness:
        yield harness


def test_d3_throttled_attempt_gets_429_with_retry_after_and_imis_is_not_asked(
    strict: Harness,
) -> None:
    with strict.client() as client:
        assert sign_in(client, "jdoe", "guess-1").status_code == 401
        assert sign_in(client, "JDOE", "guess-2").status_code == 401  # same person, any case
        before = imis_calls(strict)
        response = sign_in(client, "jdoe", "password1")
    shown = page(response)
    assert shown.status == 429
    assert int(response.headers["retry-after"]) >= 1
    assert len(shown.alerts) == 1
    assert shown.alerts[0].startswith("Too many unsuccessful sign-in attempts.")
    assert shown.fields["username"]["value"] == "jdoe"
    assert imis_calls(strict) == before
    assert session_cookie(strict, response) is None


def test_d3_no_hard_lockout_and_success_clears_the_username(strict: Harness) -> None:
    with strict.client() as client:
        for guess in ("guess-1", "guess-2", "guess-3"):
            response = sign_in(client, "bsmith", guess)
            if response.status_code == 429:
                time.sleep(int(response.headers["retry-after"]))
                response = sign_in(client, "bsmith", guess)
            assert response.status_code == 401
        throttled = sign_in(client, "bsmith", "password1")
        assert throttled.status_code == 429
        time.sleep(int(throttled.headers["retry-after"]))
        assert sign_in(client, "bsmith", "password1").status_code == 303
        # Cleared: the next mistake is an ordinary one, not a wait.
        assert sign_in(client, "bsmith", "guess-4").status_code == 401


def test_d3_one_address_guessing_many_usernames_is_throttled(strict: Harness) -> None:
    free = strict.settings.login.throttle_free_failures * 5
    with strict.client() as client:
        for i in range(free):
            response = sign_in(client, f"spray-{i}", "Winter2026!")
            if response.status_code == 429:
                time.sleep(int(response.headers["retry-after"]))
                response = sign_in(client, f"spray-{i}", "Winter2026!")
            assert response.status_code == 401, i
        response = sign_in(client, "another-name", "Winter2026!")
    assert response.status_code == 429


# --- G1 iMIS faults ---------------------------------------------------------------------------

FAST_FAILING = "[imis]\ntimeout = 1\nconnect_timeout = 1\nretries = 0\n" + NO_THROTTLE


@pytest.fixture(scope="module")
def flaky(tmp_path_factory: pytest.TempPathFactory, new_database_url: Any) -> Iterator[Harness]:
    with bridge_with(tmp_path_factory.mktemp("flaky"), new_database_url, FAST_FAILING) as h:
        yield h


@pytest.mark.parametrize(
    "fault",
    [
        pytest.param({"status": 500}, id="500"),
        pytest.param({"status": 503, "retry_after": 17}, id="503"),
        pytest.param({"timeout": True, "timeout_seconds": 5}, id="timeout"),
        pytest.param({"malformed_json": True}, id="garbage-json"),
    ],
)
def test_g1_imis_failure_gives_503_with_retry_after_and_no_session(
    flaky: Harness, fault: dict[str, Any]
) -> None:
    with flaky.client() as client:
        form = page(client.get("/login", params={"request": create_pending(flaky).raw_id}))
        flaky.set_faults(**fault)
        try:
            response = client.post("/login", data=form.data(username="jdoe", password="password1"))
        finally:
            flaky.clear_faults()
        shown = page(response)
        assert shown.status == 503
        assert int(response.headers["retry-after"]) >= 1
        assert shown.alerts == [
            "iMIS is unavailable right now, so we cannot check your password. "
            "Please try again in a few minutes."
        ]
        assert "incorrect" not in response.text.lower()
        assert session_cookie(flaky, response) is None
        assert shown.fields["username"]["value"] == "jdoe"
        # iMIS is back: the same form works.
        again = client.post("/login", data=shown.data(username="jdoe", password="password1"))
        assert again.status_code == 303
