"""Double-submit CSRF tokens (SECURITY D1): issuing, reusing and verifying them."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from starlette.requests import Request
from starlette.responses import Response

from bridge import csrf
from bridge.errors import BadRequest
from bridge.settings import Settings

HTTP = Settings(issuer="http://127.0.0.1:8000", config_dir=Path("."))
HTTPS = Settings(issuer="https://sso.example.org", config_dir=Path("."))
VALID = "A" * 21 + "b-_" + "9" * 19


def request(settings: Settings = HTTP, cookie: str | None = None) -> Request:
    app = SimpleNamespace(state=SimpleNamespace(services=SimpleNamespace(settings=settings)))
    headers = [(b"cookie", f"{csrf.cookie_name(settings)}={cookie}".encode())] if cookie else []
    return Request({"type": "http", "app": app, "headers": headers})


def set_cookie(response: Response) -> list[str]:
    (header,) = [v.decode() for k, v in response.raw_headers if k == b"set-cookie"]
    return [part.strip().lower() for part in header.split(";")]


def test_d1_issue_sets_an_httponly_lax_cookie_and_returns_the_same_token() -> None:
    response = Response()
    token = csrf.issue(request(), response)
    attributes = set_cookie(response)
    assert attributes[0] == f"bridge-csrf={token}".lower()
    assert {"httponly", "samesite=lax", "path=/"} <= set(attributes)
    assert "secure" not in attributes
    assert len(token) == 43


def test_d1_https_issuer_uses_a_host_prefixed_secure_cookie() -> None:
    response = Response()
    csrf.issue(request(HTTPS), response)
    attributes = set_cookie(response)
    assert attributes[0].startswith("__host-bridge-csrf=")
    assert "secure" in attributes


def test_d1_tokens_are_random() -> None:
    assert len({csrf.issue(request(), Response()) for _ in range(50)}) == 50


def test_d1_a_valid_cookie_token_is_reused_so_several_tabs_work() -> None:
    assert csrf.issue(request(cookie=VALID), Response()) == VALID


@pytest.mark.parametrize("cookie", ["short", VALID + "x", "A" * 42 + "!", ""])
def test_d1_a_malformed_cookie_token_is_replaced(cookie: str) -> None:
    assert csrf.issue(request(cookie=cookie), Response()) != cookie


def test_d1_matching_form_token_passes() -> None:
    csrf.verify(request(cookie=VALID), {"csrf_token": VALID})


@pytest.mark.parametrize(
    ("cookie", "form"),
    [
        pytest.param(None, {"csrf_token": VALID}, id="no-cookie"),
        pytest.param(VALID, {}, id="no-field"),
        pytest.param(VALID, {"csrf_token": ""}, id="empty-field"),
        pytest.param(VALID, {"csrf_token": "B" * 43}, id="mismatch"),
        pytest.param(VALID, {"csrf_token": VALID.lower()}, id="case-differs"),
        pytest.param(VALID, {"csrf_token": [VALID]}, id="not-a-string"),
        pytest.param("short", {"csrf_token": "short"}, id="malformed-pair"),
    ],
)
def test_d1_missing_or_wrong_token_is_refused(cookie: str | None, form: dict[str, object]) -> None:
    with pytest.raises(BadRequest) as refused:
        csrf.verify(request(cookie=cookie), form)
    assert refused.value.status_code == 400
    assert refused.value.message == (
        "Your session expired or the form was sent twice. Please try again."
    )


def test_d1_tokens_are_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[tuple[bytes, bytes]] = []
    real = csrf.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(csrf.hmac, "compare_digest", spy)
    csrf.verify(request(cookie=VALID), {"csrf_token": VALID})
    assert compared == [(VALID.encode(), VALID.encode())]
