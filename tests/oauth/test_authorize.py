"""Validation of authorization requests (SECURITY A1-A4, A6), without HTTP."""

from __future__ import annotations

import pytest

from bridge.oauth.authorize import RedirectError, ShowError, redirect_with, validate
from bridge.profiles.oidc import OidcOptions
from bridge.registry import Registration

CALLBACK = "https://app.example.org/cb"
CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"

APP = Registration(
    slug="app",
    name="App",
    profile="oidc",
    options=OidcOptions(client_id="app", redirect_uris=(CALLBACK,), scopes=("openid", "profile")),
)


def find(client_id: str) -> Registration | None:
    return APP if client_id == "app" else None


def request(**overrides: str | None) -> list[tuple[str, str]]:
    params: dict[str, str | None] = {
        "response_type": "code",
        "client_id": "app",
        "redirect_uri": CALLBACK,
        "scope": "openid profile",
        "state": "s",
        "code_challenge": CHALLENGE,
        "code_challenge_method": "S256",
    }
    params.update(overrides)
    return [(k, v) for k, v in params.items() if v is not None]


def test_a_valid_request() -> None:
    registration, areq = validate(request(nonce="n", max_age="30", prompt="login"), find)
    assert registration is APP
    assert areq.scope == "openid profile"
    assert (areq.state, areq.nonce, areq.max_age, areq.prompt) == ("s", "n", 30, "login")


def test_a6_scopes_outside_the_registration_are_dropped() -> None:
    _, areq = validate(request(scope="openid email profile admin openid"), find)
    assert areq.scope == "openid profile"


@pytest.mark.parametrize("client_id", ["nobody", "", "app\x00", "a" * 201])
def test_a2_unknown_or_malformed_client_is_shown(client_id: str) -> None:
    with pytest.raises(ShowError):
        validate(request(client_id=client_id), find)


@pytest.mark.parametrize("redirect_uri", [CALLBACK + "/", CALLBACK.upper(), "", CALLBACK + "\x00"])
def test_a1_redirect_uri_mismatch_is_shown(redirect_uri: str) -> None:
    with pytest.raises(ShowError):
        validate(request(redirect_uri=redirect_uri), find)


@pytest.mark.parametrize(
    "overrides",
    [
        {"state": "s\x00"},
        {"nonce": "\x1f"},
        {"login_hint": "bob\n"},
        {"code_challenge_method": "plain"},
        {"code_challenge": None},
        {"prompt": "none login"},
        {"max_age": "-1"},
    ],
)
def test_bad_parameters_go_back_to_the_client(overrides: dict[str, str]) -> None:
    with pytest.raises(RedirectError) as caught:
        validate(request(**overrides), find)
    assert caught.value.error == "invalid_request"
    assert caught.value.redirect_uri == CALLBACK


def test_a_repeated_state_is_not_echoed() -> None:
    with pytest.raises(RedirectError) as caught:
        validate([*request(), ("state", "other")], find)
    assert caught.value.state is None


def test_redirect_with_keeps_the_registered_query() -> None:
    url = redirect_with("https://a.example/cb?x=1", {"code": "c d", "state": None, "iss": "i"})
    assert url == "https://a.example/cb?x=1&code=c+d&iss=i"
