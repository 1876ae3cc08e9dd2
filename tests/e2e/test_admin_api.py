"""The admin JSON API over real HTTP: tokens, registrations, audit, keys (SECURITY F2-F4).

A real bridge on a loopback port; tokens are made with ``bridge admin token
create`` against its configuration folder, as an operator would. Every response
a test receives is kept, so the secret tests can search all of them.
"""

from __future__ import annotations

import io
import json
import secrets
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from bridge import cli
from bridge.keys import verify_secret
from bridge.storage.models import RegistrationRow
from tests.support.bridge import Harness, hidden_fields, running_bridge

API = "/admin/api"
ZENDESK_SECRET = "api-zendesk-shared-secret-" + "q" * 20
FILE_PORTAL = """
name = "File Portal"
profile = "oidc"
client_id = "file-portal"
redirect_uris = ["https://file.example.org/cb"]
"""


@pytest.fixture(scope="module")
def bridge(tmp_path_factory: pytest.TempPathFactory, database_url: str) -> Iterator[Harness]:
    with running_bridge(
        tmp_path_factory.mktemp("admin-api"),
        database_url,
        registrations={"file-portal": FILE_PORTAL},
    ) as harness:
        yield harness


def bridge_cli(harness: Harness, *argv: str) -> tuple[int, str, str]:
    """``bridge ARGV --config`` the running bridge's folder, in-process."""
    out, err = io.StringIO(), io.StringIO()
    old = sys.stdout, sys.stderr, sys.stdin
    sys.stdout, sys.stderr, sys.stdin = out, err, io.StringIO("")
    try:
        code = cli.main([*argv, "--config", str(harness.config_dir)])
    finally:
        sys.stdout, sys.stderr, sys.stdin = old
    return code, out.getvalue(), err.getvalue()


def create_token(harness: Harness, name: str) -> str:
    code, out, err = bridge_cli(harness, "admin", "token", "create", "--name", name)
    assert code == 0, err
    return out.splitlines()[-1]


@pytest.fixture(scope="module")
def token_name() -> str:
    return f"tests-{secrets.token_hex(3)}"


@pytest.fixture(scope="module")
def token(bridge: Harness, token_name: str) -> str:
    return create_token(bridge, token_name)


class Seen:
    """Every response body (and header) a test's clients received."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    def hook(self, response: httpx.Response) -> None:
        response.read()
        self.texts.append(f"{response.headers}\n{response.text}")

    def count(self, text: str) -> int:
        return sum(1 for seen in self.texts if text in seen)


@pytest.fixture
def seen() -> Seen:
    return Seen()


@pytest.fixture
def api(bridge: Harness, token: str, seen: Seen) -> Iterator[httpx.Client]:
    with bridge.client(
        headers={"authorization": f"Bearer {token}"},
        event_hooks={"response": [seen.hook]},
    ) as client:
        yield client


@pytest.fixture
def anonymous(bridge: Harness, seen: Seen) -> Iterator[httpx.Client]:
    with bridge.client(event_hooks={"response": [seen.hook]}) as client:
        yield client


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def new_oidc(slug: str, **extra: Any) -> dict[str, Any]:
    return {
        "slug": slug,
        "profile": "oidc",
        "name": "API Portal",
        "client_id": slug,
        "redirect_uris": ["https://portal.example.org/cb"],
        **extra,
    }


def new_zendesk(slug: str, **extra: Any) -> dict[str, Any]:
    return {
        "slug": slug,
        "profile": "zendesk",
        "name": "API Helpdesk",
        "subdomain": "contoso",
        "shared_secret": ZENDESK_SECRET,
        **extra,
    }


def error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The JSON error body of ``response``, checked to be ``status`` and ``code``."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body: dict[str, Any] = response.json()
    assert body["error"] == code, body
    assert isinstance(body["message"], str)
    assert body["message"]
    return body


def audit_of(api: httpx.Client, **filters: str) -> list[dict[str, Any]]:
    response = api.get(f"{API}/audit", params=filters)
    assert response.status_code == 200, response.text
    events: list[dict[str, Any]] = response.json()["events"]
    return events[::-1]  # oldest first


# --- who gets in (F4) ----------------------------------------------------------------------

ADDRESSES = [
    ("GET", "/registrations"),
    ("POST", "/registrations"),
    ("GET", "/registrations/file-portal"),
    ("PATCH", "/registrations/file-portal"),
    ("DELETE", "/registrations/file-portal"),
    ("POST", "/registrations/file-portal/rotate-secret"),
    ("POST", "/registrations/file-portal/disable"),
    ("GET", "/profiles"),
    ("GET", "/audit"),
    ("GET", "/keys"),
    ("GET", "/no-such-thing"),
    ("PUT", "/profiles"),
]


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Basic bWFuYWdlcjpwYXNzd29yZDE=",
        "Bearer",
        "Bearer  bat_",
        "Bearer not-a-token",
        "Bearer bat_" + "A" * 43,  # the form of a token, but none was made
        "bat_" + "A" * 43,
    ],
)
def test_f4_without_a_valid_token_every_address_answers_401(
    anonymous: httpx.Client, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"authorization": authorization}
    for method, path in ADDRESSES:
        response = anonymous.request(method, API + path, headers=headers, json={"name": "x"})
        body = error(response, 401, "unauthorized" if authorization is None else "invalid_token")
        assert response.headers["www-authenticate"].startswith("Bearer realm=")
        assert response.headers["cache-control"] == "no-store"
        assert set(body) == {"error", "message"}


def test_f4_the_openapi_document_needs_no_token(anonymous: httpx.Client) -> None:
    response = anonymous.get(f"{API}/openapi.json")
    assert response.status_code == 200
    assert response.json()["openapi"] == "3.1.0"


def test_f4_a_revoked_token_gets_401_at_once_and_use_is_recorded(
    bridge: Harness, anonymous: httpx.Client
) -> None:
    name = unique("short-lived")
    raw = create_token(bridge, name)
    headers = {"authorization": f"Bearer {raw}"}
    assert anonymous.get(f"{API}/profiles", headers=headers).status_code == 200
    code, out, _ = bridge_cli(bridge, "admin", "token", "list", "--json")
    assert code == 0
    mine = next(t for t in json.loads(out) if t["name"] == name)
    assert mine["last_used_at"] is not None
    assert raw not in out
    assert bridge_cli(bridge, "admin", "token", "revoke", name)[0] == 0
    response = anonymous.get(f"{API}/profiles", headers=headers)
    error(response, 401, "invalid_token")
    assert 'error="invalid_token"' in response.headers["www-authenticate"]


# --- registrations ---------------------------------------------------------------------------


def test_crud_round_trip(api: httpx.Client, bridge: Harness) -> None:
    slug = unique("crud")
    added = api.post(f"{API}/registrations", json=new_oidc(slug))
    assert added.status_code == 201, added.text
    assert added.headers["location"] == f"{API}/registrations/{slug}"
    body = added.json()
    assert body["secret_field"] == "client_secret"
    row = bridge.services.store.get_registration(slug)
    assert verify_secret(body["generated_secret"], row.secret_hash)
    reg = body["registration"]
    assert (reg["slug"], reg["profile"], reg["source"], reg["enabled"]) == (
        slug,
        "oidc",
        "database",
        True,
    )
    assert reg["client_type"] == "confidential"
    assert {"label": "Token endpoint", "url": f"{bridge.url}/token"} in reg["endpoints"]

    assert api.get(f"{API}/registrations/{slug}").json() == {"registration": reg}
    listed = api.get(f"{API}/registrations").json()
    assert reg in listed["registrations"]
    assert any(
        r["slug"] == "file-portal" and r["source"] == "file" for r in listed["registrations"]
    )

    edited = api.patch(
        f"{API}/registrations/{slug}",
        json={
            "name": "Renamed Portal",
            "post_logout_redirect_uris": ["https://portal.example.org/"],
        },
    )
    assert edited.status_code == 200, edited.text
    assert edited.json()["registration"]["name"] == "Renamed Portal"
    assert "generated_secret" not in edited.json()
    removed = api.patch(f"{API}/registrations/{slug}", json={"post_logout_redirect_uris": None})
    assert removed.json()["registration"]["post_logout_redirect_uris"] == []

    disabled = api.post(f"{API}/registrations/{slug}/disable")
    assert disabled.json()["registration"]["enabled"] is False
    assert bridge.services.registry.get(slug).enabled is False
    enabled = api.post(f"{API}/registrations/{slug}/enable")
    assert enabled.json()["registration"]["enabled"] is True
    assert api.patch(f"{API}/registrations/{slug}", json={"enabled": False}).status_code == 200
    assert bridge.services.registry.get(slug).enabled is False

    deleted = api.delete(f"{API}/registrations/{slug}")
    assert deleted.status_code == 204
    assert deleted.content == b""
    error(api.get(f"{API}/registrations/{slug}"), 404, "not_found")
    error(api.delete(f"{API}/registrations/{slug}"), 404, "not_found")
    assert bridge.services.registry.get(slug) is None


def test_a_public_client_gets_no_secret(api: httpx.Client) -> None:
    slug = unique("spa")
    added = api.post(
        f"{API}/registrations",
        json=new_oidc(slug, public=True, web_origins=["https://spa.example.org"]),
    )
    assert added.status_code == 201, added.text
    assert "generated_secret" not in added.json()
    assert added.json()["registration"]["client_type"] == "public"
    refused = error(api.post(f"{API}/registrations/{slug}/rotate-secret"), 400, "change_refused")
    assert refused["reason"] == "public_client"


def test_f2_a_secret_is_shown_once_then_never_again(
    api: httpx.Client, anonymous: httpx.Client, seen: Seen, bridge: Harness
) -> None:
    """Search every answer of every endpoint for the secrets (SECURITY F2)."""
    portal, desk = unique("once"), unique("desk")
    generated = api.post(f"{API}/registrations", json=new_oidc(portal)).json()["generated_secret"]
    assert api.post(f"{API}/registrations", json=new_zendesk(desk)).status_code == 201
    rotated = api.post(f"{API}/registrations/{portal}/rotate-secret").json()["generated_secret"]
    assert rotated != generated
    pasted = "pasted-zendesk-secret-" + "p" * 24
    assert (
        api.post(f"{API}/registrations/{desk}/rotate-secret", json={"secret": pasted}).status_code
        == 200
    )
    assert bridge.services.registry.get(desk).options.shared_secret == pasted
    given = "given-client-secret-" + "g" * 20
    assert api.patch(f"{API}/registrations/{portal}", json={"client_secret": given}).is_success
    for slug in (portal, desk):
        api.get(f"{API}/registrations/{slug}")
        api.patch(f"{API}/registrations/{slug}", json={"name": "Still secret"})
        api.post(f"{API}/registrations/{slug}/disable")
        api.post(f"{API}/registrations/{slug}/enable")
    api.get(f"{API}/registrations")
    api.get(f"{API}/audit", params={"limit": 1000})
    api.get(f"{API}/profiles")
    api.get(f"{API}/keys")
    anonymous.get(f"{API}/openapi.json")
    error(api.post(f"{API}/registrations", json=new_zendesk(desk)), 409, "conflict")
    error(api.post(f"{API}/registrations", json=new_oidc(portal)), 409, "conflict")

    assert len(seen.texts) >= 15
    assert seen.count(generated) == 1  # in the answer that made it, and nowhere else
    assert seen.count(rotated) == 1
    for stored in (ZENDESK_SECRET, pasted, given):
        assert seen.count(stored) == 0, stored
    row = bridge.services.store.get_registration(portal)
    assert seen.count(row.secret_hash) == 0


def test_f3_every_change_is_audited_with_the_token_name_and_address(
    api: httpx.Client, token_name: str
) -> None:
    slug = unique("audited")
    api.post(f"{API}/registrations", json=new_zendesk(slug))
    api.patch(f"{API}/registrations/{slug}", json={"brand_hosts": ["help.example.org"]})
    api.post(f"{API}/registrations/{slug}/disable")
    api.post(f"{API}/registrations/{slug}/enable")
    api.post(f"{API}/registrations/{slug}/rotate-secret", json={"secret": "n" * 40})
    api.delete(f"{API}/registrations/{slug}")
    events = audit_of(api, target=slug)
    assert [e["action"] for e in events] == [
        "registration.add",
        "registration.edit",
        "registration.disable",
        "registration.enable",
        "registration.rotate-secret",
        "registration.remove",
    ]
    assert {e["actor"] for e in events} == {f"api:{token_name}"}
    assert {e["ip"] for e in events} == {"127.0.0.1"}
    assert events[0]["detail"] == {"fields": ["name", "profile", "subdomain"]}
    assert events[1]["detail"] == {"fields": ["brand_hosts"]}
    assert ZENDESK_SECRET not in json.dumps(events)
    assert "n" * 40 not in json.dumps(events)
    # The filters combine, and limit/offset page through them.
    assert [e["action"] for e in audit_of(api, target=slug, action="registration.enable")] == [
        "registration.enable"
    ]
    page = api.get(f"{API}/audit", params={"target": slug, "limit": 2, "offset": 1}).json()
    assert [e["action"] for e in page["events"]] == [
        "registration.rotate-secret",
        "registration.enable",
    ]
    assert (page["limit"], page["offset"]) == (2, 1)
    assert audit_of(api, actor="api:someone-else", target=slug) == []


def test_refused_changes_are_not_audited(api: httpx.Client) -> None:
    slug = unique("refused")
    api.post(f"{API}/registrations", json=new_oidc(slug, redirect_uris=["http://evil.example/"]))
    assert audit_of(api, target=slug) == []


def test_one_place_validates_the_api_says_what_the_cli_says(
    api: httpx.Client, bridge: Harness
) -> None:
    """The registry's refusal, word for word, from the API and from ``bridge registrations``."""
    slug = unique("bad")
    body = new_oidc(slug, redirect_uris=["http://app.example.org/cb#frag"], scopes=["email"])
    refused = error(api.post(f"{API}/registrations", json=body), 400, "invalid_registration")
    keys = [p["key"] for p in refused["problems"]]
    assert keys == ["redirect_uris[0]", "scopes"]
    assert refused["problems"][0]["reason"] == (
        "'http://app.example.org/cb#frag' must not contain a fragment"
    )
    assert refused["problems"][1]["reason"] == "must include 'openid'"
    code, _, err = bridge_cli(
        bridge,
        "registrations",
        "add",
        slug,
        "--set",
        "profile=oidc",
        "--set",
        "name=API Portal",
        "--set",
        f"client_id={slug}",
        "--set",
        'redirect_uris=["http://app.example.org/cb#frag"]',
        "--set",
        'scopes=["email"]',
    )
    assert code == cli.EXIT_FAIL
    assert err == f"bridge: {refused['message']}\n"
    assert bridge.services.registry.get(slug) is None


@pytest.mark.parametrize(
    ("body", "key", "reason"),
    [
        ({"name": 5}, "name", "must be a string, not int"),
        ({"enabled": "yes"}, "enabled", "must be true or false"),
        ({"redirect_uris": "https://a.example/cb"}, "redirect_uris", "must be a list of strings"),
        ({"colour": "blue"}, "colour", "unknown key for profile 'oidc'"),
        ({"client_secret": "short"}, "client_secret", "must be at least 16 characters"),
        ({"access": {"member_types": []}}, "access.member_types", "must be a non-empty list"),
        ({"claims": {"sub": "imis_id"}}, "claims.sub", "is a standard claim"),
        ({"client_secret_hash": "x"}, "client_secret_hash", "unknown key for profile 'oidc'"),
    ],
)
def test_wrong_types_and_unknown_fields_are_400_with_the_registrys_messages(
    api: httpx.Client, body: dict[str, Any], key: str, reason: str
) -> None:
    slug = unique("typed")
    refused = error(
        api.post(f"{API}/registrations", json={**new_oidc(slug), **body}),
        400,
        "invalid_registration",
    )
    assert any(p["key"] == key and reason in p["reason"] for p in refused["problems"]), refused


def test_the_body_must_name_a_slug_and_a_profile(api: httpx.Client) -> None:
    refused = error(
        api.post(f"{API}/registrations", json={"name": "x", "public": "no"}),
        400,
        "invalid_registration",
    )
    assert [p["key"] for p in refused["problems"]] == ["slug", "profile", "public"]
    refused = error(
        api.post(f"{API}/registrations", json=new_oidc("continue", profile="zendesk")),
        400,
        "invalid_registration",
    )
    assert refused["problems"][0]["key"] == "slug"


def test_slugs_and_client_ids_are_unique_409(api: httpx.Client) -> None:
    slug = unique("dup")
    assert api.post(f"{API}/registrations", json=new_oidc(slug)).status_code == 201
    error(api.post(f"{API}/registrations", json=new_zendesk(slug)), 409, "conflict")
    other = unique("dup")
    refused = error(
        api.post(f"{API}/registrations", json={**new_oidc(other), "client_id": slug}),
        409,
        "conflict",
    )
    assert refused["message"] == f"client_id {slug!r} is already used by {slug!r}"
    error(api.post(f"{API}/registrations", json=new_oidc("file-portal")), 409, "conflict")
    refused = error(
        api.post(f"{API}/registrations", json={**new_oidc(other), "client_id": "file-portal"}),
        409,
        "conflict",
    )
    assert "file-portal.toml" in refused["message"]


def test_file_registrations_are_read_only_409(api: httpx.Client) -> None:
    for response in (
        api.patch(f"{API}/registrations/file-portal", json={"name": "Mine"}),
        api.delete(f"{API}/registrations/file-portal"),
        api.post(f"{API}/registrations/file-portal/rotate-secret"),
        api.post(f"{API}/registrations/file-portal/disable"),
    ):
        body = error(response, 409, "read_only")
        assert "file-portal.toml; files are read-only" in body["message"]
    shown = api.get(f"{API}/registrations/file-portal").json()["registration"]
    assert shown["source"] == "file"
    assert shown["file"].endswith("file-portal.toml")
    assert shown["enabled"] is True


def test_a_zendesk_secret_must_be_given_to_rotate_it(api: httpx.Client) -> None:
    slug = unique("paste")
    api.post(f"{API}/registrations", json=new_zendesk(slug))
    refused = error(api.post(f"{API}/registrations/{slug}/rotate-secret"), 400, "change_refused")
    assert refused["reason"] == "secret_from_app"
    error(
        api.post(f"{API}/registrations/{slug}/rotate-secret", json={"secret": "short"}),
        400,
        "invalid_registration",
    )
    error(
        api.post(f"{API}/registrations/{slug}/rotate-secret", json={"secret": 5}),
        400,
        "invalid_request",
    )
    error(
        api.post(f"{API}/registrations/{slug}/rotate-secret", json={"secret": "s" * 40, "x": 1}),
        400,
        "invalid_request",
    )


def test_changes_cannot_move_a_registration_to_another_slug_or_profile(
    api: httpx.Client,
) -> None:
    slug = unique("fixed")
    api.post(f"{API}/registrations", json=new_oidc(slug))
    for change in ({"profile": "oidc"}, {"profile": "zendesk"}, {"slug": "other"}):
        error(api.patch(f"{API}/registrations/{slug}", json=change), 400, "invalid_request")
    error(
        api.patch(f"{API}/registrations/{slug}", json={"client_id": None}),
        400,
        "invalid_registration",
    )


def test_an_unreadable_stored_registration_is_409_and_can_still_be_removed(
    api: httpx.Client, bridge: Harness
) -> None:
    slug = unique("broken")
    bridge.services.store.insert_registration(
        RegistrationRow(
            slug=slug,
            name="Hand-edited",
            profile="oidc",
            client_id=slug,
            options_json='{"bogus": 1}',
            created_at=0,
            updated_at=0,
        )
    )
    error(api.get(f"{API}/registrations/{slug}"), 409, "unreadable_registration")
    listed = api.get(f"{API}/registrations").json()
    assert slug not in [r["slug"] for r in listed["registrations"]]
    assert any(slug in problem for problem in listed["unreadable"])
    assert api.delete(f"{API}/registrations/{slug}").status_code == 204


# --- bad requests are 4xx, never 500 ---------------------------------------------------------

JSON = {"content-type": "application/json"}
BAD_BODIES = [
    (JSON, b"{not json", 400, "invalid_request"),
    (JSON, b"", 400, "invalid_request"),
    (JSON, b"[]", 400, "invalid_request"),
    (JSON, b'"text"', 400, "invalid_request"),
    (JSON, b"\xff\xfe{}", 400, "invalid_request"),
    (JSON, b'{"slug": "a", "slug": "b"}', 400, "invalid_request"),
    (JSON, b'{"slug": NaN}', 400, "invalid_request"),
    (JSON, b'{"name": "a\\u0000b"}', 400, "invalid_request"),
    (JSON, b'{"name": "\\ud800"}', 400, "invalid_request"),
    (JSON, b'{"claims": ' + b'{"a": ' * 12 + b'"x"' + b"}" * 13, 400, "invalid_request"),
    (JSON, b"[" * 50_000, 400, "invalid_request"),
    (JSON, b'{"n": 1' + b"0" * 5000 + b"}", 400, "invalid_request"),
    ({"content-type": "text/plain"}, b"{}", 415, "unsupported_media_type"),
    ({"content-type": "application/x-www-form-urlencoded"}, b"a=b", 415, "unsupported_media_type"),
    ({"content-type": "application/json; charset=latin-1"}, b"{}", 415, "unsupported_media_type"),
    (JSON, b'{"a": "' + b"x" * 70_000 + b'"}', 413, "payload_too_large"),
]


@pytest.mark.parametrize(("headers", "content", "status", "code"), BAD_BODIES)
def test_bad_bodies_are_clear_4xx_json(
    api: httpx.Client, headers: dict[str, str], content: bytes, status: int, code: str
) -> None:
    error(api.post(f"{API}/registrations", headers=headers, content=content), status, code)
    error(
        api.patch(f"{API}/registrations/file-portal", headers=headers, content=content),
        status,
        code,
    )


def test_a_huge_body_without_a_length_is_413_json(api: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"name": "'
        for _ in range(100):
            yield b"x" * 1024
        yield b'"}'

    error(
        api.post(f"{API}/registrations", headers=JSON, content=chunks()), 413, "payload_too_large"
    )


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/audit", {"limit": "0"}),
        ("/audit", {"limit": "1001"}),
        ("/audit", {"limit": "ten"}),
        ("/audit", {"offset": "-1"}),
        ("/audit", {"offset": "9" * 30}),
        ("/audit", {"actor": "a\x00b"}),
        ("/audit", {"colour": "blue"}),
        ("/registrations", {"page": "2"}),
        ("/keys", {"x": ""}),
    ],
)
def test_bad_query_parameters_are_400(api: httpx.Client, path: str, params: dict[str, str]) -> None:
    error(api.get(API + path, params=params), 400, "invalid_request")


def test_odd_addresses_and_methods_are_json_404_and_405(api: httpx.Client) -> None:
    for path in ("/registrations/NOT_A_SLUG", "/registrations/%00", "/registrations/a%ffb"):
        error(api.get(API + path), 404, "not_found")
        error(api.delete(API + path), 404, "not_found")
    error(api.get(f"{API}/registrations/file-portal/nothing"), 404, "not_found")
    refused = api.put(f"{API}/registrations")
    error(refused, 405, "method_not_allowed")
    assert refused.headers["allow"] == "GET, POST, HEAD"
    error(api.get(f"{API}/registrations/file-portal/enable"), 405, "method_not_allowed")


# --- profiles, keys, the document --------------------------------------------------------------


def test_profiles_are_each_profiles_options_schema(api: httpx.Client, bridge: Harness) -> None:
    listed = api.get(f"{API}/profiles").json()
    installed = bridge.services.profiles
    assert [p["name"] for p in listed["profiles"]] == list(installed)
    for shown in listed["profiles"]:
        profile = installed[shown["name"]]
        assert shown["display_name"] == profile.display_name
        assert [o["name"] for o in shown["options"]] == [f.name for f in profile.schema.fields]
        for option, spec in zip(shown["options"], profile.schema.fields, strict=True):
            assert option == {
                "name": spec.name,
                "label": spec.label,
                "help": spec.help,
                "required": spec.required,
                "kind": spec.kind,
                "secret": spec.secret,
            }
    names = {p["name"]: p["display_name"] for p in listed["profiles"]}
    assert names["oidc"] == "OpenID Connect"
    assert names["zendesk"] == "Zendesk Profile"
    assert [o["name"] for o in listed["common_options"]] == ["name", "enabled", "access", "claims"]


def test_keys_show_state_and_dates_never_private_material(
    api: httpx.Client, anonymous: httpx.Client
) -> None:
    listed = api.get(f"{API}/keys").json()
    published = {k["kid"] for k in anonymous.get("/.well-known/jwks.json").json()["keys"]}
    assert {k["kid"] for k in listed["keys"] if k["in_jwks"]} == published
    assert {k["state"] for k in listed["keys"]} <= {"current", "next", "retired"}
    for key in listed["keys"]:
        assert set(key) == {
            "kid",
            "alg",
            "state",
            "created_at",
            "activated_at",
            "retired_at",
            "retire_until",
            "in_jwks",
        }
    assert listed["keyring"]["encrypts"] == listed["keyring"]["ids"][-1]
    assert "PRIVATE" not in json.dumps(listed)


def test_the_openapi_document_describes_every_route_and_profile(
    anonymous: httpx.Client, bridge: Harness
) -> None:
    spec = anonymous.get(f"{API}/openapi.json").json()
    assert spec["servers"] == [{"url": f"{bridge.url}{API}"}]
    assert set(spec["paths"]) == {
        "/registrations",
        "/registrations/{slug}",
        "/registrations/{slug}/rotate-secret",
        "/registrations/{slug}/enable",
        "/registrations/{slug}/disable",
        "/profiles",
        "/audit",
        "/keys",
        "/stats",
        "/openapi.json",
    }
    assert spec["components"]["securitySchemes"]["adminToken"]["scheme"] == "bearer"
    assert spec["security"] == [{"adminToken": []}]
    schemas = spec["components"]["schemas"]
    variants = schemas["NewRegistration"]["oneOf"]
    assert [v["$ref"].rsplit("/", 1)[1] for v in variants] == [
        f"New_{name}" for name in bridge.services.profiles
    ]
    zendesk = schemas["New_zendesk"]
    assert zendesk["properties"]["profile"] == {
        "const": "zendesk",
        "description": "Zendesk Profile",
    }
    assert zendesk["properties"]["shared_secret"]["writeOnly"] is True
    assert "shared_secret" in zendesk["required"]
    oidc = schemas["New_oidc"]
    assert "client_secret" not in oidc["required"]  # generated when left out
    assert oidc["properties"]["redirect_uris"]["type"] == "array"
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            if method == "parameters" or path == "/openapi.json":
                continue
            assert "401" in operation["responses"], (path, method)
            assert "503" in operation["responses"], (path, method)


# --- sign-in statistics -------------------------------------------------------------------


def test_sign_in_statistics_count_what_happened_at_the_sign_in_page(
    api: httpx.Client, bridge: Harness
) -> None:
    before = api.get(f"{API}/stats", params={"registration": "-"}).json()
    with bridge.client() as browser:
        page = browser.get("/login")
        fields = hidden_fields(page.text)
        wrong = browser.post("/login", data={**fields, "username": "jdoe", "password": "nope"})
        assert wrong.status_code == 401
    after = api.get(f"{API}/stats", params={"registration": "-"}).json()
    assert after["registration"] == "-"
    assert len(after["hours"]["buckets"]) == 24
    assert len(after["days"]["buckets"]) == 30
    wrong_before = before["hours"]["totals"].get("wrong_password", 0)
    assert after["hours"]["totals"]["wrong_password"] == wrong_before + 1
    assert after["hours"]["buckets"][-1]["counts"]["wrong_password"] >= 1
    everything = api.get(f"{API}/stats").json()
    assert everything["registration"] is None
    assert (
        everything["days"]["totals"]["wrong_password"] >= after["days"]["totals"]["wrong_password"]
    )


@pytest.mark.parametrize("registration", ["Not A Slug", "x" * 64, "../etc"])
def test_sign_in_statistics_refuse_what_is_not_a_slug(api: httpx.Client, registration: str) -> None:
    response = api.get(f"{API}/stats", params={"registration": registration})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
