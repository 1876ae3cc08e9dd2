"""Unit tests of the Zendesk profile: JWT header and claims, return_to checks, error hints."""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Mapping
from typing import Any

import jwt
import pytest

from bridge.claims import USER_SCOPES, userinfo
from bridge.identity import Identity
from bridge.profiles import zendesk
from bridge.profiles.zendesk import ZendeskOptions, encode_jwt, error_hint, safe_return_to
from bridge.registry import parse_registration
from bridge.settings import Problem, Problems
from tests.support.profiles import PROFILES


def build_jwt(
    identity: Identity,
    options: ZendeskOptions,
    *,
    now: int,
    jti: str,
    mapping: Mapping[str, str] | None = None,
) -> str:
    """The JWT for ``identity`` as the core builds it at sign-in: the claims userinfo
    releases to a registration mapping ``mapping``, translated by the profile."""
    mapping = mapping or {}
    claims = userinfo(identity, USER_SCOPES, mapping, emails_verified=False)
    return encode_jwt(claims, options, mapping, now=now, jti=jti)


SECRET = "zendesk-shared-secret-0123456789abcdef"
OPTIONS = ZendeskOptions(
    subdomain="contoso", brand_hosts=("support.contoso.com",), shared_secret=SECRET
)
JANE = Identity(
    imis_id="23210",
    username="jdoe",
    full_name="Jane Doe",
    first_name="Jane",
    last_name="Doe",
    email="jane.doe@example.org",
    phone="+12025550100",
    organization_name="Contoso Ltd",
    organization_id="18000",
    member_type="REG",
    properties={"Chapter": "Capital", "Tags": "vip, board  volunteer", "Locale": "8"},
)


def _jti() -> str:
    return secrets.token_urlsafe(16)


def _decode(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(
        token, SECRET, algorithms=["HS256"], options={"verify_iat": False}
    )
    return claims


def test_header_is_exactly_what_zendesk_documents() -> None:
    token = build_jwt(JANE, OPTIONS, now=1_700_000_000, jti=_jti())
    header = token.split(".")[0]
    raw = base64.urlsafe_b64decode(header + "=" * (-len(header) % 4))
    assert raw == b'{"typ":"JWT","alg":"HS256"}'


def test_claims_of_a_member_with_everything() -> None:
    jti = _jti()
    claims = _decode(build_jwt(JANE, OPTIONS, now=1_700_000_000, jti=jti))
    assert claims == {
        "iat": 1_700_000_000,
        "jti": jti,
        "email": "jane.doe@example.org",
        "name": "Jane Doe",
        "external_id": "23210",
        "phone": "+12025550100",
    }


def test_external_id_is_a_string_and_phone_is_left_out_when_absent() -> None:
    person = Identity(imis_id="42", username="x", full_name="X Y", email="x@example.org")
    claims = _decode(build_jwt(person, OPTIONS, now=1, jti=_jti()))
    assert claims["external_id"] == "42"
    assert isinstance(claims["external_id"], str)
    assert "phone" not in claims


def test_malformed_phone_is_left_out() -> None:
    person = Identity(
        imis_id="42", username="x", full_name="X", email="x@example.org", phone="202 555"
    )
    assert "phone" not in _decode(build_jwt(person, OPTIONS, now=1, jti=_jti()))


@pytest.mark.parametrize(
    ("first", "last", "expected"),
    [("Dana", "Whitfield", "Dana Whitfield"), (None, None, "nobody")],
)
def test_name_is_never_empty(first: str | None, last: str | None, expected: str) -> None:
    person = Identity(
        imis_id="1",
        username="u",
        full_name="  ",
        first_name=first,
        last_name=last,
        email="nobody@example.org",
    )
    assert _decode(build_jwt(person, OPTIONS, now=1, jti=_jti()))["name"] == expected


def test_no_email_cannot_build_a_token() -> None:
    person = Identity(imis_id="1", username="u", full_name="No Email")
    with pytest.raises(ValueError, match="primary email"):
        build_jwt(person, OPTIONS, now=1, jti=_jti())


def test_a_short_jti_is_refused() -> None:
    with pytest.raises(ValueError, match="128"):
        build_jwt(JANE, OPTIONS, now=1, jti="counter-1")


def test_mapped_claims_are_converted() -> None:
    mapping = {
        "organization": "organization_name",
        "organization_id": "organization_id",
        "organizations": "organization_name",
        "tags": "Tags",
        "locale_id": "Locale",
        "user_fields.chapter": "Chapter",
        "user_fields.member_type": "member_type",
        "remote_photo_url": "Missing",
    }
    claims = _decode(build_jwt(JANE, OPTIONS, now=1, jti=_jti(), mapping=mapping))
    assert claims["organization"] == "Contoso Ltd"
    assert claims["organization_id"] == "18000"
    assert claims["organizations"] == ["Contoso Ltd"]
    assert claims["tags"] == ["vip", "board", "volunteer"]
    assert claims["locale_id"] == 8
    assert claims["user_fields"] == {"chapter": "Capital", "member_type": "REG"}
    assert "remote_photo_url" not in claims


def test_remote_photo_url_must_be_https() -> None:
    person = Identity(
        imis_id="1",
        username="u",
        full_name="U",
        email="u@example.org",
        properties={"Photo": "http://example.org/me.png", "Safe": "https://example.org/me.png"},
    )
    bad = _decode(
        build_jwt(person, OPTIONS, now=1, jti=_jti(), mapping={"remote_photo_url": "Photo"})
    )
    good = _decode(
        build_jwt(person, OPTIONS, now=1, jti=_jti(), mapping={"remote_photo_url": "Safe"})
    )
    assert "remote_photo_url" not in bad
    assert good["remote_photo_url"] == "https://example.org/me.png"


@pytest.mark.parametrize("target", ["role", "custom_role_id", "role.x", "email", "name"])
def test_a_mapping_can_never_produce_role_or_override_identity_claims(target: str) -> None:
    claims = _decode(build_jwt(JANE, OPTIONS, now=1, jti=_jti(), mapping={target: "member_type"}))
    assert "role" not in claims
    assert "custom_role_id" not in claims
    assert claims["email"] == "jane.doe@example.org"
    assert claims["name"] == "Jane Doe"


@pytest.mark.parametrize("target", ["role", "custom_role_id"])
def test_a_registration_mapping_role_is_refused(target: str) -> None:
    sink: list[Problem] = []
    data = {
        "name": "Helpdesk",
        "profile": "zendesk",
        "subdomain": "contoso",
        "shared_secret": SECRET,
        "claims": {target: "member_type"},
    }
    reg = parse_registration(
        "helpdesk", data, Problems("helpdesk.toml", sink), profiles=PROFILES, hash_secret=str
    )
    assert reg is None
    assert [p.key for p in sink] == [f"claims.{target}"]
    assert "never be mapped" in sink[0].reason


def test_jti_is_unique_across_tokens() -> None:
    seen = {_decode(build_jwt(JANE, OPTIONS, now=1, jti=_jti()))["jti"] for _ in range(100)}
    assert len(seen) == 100


# --- return_to ------------------------------------------------------------------

OVERRIDE = "http://127.0.0.1:8123/_demo/zendesk/contoso"


@pytest.mark.parametrize(
    "value",
    [
        "/hc/en-us",
        "/",
        "/agent/tickets/1?x=1#y",
        "https://contoso.zendesk.com/agent/tickets/1",
        "https://contoso.zendesk.com:443/hc",
        "https://support.contoso.com/hc/en-us/articles/1",
        "http://127.0.0.1:8123/_demo/zendesk/contoso/hc",
    ],
)
def test_return_to_on_zendesk_is_kept(value: str) -> None:
    assert safe_return_to(value, OPTIONS, OVERRIDE) == value


ATTACKS = [
    "https://evil.example/",
    "https://contoso.zendesk.com.evil.example/",
    "https://other.zendesk.com/hc",
    "//evil.example/",
    "\\\\evil.example/",
    "/\\evil.example/",
    "\\/evil.example/",
    "https://contoso.zendesk.com@evil.com/",
    "https://user:pw@contoso.zendesk.com/",
    "javascript:alert(1)",
    "JavaScript:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    "http://contoso.zendesk.com/hc",
    "https://contoso.zendesk.com:8443/hc",
    "https://brand.contoso.com/hc",
    "https://support.contoso.com.evil.example/",
    "/%2F%2Fevil.example/",
    "/%252F%252Fevil.example/",
    "%2F%2Fevil.example",
    "/%5Cevil.example",
    "https%3A%2F%2Fevil.example",
    "https://contoso.zendesk.com%40evil.com/",
    "https://contoso.zendesk.com%2F@evil.com/",
    "/hc\r\nSet-Cookie: x=1",
    "/hc%0d%0aSet-Cookie:%20x=1",
    "/hc\x00",
    " /hc",
    "\t//evil.example",
    "hc/en-us",
    "https:evil.example",
    "https:/evil.example",
    "https://xn--cntoso-9ya.zendesk.com/",
    "https://contos\u043e.zendesk.com/",  # Cyrillic o
    "http://127.0.0.1:9999/hc",
    "/" + "a" * 3000,
]


@pytest.mark.parametrize("value", ATTACKS)
def test_return_to_open_redirect_attempts_are_dropped(
    value: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("WARNING", logger="bridge.zendesk"):
        assert safe_return_to(value, OPTIONS, OVERRIDE) is None
    assert "return_to dropped" in caplog.text


def test_override_origin_counts_only_when_set() -> None:
    value = "http://127.0.0.1:8123/_demo/zendesk/contoso/hc"
    assert safe_return_to(value, OPTIONS, None) is None
    assert safe_return_to(value, OPTIONS, "https://contoso.zendesk.com") is None


def test_missing_return_to_is_none_without_a_log(caplog: pytest.LogCaptureFixture) -> None:
    assert safe_return_to(None, OPTIONS, None) is None
    assert safe_return_to("", OPTIONS, None) is None
    assert caplog.text == ""


# --- error hints -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("Invalid JWT signature", "shared secret"),
        ("Token has expired (iat)", "clock"),
        ("The jti has already been used", "already used"),
        ("Phone number is invalid", "phone"),
        ("Please provide a valid email", "email"),
    ],
)
def test_error_hints_name_the_likely_cause(message: str, expected: str) -> None:
    hint = error_hint(message)
    assert hint is not None
    assert expected in hint


def test_unknown_error_has_no_hint() -> None:
    assert error_hint("Something odd") is None


def test_subdomain_forms_are_normalised() -> None:
    for raw in ("contoso", "Contoso.zendesk.com", "https://contoso.zendesk.com/"):
        assert zendesk.normalise_subdomain(raw) == ("contoso", None)
    subdomain, reason = zendesk.normalise_subdomain("support.contoso.com")
    assert subdomain is None
    assert reason is not None
    assert "brand_hosts" in reason
    assert json.dumps(zendesk.JWT_HEADER, separators=(",", ":")) == '{"typ":"JWT","alg":"HS256"}'


def test_a_short_shared_secret_is_refused() -> None:
    sink: list[Problem] = []
    data = {"name": "H", "profile": "zendesk", "subdomain": "c", "shared_secret": "x" * 31}
    assert (
        parse_registration("h", data, Problems("h.toml", sink), profiles=PROFILES, hash_secret=str)
        is None
    )
    assert [p.key for p in sink] == ["shared_secret"]


def test_g5_a_locale_id_int_cannot_read_is_dropped_not_a_crash() -> None:
    """``str.isdigit`` takes ``²`` (and ``٣``), which is no Zendesk locale id: the claim
    is left out, as any unusable value is, instead of failing the sign-in."""
    for locale in ("\u00b2", "\u0663"):
        person = Identity(
            imis_id="1",
            username="u",
            full_name="U",
            email="u@example.org",
            properties={"Locale": locale},
        )
        token = build_jwt(person, OPTIONS, now=1, jti=_jti(), mapping={"locale_id": "Locale"})
        assert "locale_id" not in _decode(token)
