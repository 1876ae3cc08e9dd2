"""What an ``oidc`` registration may say: client id, redirect URIs, scopes, alg, secret."""

from __future__ import annotations

from typing import Any

import pytest

from bridge.keys import hash_secret, verify_secret
from bridge.profiles.oidc import DEFAULT_SCOPES, OidcOptions
from bridge.registry import Registration, parse_registration
from bridge.settings import Problem, Problems
from tests.support.profiles import PROFILES

SECRET = "portal-secret-0123456789"


def portal(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "Member Portal",
        "profile": "oidc",
        "client_id": "member-portal",
        "client_secret": SECRET,
        "redirect_uris": ["https://portal.example.org/callback"],
    }
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    return data


def parse(data: dict[str, Any]) -> tuple[Registration | None, list[tuple[str, str]]]:
    sink: list[Problem] = []
    reg = parse_registration(
        "portal", data, Problems("portal.toml", sink), profiles=PROFILES, hash_secret=hash_secret
    )
    return reg, [(p.key, p.reason) for p in sink]


def problems(**changes: Any) -> list[tuple[str, str]]:
    reg, found = parse(portal(**changes))
    assert (reg is None) == bool(found)
    return found


def test_valid_registration_and_its_defaults() -> None:
    reg, found = parse(portal())
    assert found == []
    assert reg is not None
    options = reg.options
    assert isinstance(options, OidcOptions)
    assert options.scopes == DEFAULT_SCOPES
    assert options.id_token_signed_response_alg == "RS256"
    assert options.post_logout_redirect_uris == ()
    assert not options.is_public
    assert options.client_secret_hash is not None
    assert verify_secret(SECRET, options.client_secret_hash)
    assert SECRET not in repr(options)


def test_without_a_secret_it_is_a_public_client() -> None:
    reg, _ = parse(portal(client_secret=None))
    assert reg is not None
    assert reg.options.is_public
    assert reg.to_data()["client_type"] == "public"


def test_redirect_uris_are_required() -> None:
    [(key, reason)] = problems(redirect_uris=None)
    assert key == "redirect_uris"
    assert reason.startswith("is required")


def test_empty_redirect_uris_are_refused() -> None:
    assert problems(redirect_uris=[]) == [("redirect_uris", "needs at least one URI")]


def test_redirect_uris_of_the_wrong_type_are_reported_once() -> None:
    assert problems(redirect_uris="https://portal.example.org/cb") == [
        ("redirect_uris", "must be a list of strings")
    ]


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        ("http://portal.example.org/cb", "must use https (http only for localhost)"),
        ("https://portal.example.org/cb#done", "must not contain a fragment"),
        ("https://portal.example.org/cb#", "must not contain a fragment"),
        ("/callback", "must be an absolute https URL"),
        ("javascript:alert(1)", "must be an absolute https URL"),
        ("https://portal example.org/cb", "must be a URL without spaces or control characters"),
        ("https://portal.example.org:http/cb", "is not a valid URL"),
        ("https:///cb", "must name a host"),
    ],
)
def test_bad_redirect_uri_is_refused(uri: str, reason: str) -> None:
    assert problems(redirect_uris=["https://ok.example.org/cb", uri]) == [
        ("redirect_uris[1]", f"{uri!r} {reason}")
    ]


@pytest.mark.parametrize(
    "uri",
    [
        "http://localhost:3000/callback",
        "http://127.0.0.1/cb",
        "http://[::1]:8080/cb",
        "https://portal.example.org/cb?x=1",
        "org.example.app:/oauth2redirect",
    ],
)
def test_acceptable_redirect_uri(uri: str) -> None:
    assert problems(redirect_uris=[uri]) == []


def test_post_logout_redirect_uris_follow_the_same_rules() -> None:
    assert problems(post_logout_redirect_uris=["http://portal.example.org/"]) == [
        (
            "post_logout_redirect_uris[0]",
            "'http://portal.example.org/' must use https (http only for localhost)",
        )
    ]


def test_a_public_client_may_list_web_origins() -> None:
    origins = ["https://app.example.org", "http://localhost:5173", "https://app.example.org:8443"]
    reg, found = parse(portal(client_secret=None, web_origins=origins))
    assert found == []
    assert reg is not None
    assert reg.options.web_origins == tuple(origins)
    assert reg.to_data()["web_origins"] == origins


def test_web_origins_are_left_out_of_the_data_when_there_are_none() -> None:
    reg, _ = parse(portal(client_secret=None))
    assert reg is not None
    assert "web_origins" not in reg.to_data()


def test_a_confidential_client_may_not_list_web_origins() -> None:
    assert problems(web_origins=["https://app.example.org"]) == [
        (
            "web_origins",
            "is only for public clients (no client_secret): a page script cannot keep a secret",
        )
    ]


@pytest.mark.parametrize(
    ("origin", "reason"),
    [
        ("*", "must be one exact origin, not a wildcard"),
        ("https://*.example.org", "must be one exact origin, not a wildcard"),
        ("https://app.example.org/", "must be an origin only"),
        ("https://app.example.org/spa", "must be an origin only"),
        ("https://app.example.org?x", "must be an origin only"),
        ("http://app.example.org", "must use https (http only for localhost)"),
        ("https://user@app.example.org", "must not contain a user name or password"),
        ("ftp://app.example.org", "must be an http/https URL"),
        ("app.example.org", "must be an http/https URL"),
        ("https://App.Example.org", "must be written as the browser sends it"),
        ("https://app.example.org:443", "must be written as the browser sends it"),
        ("", "must not be empty"),
    ],
)
def test_web_origins_must_be_exact_origins(origin: str, reason: str) -> None:
    [(key, found)] = problems(client_secret=None, web_origins=[origin])
    assert key == "web_origins[0]"
    assert found.startswith(f"{origin!r} {reason}")


def test_web_origins_of_the_wrong_type_are_refused() -> None:
    assert problems(client_secret=None, web_origins="https://app.example.org") == [
        ("web_origins", "must be a list of strings")
    ]


def test_unknown_scope_is_refused() -> None:
    [(key, reason)] = problems(scopes=["openid", "groups"])
    assert key == "scopes"
    assert reason == (
        "unknown scope 'groups' (known: openid, profile, email, phone, offline_access)"
    )


@pytest.mark.parametrize("scopes", [["profile", "email"], []])
def test_scopes_must_include_openid(scopes: list[str]) -> None:
    assert problems(scopes=scopes) == [("scopes", "must include 'openid'")]


def test_unknown_scope_and_missing_openid_are_both_reported() -> None:
    assert [key for key, _ in problems(scopes=["groups"])] == ["scopes", "scopes"]


def test_duplicate_scopes_are_kept_once() -> None:
    reg, _ = parse(portal(scopes=["openid", "email", "openid"]))
    assert reg is not None
    assert reg.options.scopes == ("openid", "email")


@pytest.mark.parametrize("alg", ["HS256", "none", "rs256", ["RS256"]])
def test_bad_signing_alg_is_refused(alg: object) -> None:
    assert problems(id_token_signed_response_alg=alg) == [
        ("id_token_signed_response_alg", "must be one of RS256, ES256")
    ]


def test_es256_may_be_chosen() -> None:
    reg, _ = parse(portal(id_token_signed_response_alg="ES256"))
    assert reg is not None
    assert reg.options.id_token_signed_response_alg == "ES256"


@pytest.mark.parametrize("secret", ["short", "x" * 15, 1234567890123456789])
def test_short_or_non_text_client_secret_is_refused(secret: object) -> None:
    [(key, reason)] = problems(client_secret=secret)
    assert key == "client_secret"
    assert reason.startswith("must be at least 16 characters")


@pytest.mark.parametrize("client_id", ["member portal", "", "a" * 201, "é"])
def test_bad_client_id_is_refused(client_id: str) -> None:
    assert [key for key, _ in problems(client_id=client_id)] == ["client_id"]


def test_client_id_is_required() -> None:
    assert problems(client_id=None) == [("client_id", "is required")]


def test_secret_hash_is_not_a_registration_key() -> None:
    assert problems(client_secret_hash=hash_secret(SECRET)) == [
        ("client_secret_hash", "unknown key for profile 'oidc'")
    ]


def test_zendesk_keys_are_unknown_to_oidc() -> None:
    assert problems(subdomain="contoso") == [("subdomain", "unknown key for profile 'oidc'")]


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("sub", "'sub' is a standard claim the bridge computes itself"),
        ("email", "'email' is a standard claim the bridge computes itself"),
        ("Member-Type", "a claim name must be lowercase letters, digits and '_'"),
    ],
)
def test_claim_mapping_cannot_produce_standard_claims(target: str, reason: str) -> None:
    assert problems(claims={target: "member_type"}) == [(f"claims.{target}", reason)]


def test_claim_mapping_to_an_imis_property_needs_it_read() -> None:
    reg, _ = parse(portal(claims={"chapter": "Chapter"}))
    assert reg is not None
    assert reg.claims == {"chapter": "Chapter"}
    assert reg.imis_properties == ("Chapter",)


def test_to_data_is_what_a_user_would_write_without_the_secret() -> None:
    reg, _ = parse(portal(post_logout_redirect_uris=["https://portal.example.org/"]))
    assert reg is not None
    assert reg.to_data() == {
        "slug": "portal",
        "name": "Member Portal",
        "profile": "oidc",
        "enabled": True,
        "source": "database",
        "client_id": "member-portal",
        "client_type": "confidential",
        "redirect_uris": ["https://portal.example.org/callback"],
        "post_logout_redirect_uris": ["https://portal.example.org/"],
        "scopes": ["openid", "profile", "email"],
        "id_token_signed_response_alg": "RS256",
    }
