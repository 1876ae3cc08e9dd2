"""Client authentication at /token, /revoke and /introspect (SECURITY B3, G5), over real HTTP.

RFC 6749 §2.3: a client authenticates one way per request; with HTTP Basic its
client_id and secret are form-urlencoded, joined by ``:`` and base64-encoded
(§2.3.1). Whatever arrives under the Basic scheme instead (bad base64, bytes
that are not UTF-8, no ``:``) is a 401 ``invalid_client`` in JSON with a Basic
challenge (§5.2), and the server logs no traceback for it. Part of it is a
hypothesis fuzz run against the running bridge.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote_plus

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.bridge import Harness, running_bridge

PORTAL_SECRET = "portal-secret-0123456789abcdef"
#: Everything form-urlencoding changes: space, '+', ':', '%', '/', '=', non-ASCII.
ODD_ID = "odd.client~1"
ODD_SECRET = "s3cret with+plus:colon%25/slash=ü"
PATHS = ["/token", "/revoke", "/introspect"]
#: A body that would do something if the client authenticated.
BODY = {"grant_type": "refresh_token", "refresh_token": "x", "token": "x"}

REGISTRATIONS = {
    "portal": f"""
        name = "Member Portal"
        profile = "oidc"
        client_id = "portal"
        client_secret = "{PORTAL_SECRET}"
        redirect_uris = ["https://portal.example.org/callback"]
        scopes = ["openid", "profile", "offline_access"]
    """,
    "odd": f"""
        name = "Odd Secret"
        profile = "oidc"
        client_id = "{ODD_ID}"
        client_secret = "{ODD_SECRET}"
        redirect_uris = ["https://odd.example.org/cb"]
        scopes = ["openid"]
    """,
    "spa": """
        name = "Member App"
        profile = "oidc"
        client_id = "spa"
        redirect_uris = ["https://spa.example.org/cb"]
        scopes = ["openid", "profile"]
    """,
}


@pytest.fixture(scope="module")
def bridge(tmp_path_factory: pytest.TempPathFactory, database_url: str) -> Iterator[Harness]:
    tmp: Path = tmp_path_factory.mktemp("oidc-client-auth")
    with running_bridge(tmp, database_url, registrations=REGISTRATIONS) as harness:
        yield harness


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def server_log() -> Iterator[list[logging.LogRecord]]:
    """What the bridge (root logger) and uvicorn (its own, non-propagating logger) log
    meanwhile. The bridge runs in this process, in a thread."""
    handler = _Collect()
    loggers = [logging.getLogger(), logging.getLogger("uvicorn")]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield handler.records
    finally:
        for logger in loggers:
            logger.removeHandler(handler)


def assert_no_traceback(records: list[logging.LogRecord]) -> None:
    bad = [
        f"{r.name}: {r.getMessage()}"
        for r in records
        if r.exc_info or r.levelno >= logging.ERROR or "Traceback" in r.getMessage()
    ]
    assert bad == []


def basic(user: bytes | str, secret: bytes | str = b"") -> str:
    """A Basic header over exactly these bytes: ``user:secret`` (nothing encoded)."""
    raw = user if isinstance(user, bytes) else user.encode()
    if secret:
        raw += b":" + (secret if isinstance(secret, bytes) else secret.encode())
    return "Basic " + base64.b64encode(raw).decode("ascii")


def form_basic(client_id: str, secret: str) -> str:
    """RFC 6749 §2.3.1: form-urlencode both parts, then Basic."""
    return basic(f"{quote_plus(client_id)}:{quote_plus(secret)}")


def assert_invalid_client(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["error"] == "invalid_client"
    assert response.headers["www-authenticate"].startswith("Basic")
    assert "no-store" in response.headers["cache-control"]


def assert_invalid_request(response: httpx.Response) -> None:
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["error"] == "invalid_request"


MALFORMED: dict[str, str | bytes] = {
    "not-base64": "Basic !!!",
    "bad-padding": "Basic cG9ydGFsOng",  # "portal:x" without its '='
    "spaces-inside": "Basic cG9y dGFsOng=",
    "not-utf8": basic(b"\xff\xfe", b"\xfd"),
    "latin1": basic("pörtal".encode("latin-1"), PORTAL_SECRET),
    "no-colon": basic("portal"),
    "empty-secret": basic(b"portal:"),
    "empty-client-id": basic(b":" + PORTAL_SECRET.encode()),
    "only-scheme": "Basic",
    "bad-percent-escape": basic("portal", "%ff%fe"),
    "raw-latin1-header": b"Basic \xe9t\xe9",
}


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("header", MALFORMED.values(), ids=MALFORMED.keys())
def test_b3_g5_malformed_basic_header_is_401_invalid_client_without_traceback(
    bridge: Harness, http: httpx.Client, path: str, header: str | bytes
) -> None:
    """B3, G5: never a 500 (a header whose bytes are not UTF-8 was one, with ~85 log lines)."""
    with server_log() as records:
        response = http.post(f"{bridge.url}{path}", data=BODY, headers={"authorization": header})
    assert_invalid_client(response)
    assert_no_traceback(records)


def test_b3_basic_credentials_are_form_urlencoded(bridge: Harness, http: httpx.Client) -> None:
    """RFC 6749 §2.3.1: '+' is a space, %XX an escape, and ':' in the secret is fine."""
    url = f"{bridge.url}/introspect"
    response = http.post(
        url, data={"token": "x"}, headers={"authorization": form_basic(ODD_ID, ODD_SECRET)}
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"active": False}
    # The same secret not encoded is another secret ("+" decodes to a space).
    unencoded = basic(f"{ODD_ID}:{ODD_SECRET}")
    assert_invalid_client(http.post(url, data={"token": "x"}, headers={"authorization": unencoded}))
    # client_secret_post carries the same secret in the (form-encoded) body.
    post = http.post(url, data={"token": "x", "client_id": ODD_ID, "client_secret": ODD_SECRET})
    assert post.status_code == 200, post.text


@pytest.mark.parametrize("path", PATHS)
def test_b3_two_authentication_methods_at_once_are_refused(
    bridge: Harness, http: httpx.Client, path: str
) -> None:
    """RFC 6749 §2.3: "MUST NOT use more than one authentication method"; §5.2 calls
    that invalid_request. Also when both carry the right secret."""
    for extra in (
        {"client_secret": PORTAL_SECRET},
        {"client_id": "portal", "client_secret": PORTAL_SECRET},
        {"client_id": "portal", "client_secret": "wrong-secret-0123456789"},
    ):
        response = http.post(
            f"{bridge.url}{path}",
            data={**BODY, **extra},
            headers={"authorization": form_basic("portal", PORTAL_SECRET)},
        )
        assert_invalid_request(response)


@pytest.mark.parametrize("path", PATHS)
def test_b3_body_client_id_must_match_the_basic_one(
    bridge: Harness, http: httpx.Client, path: str
) -> None:
    """A body client_id naming another client than the Basic header is refused; the same
    one is allowed (some clients send it anyway)."""
    header = {"authorization": form_basic("portal", PORTAL_SECRET)}
    for other in ("spa", ODD_ID, "nobody"):
        response = http.post(
            f"{bridge.url}{path}", data={**BODY, "client_id": other}, headers=header
        )
        assert_invalid_request(response)
    same = http.post(
        f"{bridge.url}/introspect", data={"token": "x", "client_id": "portal"}, headers=header
    )
    assert same.status_code == 200, same.text


def test_b3_a_failed_basic_header_does_not_fall_back_to_another_method(
    bridge: Harness, http: httpx.Client
) -> None:
    """With a Basic header only client_secret_basic is tried: a wrong one is not rescued
    by the body naming a public client (which needs no secret)."""
    response = http.post(
        f"{bridge.url}/revoke",
        data={"token": "x", "client_id": "spa"},
        headers={"authorization": form_basic("spa", "not-the-secret-0123")},
    )
    assert_invalid_client(response)
    # Without the header the public client is who it says.
    assert (
        http.post(f"{bridge.url}/revoke", data={"token": "x", "client_id": "spa"}).status_code
        == 200
    )


# --- fuzz (G5): whatever the Authorization header holds, 401 and a quiet log --------------------

#: Bytes h11 lets into a header value (no control characters; single inner spaces).
HEADER_BYTES = st.lists(
    st.sampled_from([bytes([b]) for b in (*range(0x21, 0x7F), *range(0x80, 0x100))])
    | st.just(b"x "),
    max_size=80,
).map(b"".join)

FUZZ = settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@FUZZ
@given(path=st.sampled_from(PATHS), payload=st.binary(max_size=80))
def test_g5_fuzz_basic_over_any_bytes_is_401(
    bridge: Harness, http: httpx.Client, path: str, payload: bytes
) -> None:
    """G5: Basic over arbitrary bytes (mostly not UTF-8, or without ':') is invalid_client."""
    header = ("Basic " + base64.b64encode(payload).decode("ascii")).strip()
    with server_log() as records:
        response = http.post(f"{bridge.url}{path}", data=BODY, headers={"authorization": header})
    assert_invalid_client(response)
    assert_no_traceback(records)


@FUZZ
@given(
    path=st.sampled_from(PATHS),
    scheme=st.sampled_from([b"Basic ", b"basic ", b"BASIC  ", b"", b"Bearer "]),
    value=HEADER_BYTES,
)
def test_g5_fuzz_any_authorization_header_is_401(
    bridge: Harness, http: httpx.Client, path: str, scheme: bytes, value: bytes
) -> None:
    """G5: any Authorization header, Basic or not, on a request with no other credentials
    is invalid_client (401), never a 500, and logs no traceback."""
    header = (scheme + value).strip() or b"x"
    with server_log() as records:
        response = http.post(f"{bridge.url}{path}", data=BODY, headers={"authorization": header})
    assert_invalid_client(response)
    assert_no_traceback(records)
