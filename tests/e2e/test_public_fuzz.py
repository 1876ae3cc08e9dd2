"""SECURITY G5: Hypothesis fuzzes every public endpoint and form of a real bridge over loopback.

Every route the app serves (but the admin JSON API, which
``tests/e2e/test_admin_api_fuzz.py`` fuzzes from its OpenAPI document) gets
generated requests over a raw socket (:mod:`tests.support.fuzzing`), so nothing
is tidied on the way: random methods, query strings and form bodies (real
parameter names among random ones, repeats, any Unicode, control characters,
values of thousands of characters), bad UTF-8 in the path, the query, the body,
cookies and headers, bodies over the limit (declared, and chunked ones that run
on), huge and numerous headers, odd content types and charsets, forged session,
CSRF, device and admin cookies, garbage ``Authorization`` headers, NUL in every
parameter at once; and past the first checks: forms with real client
credentials, userinfo with a real token, sign-in requests of the registered apps
(OIDC, Zendesk, Discourse signed with the real secret) with fuzzed parameters,
with and without a session, and the admin pages' forms behind a real admin
sign-in.

Each answer must be complete and below 500 (no 503 either: iMIS and the
database are up), the bridge must still serve a normal request after each test,
and its log (the bridge's and uvicorn's loggers) must hold no ERROR line and no
traceback. Every test runs a fixed number of examples, derandomized, so a run
is reproducible; the whole module takes well under a minute (``SCALE`` below runs
more). Not Schemathesis: this surface is browser forms, redirects and OAuth
endpoints with no schema of its own to check answers against, and the bytes
that matter most (bad UTF-8, lying lengths) are below what an OpenAPI document
describes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import logging
import os
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlencode, urlsplit

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.admin.api import PREFIX as ADMIN_API
from bridge.metrics import route_templates
from bridge.middleware import MAX_BODY_BYTES, MAX_HEADER_BYTES
from tests.conftest import DatabaseFactory
from tests.oauth.rp import Rp, http_client, new_browser
from tests.support.bridge import Harness, running_bridge, sign_in
from tests.support.fuzzing import (
    CONTENT_TYPES,
    METHODS,
    PARAMETER_NAMES,
    Answer,
    bad_utf8,
    encode_pairs,
    exchange,
    garbage_header_value,
    long_text,
    pairs,
    percent_bytes,
    request_bytes,
    unicode_text,
    values,
)
from tests.support.leaks import register

RP_SECRET = "fuzz-rp-secret-0123456789abcdef"
DESK_SECRET = "fuzz-desk-shared-secret-0123456789abcdef"
FORUM_SECRET = "fuzz-forum-connect-secret-0123456789"
CALLBACK = "https://rp.example.org/cb"
FORUM_URL = "https://forum.example.org"

REGISTRATIONS = {
    "fuzz-rp": f"""
        name = "Fuzzed RP"
        profile = "oidc"
        client_id = "fuzz-rp"
        client_secret = "{RP_SECRET}"
        redirect_uris = ["{CALLBACK}"]
        post_logout_redirect_uris = ["https://rp.example.org/logged-out"]
        scopes = ["openid", "profile", "email", "phone", "offline_access"]
    """,
    "fuzz-public": """
        name = "Fuzzed public client"
        profile = "oidc"
        client_id = "fuzz-public"
        redirect_uris = ["http://127.0.0.1/cb"]
        scopes = ["openid"]
    """,
    "fuzz-desk": f"""
        name = "Fuzzed Helpdesk"
        profile = "zendesk"
        subdomain = "fuzzed"
        shared_secret = "{DESK_SECRET}"
    """,
    "fuzz-forum": f"""
        name = "Fuzzed Forum"
        profile = "discourse"
        discourse_url = "{FORUM_URL}"
        connect_secret = "{FORUM_SECRET}"
    """,
}
#: Stored (not file) registrations, one per profile: the admin forms may change them.
STORED = ("stored-rp", "stored-desk", "stored-forum")
#: No throttling in the way of the fuzzer's many failed sign-ins (they still count),
#: nor of the sign-ins of the fixtures that follow them.
EXTRA = """
[login]
throttle_free_failures = 1000000
"""
SLUGS = (*REGISTRATIONS, *STORED, "continue", "no-such-slug")

#: Every route, as a template ({slug} filled by the fuzzer). The admin JSON API is left
#: to test_admin_api_fuzz.py; test_g5_every_route_of_the_app_is_fuzzed keeps this complete.
ROUTES = (
    "/healthz",
    "/readyz",
    "/metrics",
    "/.well-known/openid-configuration",
    "/.well-known/jwks.json",
    "/authorize",
    "/authorize/continue",
    "/token",
    "/userinfo",
    "/revoke",
    "/introspect",
    "/end_session",
    "/login",
    "/logout",
    "/static",
    "/static/bridge.css",
    "/static/admin.css",
    "/static/admin_copy.js",
    "/static/zendesk_autopost.js",
    "/static/../bridge/app.py",
    "/static/%2e%2e/app.py",
    "/zendesk",
    "/zendesk/continue",
    "/zendesk/{slug}",
    "/zendesk/{slug}/logout",
    "/discourse",
    "/discourse/continue",
    "/discourse/{slug}",
    "/discourse/{slug}/logout",
    "/admin",
    "/admin/continue",
    "/admin/reauth",
    "/admin/registrations",
    "/admin/registrations/new",
    "/admin/registrations/{slug}",
    "/admin/registrations/{slug}/edit",
    "/admin/registrations/{slug}/enabled",
    "/admin/registrations/{slug}/rotate-secret",
    "/admin/registrations/{slug}/delete",
    "/admin/registrations/{slug}/test",
    "/admin/endpoints",
    "/admin/audit",
    "/admin/statistics",
    "/admin/keys",
    "/admin/keys/rotate",
    "/",
    "/nowhere",
)
#: The routes that read a form body.
FORM_ROUTES = (
    "/authorize",
    "/token",
    "/userinfo",
    "/revoke",
    "/introspect",
    "/end_session",
    "/login",
    "/logout",
)
#: The cookies the bridge reads (its issuer is http, so no ``__Host-`` prefix).
COOKIES = ("bridge-session", "bridge-csrf", "bridge-device", "bridge-admin")

pytestmark = pytest.mark.slow

#: A deeper run: BRIDGE_FUZZ_SCALE=10 runs ten times the examples, and BRIDGE_FUZZ_RANDOM=1
#: draws new ones each run (by default the same ones every run: a failure reproduces).
SCALE = float(os.environ.get("BRIDGE_FUZZ_SCALE", "1"))


def examples(count: int) -> int:
    return max(1, round(count * SCALE))


#: Examples per test: about 10 ms each, so the module stays well under a minute.
FUZZ = settings(
    max_examples=examples(100),
    deadline=None,
    derandomize=not os.environ.get("BRIDGE_FUZZ_RANDOM"),
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# --- the bridge, its log, and what a signed-in admin and client hold ------------------------------


@dataclass
class Known:
    """Real credentials of the running bridge, for requests that get past the first check."""

    access_token: str
    refresh_token: str
    #: A member's browser session (jdoe), and an administrator's (manager) with its grant.
    member_cookies: dict[str, str]
    admin_cookies: dict[str, str]
    csrf_token: str


@pytest.fixture(scope="module")
def bridge(
    tmp_path_factory: pytest.TempPathFactory, database_factory: DatabaseFactory
) -> Iterator[Harness]:
    """A database of its own: the fuzzer's thousands of failed sign-ins (as ``jdoe`` too)
    must not throttle the sign-ins of the modules that share the run's database."""
    tmp: Path = tmp_path_factory.mktemp("public-fuzz")
    database_url = database_factory.migrated_url()
    with running_bridge(tmp, database_url, registrations=REGISTRATIONS, extra=EXTRA) as harness:
        for slug, data in (
            (
                "stored-rp",
                {"profile": "oidc", "client_id": "stored-rp", "redirect_uris": [CALLBACK]},
            ),
            (
                "stored-desk",
                {"profile": "zendesk", "subdomain": "stored", "shared_secret": DESK_SECRET},
            ),
            (
                "stored-forum",
                {
                    "profile": "discourse",
                    "discourse_url": f"{FORUM_URL}/stored",
                    "connect_secret": FORUM_SECRET,
                },
            ),
        ):
            changed = harness.services.registrations.add(slug, {"name": slug, **data}, actor="test")
            register(changed.generated_secret)
        yield harness


class ServerLog(logging.Handler):
    """Keeps what the bridge and uvicorn log at WARNING or above while the module runs."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def problems(self) -> list[str]:
        """ERROR lines and tracebacks (uvicorn's warnings about invalid requests are fine)."""
        found = []
        for record in self.records:
            text = self.format(record)
            if record.levelno >= logging.ERROR or record.exc_info or "Traceback" in text:
                found.append(text)
        return found


@pytest.fixture(scope="module")
def server_log(bridge: Harness) -> Iterator[ServerLog]:
    # After the servers started: uvicorn's logging set-up replaces the handlers of its
    # own loggers, which do not propagate to the root logger.
    handler = ServerLog()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    loggers = [logging.getLogger(), logging.getLogger("uvicorn")]
    for logger in loggers:
        logger.addHandler(handler)
    yield handler
    for logger in loggers:
        logger.removeHandler(handler)


@pytest.fixture(scope="module")
def known(bridge: Harness) -> Known:
    with http_client() as http, new_browser(bridge) as browser:
        tokens = Rp(bridge, http, "fuzz-rp", RP_SECRET, CALLBACK).tokens(browser)
        member = {name: value for name, value in browser.cookies.items() if name in COOKIES}
    assert "bridge-session" in member, member
    with new_browser(bridge) as admin:
        page = sign_in(admin, "/admin/registrations", "manager")
        assert page.status_code == 200, page.text
        cookies = {name: value for name, value in admin.cookies.items() if name in COOKIES}
    assert {"bridge-session", "bridge-csrf", "bridge-admin"} <= set(cookies), cookies
    return Known(
        access_token=tokens["access_token"],
        refresh_token=tokens["refresh_token"],
        member_cookies=member,
        admin_cookies=cookies,
        csrf_token=cookies["bridge-csrf"],
    )


@pytest.fixture(autouse=True)
def stays_healthy(bridge: Harness, server_log: ServerLog) -> Iterator[None]:
    """After each test: a normal request still works, and nothing went to the log as an error."""
    yield
    with httpx.Client(base_url=bridge.url, timeout=10) as client:
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code == 200
        page = client.get("/login")
        assert page.status_code == 200
        assert 'name="username"' in page.text
        assert client.get("/.well-known/openid-configuration").json()["issuer"] == bridge.url
    problems = server_log.problems()
    server_log.records.clear()  # one test's failure is not the next one's
    assert problems == [], f"{len(problems)} ERROR lines or tracebacks; the first:\n{problems[0]}"


def send(bridge: Harness, raw: bytes, method: bytes = b"GET") -> Answer:
    """Send ``raw``; the answer must be complete and not a server error (SECURITY G5)."""
    answer = exchange(bridge.url, raw, head=method == b"HEAD")
    assert answer.status < 500, (answer.status, answer.body[:500], raw[:300])
    assert b"Traceback" not in answer.body
    return answer


def host(bridge: Harness) -> bytes:
    return (urlsplit(bridge.url).netloc).encode("ascii")


# --- strategies over the routes -------------------------------------------------------------------


@st.composite
def paths(draw: st.DrawFn, routes: tuple[str, ...] = ROUTES) -> bytes:
    """A route with its ``{slug}`` filled by a known slug or garbage (percent-encoded)."""
    template = draw(st.sampled_from(routes))
    if "{slug}" in template:
        slug = draw(st.one_of(st.sampled_from(SLUGS), unicode_text, long_text()))
        template = template.replace("{slug}", quote(slug, safe="") or "x")
    return template.encode("ascii")


def with_query(path: bytes, query: bytes) -> bytes:
    return path + b"?" + query if query else path


def cookie_header(cookies: dict[str, bytes]) -> bytes:
    return b"; ".join(name.encode("latin-1") + b"=" + value for name, value in cookies.items())


# --- the app's routes are all fuzzed --------------------------------------------------------------


def test_g5_every_route_of_the_app_is_fuzzed(bridge: Harness) -> None:
    """A route added later fails this until ROUTES (so the fuzzer) has it (SECURITY G5)."""
    served = set(route_templates(bridge.app.routes).values())
    served = {path for path in served if not path.startswith(ADMIN_API)}
    assert served - set(ROUTES) == set()


# --- random queries, forms and methods ------------------------------------------------------------


@FUZZ
@given(
    method=st.sampled_from(METHODS),
    path=paths(),
    query=pairs,
    form=st.one_of(st.none(), pairs),
    raw_encoding=st.booleans(),
    content_type=st.sampled_from(CONTENT_TYPES),
)
def test_g5_random_queries_forms_and_methods_on_every_route_get_no_server_error(
    bridge: Harness,
    method: bytes,
    path: bytes,
    query: list[tuple[str, str]],
    form: list[tuple[str, str]] | None,
    raw_encoding: bool,
    content_type: bytes,
) -> None:
    """Real and random names, repeated, any Unicode, control characters, long values."""
    target = with_query(path, encode_pairs(query, raw=raw_encoding))
    headers = [(b"content-type", content_type)] if form is not None else []
    body = encode_pairs(form, raw=raw_encoding) if form is not None else None
    send(bridge, request_bytes(method, target, host(bridge), headers, body), method)


@FUZZ
@given(
    path=paths(FORM_ROUTES),
    form=pairs,
    credentials=st.sampled_from(["basic", "form", "none"]),
)
def test_g5_random_forms_with_real_client_credentials_get_no_server_error(
    bridge: Harness, known: Known, path: bytes, form: list[tuple[str, str]], credentials: str
) -> None:
    """The same, past client authentication: the grant, revocation and introspection parsers."""
    headers = [(b"content-type", b"application/x-www-form-urlencoded")]
    if credentials == "basic":
        basic = base64.b64encode(f"fuzz-rp:{RP_SECRET}".encode()).decode()
        headers.append((b"authorization", f"Basic {basic}".encode()))
    elif credentials == "form":
        form = [("client_id", "fuzz-rp"), ("client_secret", RP_SECRET), *form]
    # Real tokens among the random values, so the lookups get past "unknown token".
    form = [(k, known.refresh_token if v == "refresh_token" else v) for k, v in form]
    send(bridge, request_bytes(b"POST", path, host(bridge), headers, encode_pairs(form)), b"POST")


# --- bad UTF-8 everywhere -------------------------------------------------------------------------

PLACES = (
    "path",
    "path-percent",
    "query",
    "query-percent",
    "query-name",
    "form",
    "form-percent",
    "cookie-value",
    "cookie-name",
    "header",
)
HEADERS_READ = (
    b"user-agent",
    b"accept",
    b"accept-language",
    b"origin",
    b"referer",
    b"authorization",
    b"x-request-id",
    b"x-forwarded-for",
    b"x-forwarded-proto",
    b"host",
    b"content-type",
    b"if-none-match",
    b"if-modified-since",
    b"range",
)


@FUZZ
@given(
    method=st.sampled_from([b"GET", b"POST", b"HEAD"]),
    path=paths(),
    place=st.sampled_from(PLACES),
    bad=bad_utf8,
    header=st.sampled_from(HEADERS_READ),
    cookie=st.sampled_from(COOKIES),
)
def test_g5_bad_utf8_in_path_query_form_cookies_and_headers_gets_no_server_error(
    bridge: Harness,
    method: bytes,
    path: bytes,
    place: str,
    bad: bytes,
    header: bytes,
    cookie: str,
) -> None:
    """Raw bytes that are not UTF-8, or their percent-encoding, in each place in turn."""
    headers: list[tuple[bytes, bytes]] = []
    query = b"client_id=fuzz-rp&state=s"
    body: bytes | None = None
    if place == "path":
        path += b"/" + bad
    elif place == "path-percent":
        path += b"/" + percent_bytes(bad)
    elif place == "query":
        query += b"&redirect_uri=" + bad
    elif place == "query-percent":
        query += b"&redirect_uri=" + percent_bytes(bad)
    elif place == "query-name":
        query += b"&" + percent_bytes(bad) + b"=1"
    elif place in ("form", "form-percent"):
        method = b"POST"
        headers.append((b"content-type", b"application/x-www-form-urlencoded"))
        body = b"username=" + (bad if place == "form" else percent_bytes(bad)) + b"&password=x"
    elif place == "cookie-value":
        headers.append((b"cookie", cookie.encode() + b"=" + bad))
    elif place == "cookie-name":
        headers.append((b"cookie", bad + b"=1; " + cookie.encode() + b"=" + bad))
    else:
        headers.append((header, bad))
    raw = request_bytes(method, with_query(path, query), host(bridge), headers, body)
    send(bridge, raw, method)


@pytest.mark.parametrize("value", ["a\x00b"])
def test_g5_nul_and_control_characters_in_every_parameter_of_every_route_get_no_server_error(
    bridge: Harness, known: Known, value: str
) -> None:
    """Deterministic, beside the fuzzing: every parameter name at once (in two halves,
    under the forms' 32 fields), in the query and in a form, with a signed-in admin's
    cookies, and as the slug. PostgreSQL refuses NUL in text, so a NUL that reaches a
    query there is a 500."""
    admin = {name: v.encode() for name, v in known.admin_cookies.items()}
    # Elsewhere a CSRF pair of our own (the admin's session must not be signed out).
    token = secrets.token_urlsafe(32)
    others = {"bridge-csrf": token.encode()}
    half = len(PARAMETER_NAMES) // 2
    for route in ROUTES:
        path = route.replace("{slug}", quote(value, safe="")).encode()
        cookies, csrf_token = (
            (admin, known.csrf_token) if route.startswith("/admin") else (others, token)
        )
        for names_ in (PARAMETER_NAMES[:half], PARAMETER_NAMES[half:]):
            fields = [(name, csrf_token if name == "csrf_token" else value) for name in names_]
            encoded = encode_pairs(fields)
            headers = [(b"cookie", cookie_header(cookies))]
            send(bridge, request_bytes(b"GET", with_query(path, encoded), host(bridge), headers))
            headers.append((b"content-type", b"application/x-www-form-urlencoded"))
            raw = request_bytes(b"POST", path, host(bridge), headers, encoded)
            send(bridge, raw, b"POST")


# --- sizes: bodies, headers -----------------------------------------------------------------------


@settings(FUZZ, max_examples=examples(40))
@given(
    path=paths(ROUTES),
    how=st.sampled_from(["declared", "sent", "chunked", "chunked-many"]),
    over=st.integers(1, 64 * 1024),
)
def test_g5_bodies_over_the_limit_get_413(
    bridge: Harness, path: bytes, how: str, over: int
) -> None:
    """A declared length over 64 KiB is refused before the body is read; a chunked body
    that runs over is refused when a form reader gets past the limit."""
    size = MAX_BODY_BYTES + over
    host_ = host(bridge)
    form = b"application/x-www-form-urlencoded"
    if how == "declared":  # the length lies: only a few bytes follow
        headers = [(b"content-type", form), (b"content-length", b"%d" % size)]
        raw = request_bytes(b"POST", path, host_, headers, b"a=b")
    elif how == "sent":
        raw = request_bytes(b"POST", path, host_, [(b"content-type", form)], b"a" * size)
    elif how == "chunked":
        raw = request_bytes(
            b"POST", path, host_, [(b"content-type", form)], b"a" * size, chunked=True
        )
    else:  # many small chunks, as a slow client streams them
        head = request_bytes(b"POST", path, host_, [(b"content-type", form)], b"", chunked=True)
        head = head.removesuffix(b"0\r\n\r\n")
        chunk = b"400\r\n" + b"a" * 0x400 + b"\r\n"
        raw = head + chunk * (size // 0x400 + 1) + b"0\r\n\r\n"
    answer = send(bridge, raw, b"POST")
    if how in ("declared", "sent") or path.decode() in FORM_ROUTES:
        assert answer.status == 413, (answer.status, path)


@settings(FUZZ, max_examples=examples(40))
@given(
    path=paths(),
    count=st.integers(1, 600),
    size=st.integers(1, 20 * 1024),
    name=st.sampled_from([b"x-fuzz", b"cookie", b"accept", b"user-agent"]),
)
def test_g5_huge_and_many_headers_get_431_over_the_limit(
    bridge: Harness, path: bytes, count: int, size: int, name: bytes
) -> None:
    """Headers over 16 KiB in all get 431, whether one is huge or there are hundreds."""
    headers = [
        (name if i == 0 else b"x-fuzz-%d" % i, b"v" * (size if i == 0 else 30))
        for i in range(count)
    ]
    raw = request_bytes(b"GET", path, host(bridge), headers)
    answer = send(bridge, raw)
    total = sum(len(k) + len(v) for k, v in headers) + len(b"host") + len(host(bridge))
    if total > MAX_HEADER_BYTES:
        assert answer.status == 431, (answer.status, total)


@settings(FUZZ, max_examples=examples(60))
@given(
    path=paths(FORM_ROUTES),
    content_type=st.one_of(
        st.sampled_from(CONTENT_TYPES),
        garbage_header_value,
        unicode_text.map(lambda t: b"application/x-www-form-urlencoded; charset=" + t.encode()),
    ),
    body=st.one_of(
        st.binary(max_size=200),
        st.sampled_from([b"{}", b'{"grant_type": "authorization_code"}', b"--xyz\r\n\r\n--xyz--"]),
        pairs.map(encode_pairs),
        pairs.map(lambda p: encode_pairs(p).decode().encode("utf-16")),
    ),
    repeat=st.integers(0, 3),
)
def test_g5_malformed_content_types_and_charsets_get_no_server_error(
    bridge: Harness, path: bytes, content_type: bytes, body: bytes, repeat: int
) -> None:
    """A form endpoint takes only UTF-8 urlencoded forms; anything else is a 4xx."""
    headers = [(b"content-type", content_type)] * max(1, repeat)
    send(bridge, request_bytes(b"POST", path, host(bridge), headers, body), b"POST")


# --- forged cookies and Authorization headers -----------------------------------------------------


@st.composite
def forged_cookie_values(draw: st.DrawFn) -> bytes:
    """Garbage, or a value of the right shape that no key signed."""
    shaped = st.sampled_from(
        [
            secrets.token_urlsafe(32),  # a session id / CSRF token's shape
            f"{'0' * 8}.{'A' * 22}.1700000000.{'B' * 43}",  # a device entry's shape
            "~".join([f"{'a' * 8}.{'A' * 22}.9999999999.{'B' * 43}"] * 6),
            base64.urlsafe_b64encode(b"not a sealed grant").decode(),
            "x" * 5000,
        ]
    )
    text = draw(st.one_of(shaped, unicode_text, st.text("~.-_0123456789abcdefAB", max_size=120)))
    return draw(st.one_of(st.just(text.encode("utf-8")), garbage_header_value))


@FUZZ
@given(
    method=st.sampled_from([b"GET", b"POST"]),
    path=paths(),
    cookies=st.dictionaries(st.sampled_from(COOKIES), forged_cookie_values(), min_size=1),
    duplicate=st.booleans(),
)
def test_g5_forged_session_csrf_device_and_admin_cookies_get_no_server_error(
    bridge: Harness, method: bytes, path: bytes, cookies: dict[str, bytes], duplicate: bool
) -> None:
    headers = [(b"cookie", cookie_header(cookies))] * (2 if duplicate else 1)
    body = b"csrf_token=x" if method == b"POST" else None
    if body is not None:
        headers.append((b"content-type", b"application/x-www-form-urlencoded"))
    send(bridge, request_bytes(method, path, host(bridge), headers, body), method)


@settings(FUZZ, max_examples=examples(60))
@given(
    username=st.one_of(st.sampled_from(["jdoe", "manager", "JDOE", " jdoe "]), unicode_text),
    password=st.one_of(st.just("wrong-password"), unicode_text, long_text()),
    device=forged_cookie_values(),
    extra=pairs,
)
def test_g5_sign_ins_with_a_valid_csrf_pair_and_a_forged_device_cookie_get_no_server_error(
    bridge: Harness, username: str, password: str, device: bytes, extra: list[tuple[str, str]]
) -> None:
    """Past the CSRF check (a cookie and field of our own making agree), so the throttle
    reads the forged device cookie and iMIS is asked; never a sign-in, never a 5xx."""
    token = secrets.token_urlsafe(32)
    cookies = {"bridge-csrf": token.encode(), "bridge-device": device}
    # The extra fields repeat none (a repeat is refused before the throttle and iMIS).
    mine = {"csrf_token": token, "username": username, "password": password}
    form = [*mine.items(), *((k, v) for k, v in dict(extra).items() if k not in mine)]
    headers = [
        (b"cookie", cookie_header(cookies)),
        (b"content-type", b"application/x-www-form-urlencoded"),
    ]
    raw = request_bytes(b"POST", b"/login", host(bridge), headers, encode_pairs(form))
    answer = send(bridge, raw, b"POST")
    for cookie in answer.header_values("set-cookie"):
        name, _, value = cookie.split(";", 1)[0].partition("=")
        assert name != "bridge-session" or not value.strip('"'), "signed in"


@st.composite
def authorization_values(draw: st.DrawFn) -> bytes:
    scheme = draw(st.sampled_from([b"Bearer", b"bearer", b"Basic", b"DPoP", b"", b"Bearer  "]))
    credential = draw(
        st.one_of(
            garbage_header_value,
            st.binary(max_size=60).map(base64.b64encode),
            unicode_text.map(lambda t: base64.b64encode(t.encode())),
            st.sampled_from([b"fuzz-rp", b"Zm9v", b"Zm9vOg==", b"OmJhcg==", b"=", b"%3A"]),
        )
    )
    return scheme + b" " + credential if scheme else credential


@FUZZ
@given(
    path=st.sampled_from([b"/userinfo", b"/token", b"/revoke", b"/introspect", b"/end_session"]),
    method=st.sampled_from([b"GET", b"POST"]),
    authorization=authorization_values(),
    twice=st.booleans(),
    form=pairs,
)
def test_g5_garbage_authorization_headers_get_no_server_error(
    bridge: Harness,
    path: bytes,
    method: bytes,
    authorization: bytes,
    twice: bool,
    form: list[tuple[str, str]],
) -> None:
    headers = [(b"authorization", authorization)] * (2 if twice else 1)
    body = None
    if method == b"POST":
        headers.append((b"content-type", b"application/x-www-form-urlencoded"))
        body = encode_pairs(form)
    send(bridge, request_bytes(method, path, host(bridge), headers, body), method)


@FUZZ
@given(
    method=st.sampled_from([b"GET", b"POST"]),
    form=pairs,
    where=st.sampled_from(["header", "form", "both"]),
)
def test_g5_userinfo_with_a_real_token_and_random_input_gets_no_server_error(
    bridge: Harness, known: Known, method: bytes, form: list[tuple[str, str]], where: str
) -> None:
    headers = []
    if where in ("header", "both"):
        headers.append((b"authorization", b"Bearer " + known.access_token.encode()))
    if where in ("form", "both"):
        form = [("access_token", known.access_token), *form]
    body = None
    target = b"/userinfo"
    if method == b"POST":
        headers.append((b"content-type", b"application/x-www-form-urlencoded"))
        body = encode_pairs(form)
    else:
        target = with_query(target, encode_pairs(form))
    send(bridge, request_bytes(method, target, host(bridge), headers, body), method)


# --- signed Discourse requests with fuzzed payloads -----------------------------------------------


@FUZZ
@given(
    payload=st.one_of(
        pairs.map(lambda p: encode_pairs(p, raw=True)),
        st.binary(max_size=200),
        st.builds(
            lambda nonce, url: urlencode({"nonce": nonce, "return_sso_url": url}).encode(),
            values(),
            st.one_of(st.sampled_from([f"{FORUM_URL}/session/sso_login", FORUM_URL]), values()),
        ),
    ),
    newlines=st.booleans(),
    slug=st.sampled_from(["fuzz-forum", "no-such-slug"]),
)
def test_g5_signed_discourse_requests_with_fuzzed_payloads_get_no_server_error(
    bridge: Harness, payload: bytes, newlines: bool, slug: str
) -> None:
    """Signed with the real connect secret, so the payload parser and the return URL
    check see the fuzzed fields (SECURITY E7)."""
    sso = base64.b64encode(payload).decode("ascii")
    if newlines:  # Ruby's Base64 wraps lines at 60 characters
        sso = "\n".join(sso[i : i + 60] for i in range(0, len(sso), 60))
    sig = hmac.new(FORUM_SECRET.encode(), sso.encode(), hashlib.sha256).hexdigest()
    target = f"/discourse/{slug}?{urlencode({'sso': sso, 'sig': sig})}".encode()
    send(bridge, request_bytes(b"GET", target, host(bridge)))


@FUZZ
@given(
    entry=st.sampled_from(["authorize", "authorize-post", "zendesk", "discourse"]),
    client=st.sampled_from([("fuzz-rp", CALLBACK), ("fuzz-public", "http://127.0.0.1/cb")]),
    overrides=pairs,
    signed_in=st.booleans(),
)
def test_g5_sign_in_requests_of_real_apps_with_fuzzed_parameters_get_no_server_error(
    bridge: Harness,
    known: Known,
    entry: str,
    client: tuple[str, str],
    overrides: list[tuple[str, str]],
    signed_in: bool,
) -> None:
    """A valid request of a registered app (an OIDC authorization request, a Zendesk or a
    signed Discourse entry) with some parameters replaced by fuzzed ones, from a browser
    with or without a bridge session: each check after "which app is this" sees them,
    and with a session the answer (a code, a JWT, a signed payload) is built from them."""
    client_id, redirect_uri = client
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "scope": "openid",
        "state": "fuzz-state",
        "nonce": "fuzz-nonce",
        "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
        "code_challenge_method": "S256",
    }
    if entry.startswith("zendesk"):
        params = {"return_to": "https://fuzzed.zendesk.com/hc"}
    params.update(overrides)  # one value per name: repeats are another test's
    headers = []
    if signed_in:
        member = {name: value.encode() for name, value in known.member_cookies.items()}
        headers.append((b"cookie", cookie_header(member)))
    query = encode_pairs(list(params.items()))
    if entry == "authorize":
        raw = request_bytes(b"GET", with_query(b"/authorize", query), host(bridge), headers)
    elif entry == "authorize-post":
        headers.append((b"content-type", b"application/x-www-form-urlencoded"))
        raw = request_bytes(b"POST", b"/authorize", host(bridge), headers, query)
    elif entry == "zendesk":
        raw = request_bytes(b"GET", with_query(b"/zendesk/fuzz-desk", query), host(bridge), headers)
    else:
        fields = {"nonce": "fuzz-nonce", "return_sso_url": f"{FORUM_URL}/session/sso_login"}
        fields.update(overrides)
        sso = base64.b64encode(urlencode(fields).encode()).decode("ascii")
        sig = hmac.new(FORUM_SECRET.encode(), sso.encode(), hashlib.sha256).hexdigest()
        target = f"/discourse/fuzz-forum?{urlencode({'sso': sso, 'sig': sig})}".encode()
        raw = request_bytes(b"GET", target, host(bridge), headers)
    send(bridge, raw, b"POST" if entry == "authorize-post" else b"GET")


# --- the admin pages' forms, signed in ------------------------------------------------------------

ADMIN_FORMS = (
    "/admin/registrations/new",
    "/admin/registrations/{stored}/edit",
    "/admin/registrations/{stored}/enabled",
    "/admin/registrations/no-such-slug/rotate-secret",
    "/admin/registrations/no-such-slug/delete",
    "/admin/registrations/fuzz-rp/edit",
    "/admin/registrations/fuzz-rp/delete",
)
ADMIN_PAGES = (
    "/admin/registrations",
    "/admin/registrations/new",
    "/admin/registrations/{stored}",
    "/admin/registrations/{stored}/edit",
    "/admin/registrations/{stored}/test",
    "/admin/registrations/{stored}/enabled",
    "/admin/registrations/{stored}/rotate-secret",
    "/admin/registrations/{stored}/delete",
    "/admin/audit",
    "/admin/statistics",
    "/admin/endpoints",
    "/admin/keys",
    "/admin/keys/rotate",
    "/admin/reauth",
)


@settings(FUZZ, max_examples=examples(80))
@given(
    page=st.sampled_from(ADMIN_FORMS + ADMIN_PAGES),
    stored=st.sampled_from(STORED),
    form=pairs,
    query=pairs,
    with_csrf=st.booleans(),
)
def test_g5_admin_pages_and_forms_signed_in_get_no_server_error(
    bridge: Harness,
    known: Known,
    page: str,
    stored: str,
    form: list[tuple[str, str]],
    query: list[tuple[str, str]],
    with_csrf: bool,
) -> None:
    """A signed-in administrator's browser sends random forms (with its real CSRF token,
    so the form readers run) and random queries to every admin page. The forms that
    delete or rotate reach only registrations that do not exist or are read-only."""
    path = page.replace("{stored}", stored).encode()
    cookies = {name: value.encode() for name, value in known.admin_cookies.items()}
    headers = [(b"cookie", cookie_header(cookies))]
    if page in ADMIN_FORMS:
        if with_csrf:
            form = [("csrf_token", known.csrf_token), *form]
        headers.append((b"content-type", b"application/x-www-form-urlencoded"))
        raw = request_bytes(b"POST", path, host(bridge), headers, encode_pairs(form))
        answer = send(bridge, raw, b"POST")
    else:
        raw = request_bytes(b"GET", with_query(path, encode_pairs(query)), host(bridge), headers)
        answer = send(bridge, raw)
    if page != "/admin/reauth":  # which asks for the password again, on purpose
        # Still signed in: the fuzzer reached the page, not the sign-in guard.
        assert not answer.header("location").startswith("/login"), answer.header("location")


_TEXT_INPUT = re.compile(r'<input type="(?:text|hidden)"[^>]* name="([^"]+)" value="([^"]*)"')
_CHECKED = re.compile(r'<input type="checkbox"[^>]* name="([^"]+)" value="true" checked')
_TEXTAREA = re.compile(r'<textarea[^>]* name="([^"]+)"[^>]*>([^<]*)</textarea>', re.S)
#: What each field gets in turn: NUL (PostgreSQL refuses it in text, in JSON too), digits
#: int() cannot read, a long value, a value with a line break where one line is expected.
ODD_VALUES = ("\x00", "a\x00b", "\u00b2", "x" * 5000, "a\nb = [", "\U0001f600\u202e")


def form_fields(page: str) -> list[tuple[str, str]]:
    """The fields an admin form sends as it stands (text, hidden, checked boxes, text areas)."""
    found = [(name, html.unescape(value)) for name, value in _TEXT_INPUT.findall(page)]
    found += [(name, "true") for name in _CHECKED.findall(page)]
    found += [(name, html.unescape(value)) for name, value in _TEXTAREA.findall(page)]
    return list(dict(reversed(found)).items())  # once each (the sign-out form has a token too)


@pytest.mark.parametrize(
    "page",
    [
        "/admin/registrations/stored-rp/edit",
        "/admin/registrations/stored-desk/edit",
        "/admin/registrations/stored-forum/edit",
        "/admin/registrations/new?profile=oidc",
        "/admin/registrations/new?profile=zendesk",
        "/admin/registrations/new?profile=discourse",
    ],
)
def test_g5_every_field_of_the_admin_registration_forms_takes_odd_values_without_a_500(
    bridge: Harness, known: Known, page: str
) -> None:
    """Beside the fuzzing, deterministic: the form as the page shows it, then each of its
    fields in turn with each of ODD_VALUES, so every value reaches validation (and, if
    accepted, the database) with the rest of the form valid."""
    with new_browser(bridge) as admin:
        for name, value in known.admin_cookies.items():
            admin.cookies.set(name, value)
        shown = admin.get(page)
        assert shown.status_code == 200, shown.text
        fields = form_fields(shown.text)
        assert ("csrf_token", known.csrf_token) in fields, fields
        action = page.split("?", 1)[0]
        form = {"content-type": "application/x-www-form-urlencoded"}
        if action.endswith("/edit"):  # the form as shown is accepted: the fields are right
            unchanged = admin.post(action, content=encode_pairs(fields), headers=form)
            assert unchanged.status_code == 303, unchanged.text
        for name, _ in fields:
            if name in ("csrf_token", "profile"):
                continue
            for odd in ODD_VALUES:
                sent = [(k, odd if k == name else v) for k, v in fields]
                response = admin.post(action, content=encode_pairs(sent), headers=form)
                assert response.status_code < 500, (name, odd[:20], response.text[-500:])
