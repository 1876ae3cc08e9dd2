"""Unit tests of the Discourse profile: options, the signed request (E7), the signed answer (E8)."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import secrets
from typing import Any
from urllib.parse import parse_qs, parse_qsl, quote, urlencode, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.errors import BadRequest
from bridge.profiles import discourse, parse_claims
from bridge.profiles.discourse import (
    ConnectRefused,
    DiscourseOptions,
    build_response,
    failed_response,
    parse_options,
    redirect_url,
    return_url_problem,
    verify_request,
)
from bridge.settings import Problem, Problems

SECRET = "discourse-connect-secret-0123456789abcdef"
FORUM = "https://forum.contoso.org"
OPTIONS = DiscourseOptions(discourse_url=FORUM, connect_secret=SECRET)
RETURN = f"{FORUM}/session/sso_login"
CLAIMS: dict[str, Any] = {
    "sub": "23210",
    "name": "Jane Doe",
    "email": "jane.doe@example.org",
    "email_verified": False,
    "phone_number": "+12025550100",
}


def _hmac(payload: str, secret: str = SECRET) -> str:
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


def _request(
    fields: dict[str, str] | None = None, *, secret: str = SECRET, wrap: bool = False
) -> tuple[str, str]:
    """An sso/sig pair as Discourse sends it (Ruby's Base64.encode64 wraps lines when ``wrap``)."""
    if fields is None:
        fields = {"nonce": secrets.token_hex(16), "return_sso_url": RETURN}
    encoded = base64.b64encode(urlencode(fields).encode()).decode()
    if wrap:
        encoded = "".join(encoded[i : i + 60] + "\n" for i in range(0, len(encoded), 60))
    return encoded, _hmac(encoded, secret)


def _fields(sso: str) -> dict[str, str]:
    return dict(parse_qsl(base64.b64decode(sso, validate=True).decode(), keep_blank_values=True))


def _parse(data: dict[str, Any]) -> tuple[DiscourseOptions, list[Problem]]:
    sink: list[Problem] = []
    return parse_options(data, Problems("forum.toml", sink)), sink


def _refusal(sso: object, sig: object, options: DiscourseOptions = OPTIONS) -> str:
    with pytest.raises(ConnectRefused) as caught:
        verify_request(sso, sig, options)
    return caught.value.reason


# --- options -------------------------------------------------------------------------


def test_options_normalise_the_forum_url() -> None:
    options, problems = _parse(
        {"discourse_url": " HTTPS://Forum.Contoso.org:443/ ", "connect_secret": SECRET}
    )
    assert problems == []
    assert options.discourse_url == "https://forum.contoso.org"
    assert options.origin == ("https", "forum.contoso.org", 443)
    assert options.refuse_shared_email is True
    assert options.to_data() == {
        "discourse_url": "https://forum.contoso.org",
        "refuse_shared_email": True,
    }
    assert SECRET not in repr(options)


def test_options_keep_a_subfolder_forum_path() -> None:
    options, problems = _parse(
        {"discourse_url": "https://contoso.org/forum/", "connect_secret": SECRET}
    )
    assert problems == []
    assert options.discourse_url == "https://contoso.org/forum"
    assert options.path == "/forum"


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("http://forum.contoso.org", "https"),
        ("ftp://forum.contoso.org", "http"),
        ("https://user:pw@forum.contoso.org", "user name"),
        ("https://forum.contoso.org/?next=/x", "'?'"),
        ("https://forum.contoso.org/#top", "'#'"),
        ("https://forüm.contoso.org", "ASCII"),
        ("https://forum.contoso.org/a/../b", "unusual path"),
        ("forum.contoso.org", "http"),
        ("https://", "host"),
    ],
)
def test_options_refuse_a_bad_forum_url(url: str, words: str) -> None:
    _, problems = _parse({"discourse_url": url, "connect_secret": SECRET})
    assert [p.key for p in problems] == ["discourse_url"]
    assert words in problems[0].reason


def test_options_allow_http_only_on_this_machine() -> None:
    for url in ("http://localhost:4200", "http://127.0.0.1:9000/_demo/discourse/forum"):
        options, problems = _parse({"discourse_url": url, "connect_secret": SECRET})
        assert problems == [], url
        assert options.discourse_url == url


def test_options_require_a_long_connect_secret() -> None:
    _, missing = _parse({"discourse_url": FORUM})
    assert [p.key for p in missing] == ["connect_secret"]
    assert "required" in missing[0].reason
    _, short = _parse({"discourse_url": FORUM, "connect_secret": "0123456789"})
    assert [p.key for p in short] == ["connect_secret"]
    assert "at least 32" in short[0].reason
    assert "0123456789" not in short[0].reason  # the secret is never echoed
    _, spaced = _parse({"discourse_url": FORUM, "connect_secret": SECRET + " "})
    assert [p.key for p in spaced] == ["connect_secret"]


def test_options_check_refuse_shared_email() -> None:
    options, problems = _parse(
        {"discourse_url": FORUM, "connect_secret": SECRET, "refuse_shared_email": False}
    )
    assert problems == []
    assert options.refuse_shared_email is False
    _, bad = _parse({"discourse_url": FORUM, "connect_secret": SECRET, "refuse_shared_email": 1})
    assert [p.key for p in bad] == ["refuse_shared_email"]


def test_e8_admin_and_moderator_cannot_be_configured() -> None:
    sink: list[Problem] = []
    mapping = parse_claims(
        {
            "admin": "IsAdmin",
            "moderator": "member_type",
            "username": "username",
            "groups": "member_type",
            "custom": {"chapter": "Chapter"},
        },
        Problems("forum.toml", sink),
        allowed=discourse.claim_target,
    )
    assert mapping == {"username": "username", "groups": "member_type", "custom.chapter": "Chapter"}
    assert sorted(p.key for p in sink) == ["claims.admin", "claims.moderator"]
    assert all("staff powers" in p.reason for p in sink)


@pytest.mark.parametrize(
    "target",
    ["external_id", "email", "name", "nonce", "require_activation", "failed", "return_sso_url"],
)
def test_fields_the_bridge_computes_cannot_be_mapped(target: str) -> None:
    assert "computes itself" in (discourse.claim_target(target) or "")


@pytest.mark.parametrize(
    "target",
    [
        "username",
        "groups",
        "add_groups",
        "remove_groups",
        "avatar_url",
        "bio",
        "title",
        "locale",
        "website",
        "location",
        "custom.user_field_1",
    ],
)
def test_discourse_fields_can_be_mapped(target: str) -> None:
    assert discourse.claim_target(target) is None


@pytest.mark.parametrize("target", ["trust_level", "custom.bad key", "admin.x", "custom."])
def test_other_targets_are_refused(target: str) -> None:
    assert discourse.claim_target(target) is not None


# --- the request: E7 --------------------------------------------------------------


def test_a_request_as_discourse_signs_it_is_accepted() -> None:
    sso, sig = _request({"nonce": "cb68251eefb5211e58c00ff1395f0c0b", "return_sso_url": RETURN})
    request = verify_request(sso, sig, OPTIONS)
    assert request.nonce == "cb68251eefb5211e58c00ff1395f0c0b"
    assert request.return_sso_url == RETURN
    assert request.prompt is None
    assert not request.prompt_none


def test_prompt_none_is_read() -> None:
    sso, sig = _request({"nonce": "n1", "return_sso_url": RETURN, "prompt": "none"})
    assert verify_request(sso, sig, OPTIONS).prompt_none


def test_e7_signature_is_over_the_base64_string_as_sent() -> None:
    """Ruby wraps Base64 lines: the signature covers the line breaks, and they are accepted."""
    fields = {"nonce": "n" * 40, "return_sso_url": RETURN + "?a=" + "b" * 40}
    sso, sig = _request(fields, wrap=True)
    assert "\n" in sso
    assert verify_request(sso, sig, OPTIONS).nonce == "n" * 40
    # The same payload without its line breaks is another string: that signature fails.
    assert _refusal(sso.replace("\n", ""), sig) == "bad_signature"
    # A signature over the decoded payload (a common mistake) is refused too.
    assert _refusal(sso, _hmac(urlencode(fields))) == "bad_signature"


def test_e7_tampered_signature_or_payload_is_refused() -> None:
    sso, sig = _request()
    flipped = sig[:-1] + ("0" if sig[-1] != "0" else "1")
    assert _refusal(sso, flipped) == "bad_signature"
    other, _ = _request({"nonce": "x", "return_sso_url": RETURN})
    assert _refusal(other, sig) == "bad_signature"
    assert _refusal(sso, _hmac(sso, "another-secret-0123456789abcdefghij")) == "bad_signature"


@pytest.mark.parametrize(
    "sig",
    [None, "", "zz" * 32, "ABCDEF" + "0" * 58, "0" * 63, "0" * 65, "0" * 64 + "\n", "é" * 64, 7],
)
def test_e7_a_signature_that_is_not_64_lowercase_hex_is_refused(sig: object) -> None:
    sso, _ = _request()
    assert _refusal(sso, sig) == "bad_sig_format"


@pytest.mark.parametrize(
    "sso",
    [
        "bm9uY2U9MQ==%0A",  # still URL-encoded
        "bm9uY2U9MQ== ",  # a '+' turned into a space by a careless decoder
        "bm9uY2U9MQ-_",  # URL-safe alphabet
        "bm9uY2U9M\x00Q==",
        "bm9uY2U9MQ==é",
    ],
)
def test_e7_characters_outside_the_base64_alphabet_are_refused(sso: str) -> None:
    assert _refusal(sso, _hmac(sso) if sso.isascii() else "0" * 64) == "not_base64"


@pytest.mark.parametrize("sso", ["bm9uY2U9MQ=x", "bm9uY2U9M===", "b", "bm9=uY2U9MQ=="])
def test_e7_signed_but_malformed_base64_is_refused(sso: str) -> None:
    """Even a correctly signed value gets no answer when it is not Base64 with proper padding."""
    assert _refusal(sso, _hmac(sso)) == "not_base64"


def test_base64_without_padding_is_accepted() -> None:
    sso, _ = _request({"nonce": "n1", "return_sso_url": RETURN})
    bare = sso.rstrip("=")
    assert bare != sso
    assert verify_request(bare, _hmac(bare), OPTIONS).nonce == "n1"


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"return_sso_url": RETURN}, "no_nonce"),
        ({"nonce": "", "return_sso_url": RETURN}, "no_nonce"),
        ({"nonce": "n\x01", "return_sso_url": RETURN}, "bad_nonce"),
        ({"nonce": "n" * 300, "return_sso_url": RETURN}, "bad_nonce"),
        ({"nonce": "n1"}, "no_return_url"),
    ],
)
def test_e7_a_request_without_nonce_or_return_url_is_refused(
    fields: dict[str, str], reason: str
) -> None:
    assert _refusal(*_request(fields)) == reason


def test_e7_a_repeated_field_is_refused() -> None:
    raw = f"nonce=a&return_sso_url={quote(RETURN)}&nonce=b"
    sso = base64.b64encode(raw.encode()).decode()
    assert _refusal(sso, _hmac(sso)) == "duplicate_field"


def test_e7_a_payload_that_is_not_utf8_is_refused() -> None:
    sso = base64.b64encode(b"nonce=%ff%fe&return_sso_url=x").decode()
    assert _refusal(sso, _hmac(sso)) == "bad_payload"


def test_a_registration_without_secret_answers_nothing() -> None:
    sso, sig = _request()
    assert _refusal(sso, sig, DiscourseOptions(discourse_url=FORUM)) == "no_secret"


def test_refusal_is_a_400_whose_message_says_nothing_of_the_secret() -> None:
    sso, _ = _request()
    with pytest.raises(ConnectRefused) as caught:
        verify_request(sso, "0" * 64, OPTIONS)
    assert isinstance(caught.value, BadRequest)
    assert caught.value.status_code == 400
    assert "forum" in caught.value.message
    assert SECRET not in caught.value.message + caught.value.detail
    assert _hmac(sso) not in caught.value.message + caught.value.detail


@pytest.mark.parametrize(
    "url",
    [
        "https://forum.contoso.org.evil.com/session/sso_login",
        "https://evil.com/forum.contoso.org/session/sso_login",
        "https://forum.contoso.org@evil.com/session/sso_login",
        "https://evil.com@forum.contoso.org/session/sso_login",
        "https://evil.com\\@forum.contoso.org/session/sso_login",
        "https://forum.contoso.org\\.evil.com/",
        "https://forum.contoso.org//evil.com/session/sso_login",
        "https://forum.contoso.org/%2F%2Fevil.com",
        "https://forum.contoso.org/%252F%252Fevil.com",
        "https://forum.contoso.org/%5cevil.com",
        "https://forum.contoso.org/a/%2e%2e/b",
        "//forum.contoso.org/session/sso_login",
        "/session/sso_login",
        "http://forum.contoso.org/session/sso_login",
        "https://forum.contoso.org:444/session/sso_login",
        "https://forum.contoso.org:99999/session/sso_login",
        "https://forum.contoso.org./session/sso_login",
        "https://f\u043erum.contoso.org/session/sso_login",  # a Cyrillic o
        "https://forum.contoso.org%2eevil.com/session/sso_login",
        "https://forum.contoso.org/session/sso_login#x",
        "https://forum.contoso.org/session/sso_login\r\nSet-Cookie: a=b",
        "https://forum.contoso.org/ session",
        "javascript:alert(1)//forum.contoso.org",
        "https://[::1]/session/sso_login",
        "https://forum.contoso.org/" + "a" * 3000,
    ],
)
def test_e7_return_url_off_the_forum_is_refused(url: str) -> None:
    assert return_url_problem(url, OPTIONS) is not None
    sso, sig = _request({"nonce": "n1", "return_sso_url": url})
    assert _refusal(sso, sig) == "return_url"


@pytest.mark.parametrize(
    "url",
    [
        RETURN,
        "https://FORUM.contoso.org:443/session/sso_login",
        "https://forum.contoso.org/session/sso_login?return_path=%2Ft%2F1",
        "https://forum.contoso.org",
    ],
)
def test_return_url_on_the_forum_is_accepted(url: str) -> None:
    assert return_url_problem(url, OPTIONS) is None


def test_e7_return_url_must_stay_under_a_subfolder_forum() -> None:
    options = DiscourseOptions(discourse_url="https://contoso.org/forum", connect_secret=SECRET)
    assert return_url_problem("https://contoso.org/forum/session/sso_login", options) is None
    assert return_url_problem("https://contoso.org/forum", options) is None
    assert return_url_problem("https://contoso.org/forumevil/session/sso_login", options)
    assert return_url_problem("https://contoso.org/shop/session/sso_login", options)
    assert return_url_problem("https://contoso.org/forum/../shop", options)
    assert return_url_problem("https://contoso.org/forum/%2e%2e/shop", options)


def test_localhost_forum_matches_scheme_host_and_port() -> None:
    options = DiscourseOptions(discourse_url="http://127.0.0.1:9000", connect_secret=SECRET)
    assert return_url_problem("http://127.0.0.1:9000/session/sso_login", options) is None
    assert return_url_problem("http://127.0.0.1:9001/session/sso_login", options)
    assert return_url_problem("http://localhost:9000/session/sso_login", options)
    assert return_url_problem("https://127.0.0.1:9000/session/sso_login", options)


@settings(max_examples=300, deadline=None)
@given(sso=st.one_of(st.none(), st.integers(), st.text(max_size=300)), sig=st.text(max_size=80))
def test_e7_garbage_raises_only_the_refusal(sso: Any, sig: str) -> None:
    with contextlib.suppress(ConnectRefused):
        verify_request(sso, sig, OPTIONS)


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=300), wrap=st.booleans(), strip_padding=st.booleans())
def test_e7_signed_garbage_payload_raises_only_the_refusal(
    raw: bytes, wrap: bool, strip_padding: bool
) -> None:
    """Correctly signed bytes of any kind: the decoder refuses, never crashes."""
    sso = base64.b64encode(raw).decode()
    if strip_padding:
        sso = sso.rstrip("=")
    if wrap:
        sso = "\n".join(sso[i : i + 60] for i in range(0, len(sso), 60))
    with contextlib.suppress(ConnectRefused):
        verify_request(sso, _hmac(sso), OPTIONS)


@settings(max_examples=300, deadline=None)
@given(url=st.text(max_size=120))
def test_e7_garbage_return_url_raises_nothing(url: str) -> None:
    problem = return_url_problem(url, OPTIONS)
    assert problem is None or isinstance(problem, str)
    if problem is None:
        assert urlsplit(url).hostname == "forum.contoso.org"


# --- the answer: E8 -------------------------------------------------------------------


def test_answer_fields_nonce_echoed_and_activation_required() -> None:
    sso, sig = build_response(CLAIMS, "cb68251e", OPTIONS, emails_verified=False)
    assert sig == _hmac(sso)
    assert _fields(sso) == {
        "nonce": "cb68251e",
        "external_id": "23210",
        "email": "jane.doe@example.org",
        "name": "Jane Doe",
        "require_activation": "true",
    }


def test_e8_no_require_activation_when_emails_are_verified() -> None:
    sso, _ = build_response(CLAIMS, "n1", OPTIONS, emails_verified=True)
    assert "require_activation" not in _fields(sso)


def test_answer_is_strict_base64_and_signed_over_that_string() -> None:
    claims = {**CLAIMS, "bio": "x" * 500, "title": "Ünïcode & = + / ?"}
    sso, sig = build_response(claims, "n1", OPTIONS, emails_verified=False)
    assert "\n" not in sso
    assert "=" not in sso.rstrip("=")
    assert base64.b64encode(base64.b64decode(sso, validate=True)).decode() == sso
    assert sig == _hmac(sso)
    assert len(sig) == 64
    assert sig == sig.lower()
    assert _fields(sso)["title"] == "Ünïcode & = + / ?"


def test_e8_admin_and_moderator_are_never_sent() -> None:
    claims = {
        **CLAIMS,
        "admin": "true",
        "moderator": "true",
        "admin.x": "true",
        "require_activation": "false",
        "external_id": "1",
        "nonce": "other",
        "suppress_welcome_message": "true",
    }
    for verified in (True, False):
        sso, _ = build_response(claims, "n1", OPTIONS, emails_verified=verified)
        fields = _fields(sso)
        assert "admin" not in fields
        assert "moderator" not in fields
        assert "suppress_welcome_message" not in fields
        assert fields["external_id"] == "23210"
        assert fields["nonce"] == "n1"
        assert fields.get("require_activation") == (None if verified else "true")
        assert not any(k.startswith("admin") for k in fields)


def test_e8_admin_is_dropped_even_if_the_target_check_let_it_through(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The answer's last step drops admin/moderator on its own, not only via claim_target."""
    monkeypatch.setattr(discourse, "claim_target", lambda target: None)
    claims = {**CLAIMS, "admin": "true", "moderator": "true", "title": "kept"}
    sso, _ = build_response(claims, "n1", OPTIONS, emails_verified=True)
    fields = _fields(sso)
    assert fields["title"] == "kept"
    assert "admin" not in fields
    assert "moderator" not in fields


def test_mapped_fields_are_sent() -> None:
    claims = {
        **CLAIMS,
        "username": "jdoe",
        "groups": "Members, Board ,,members2",
        "add_groups": ["chapter_capital", "Members"],
        "remove_groups": "lapsed",
        "custom.chapter": "Capital",
        "custom.user_field_1": 18000,
        "avatar_url": "https://cdn.contoso.org/jane.png",
        "website": "https://jane.example.org",
        "locale": "pt_BR",
        "title": "Board member",
    }
    sso, _ = build_response(claims, "n1", OPTIONS, emails_verified=True)
    fields = _fields(sso)
    assert fields["username"] == "jdoe"
    assert fields["groups"] == "Members,Board,members2"
    assert fields["add_groups"] == "chapter_capital,Members"
    assert fields["remove_groups"] == "lapsed"
    assert fields["custom.chapter"] == "Capital"
    assert fields["custom.user_field_1"] == "18000"
    assert fields["avatar_url"] == "https://cdn.contoso.org/jane.png"
    assert fields["website"] == "https://jane.example.org"
    assert fields["locale"] == "pt_BR"
    assert fields["title"] == "Board member"
    assert "phone_number" not in fields
    assert "email_verified" not in fields
    assert "sub" not in fields


@pytest.mark.parametrize(
    ("target", "value"),
    [
        ("avatar_url", "http://cdn.contoso.org/jane.png"),
        ("avatar_url", "javascript:alert(1)"),
        ("website", "not a url"),
        ("locale", "en; drop"),
        ("groups", " , ,"),
        ("username", "   "),
        ("bio", None),
        ("title", True),
        ("custom.chapter", {"a": 1}),
    ],
)
def test_unusable_mapped_values_are_left_out(target: str, value: Any) -> None:
    sso, _ = build_response({**CLAIMS, target: value}, "n1", OPTIONS, emails_verified=True)
    assert target not in _fields(sso)


@pytest.mark.parametrize(
    "claims",
    [
        {"name": "Jane", "email": "j@example.org"},
        {"sub": "", "email": "j@example.org"},
        {"sub": "null", "email": "j@example.org"},
        {"sub": "23210", "name": "Jane"},
        {"sub": "23210", "email": "  "},
    ],
)
def test_answer_needs_external_id_and_email(claims: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        build_response(claims, "n1", OPTIONS, emails_verified=True)


def test_answer_needs_a_nonce_and_a_secret() -> None:
    with pytest.raises(ValueError):
        build_response(CLAIMS, "", OPTIONS, emails_verified=True)
    with pytest.raises(ValueError):
        build_response(CLAIMS, "n1", DiscourseOptions(FORUM), emails_verified=True)
    with pytest.raises(ValueError):
        failed_response("", OPTIONS)


def test_failed_answer_for_prompt_none() -> None:
    sso, sig = failed_response("n1", OPTIONS)
    assert sig == _hmac(sso)
    assert _fields(sso) == {"nonce": "n1", "failed": "true"}


@pytest.mark.parametrize(
    ("base", "joiner"),
    [
        (RETURN, "?"),
        (RETURN + "?return_path=%2Ft%2F1", "&"),
        (RETURN + "?", ""),
        (RETURN + "?a=1&", ""),
    ],
)
def test_redirect_url_keeps_the_return_query(base: str, joiner: str) -> None:
    sso, sig = build_response(CLAIMS, "n1", OPTIONS, emails_verified=False)
    url = redirect_url(base, sso, sig)
    assert url.startswith(base + joiner + "sso=")
    query = parse_qs(urlsplit(url).query)
    assert query["sso"] == [sso]
    assert query["sig"] == [sig]
    if "return_path" in base:
        assert query["return_path"] == ["/t/1"]


_field_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40
).filter(lambda s: s.strip() == s and s)


@settings(max_examples=200, deadline=None)
@given(
    nonce=_field_text.filter(lambda s: not any(ord(c) < 32 or ord(c) == 127 for c in s)),
    sub=st.from_regex(r"[0-9]{1,10}", fullmatch=True),
    name=_field_text,
    email=_field_text,
    groups=st.lists(st.from_regex(r"[a-z][a-z0-9_]{0,19}", fullmatch=True), max_size=4),
    verified=st.booleans(),
)
def test_round_trip_request_then_answer(
    nonce: str, sub: str, name: str, email: str, groups: list[str], verified: bool
) -> None:
    """Whatever Discourse's nonce, the answer decodes to exactly what was released."""
    sso, sig = _request({"nonce": nonce, "return_sso_url": RETURN})
    request = verify_request(sso, sig, OPTIONS)
    assert request.nonce == nonce
    claims: dict[str, Any] = {"sub": sub, "name": name, "email": email}
    if groups:
        claims["groups"] = ",".join(groups)
    out_sso, out_sig = build_response(claims, request.nonce, OPTIONS, emails_verified=verified)
    url = redirect_url(request.return_sso_url, out_sso, out_sig)
    query = parse_qs(urlsplit(url).query, keep_blank_values=True)
    assert query["sig"] == [_hmac(query["sso"][0])]
    fields = _fields(query["sso"][0])
    expected = {"nonce": nonce, "external_id": sub, "email": email, "name": name}
    if groups:
        expected["groups"] = ",".join(dict.fromkeys(groups))
    if not verified:
        expected["require_activation"] = "true"
    assert fields == expected
