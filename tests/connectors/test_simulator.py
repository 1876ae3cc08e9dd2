"""The iMIS simulator speaks the iMIS REST contract, enforces tokens and roles, injects faults."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from bridge.demo.simulator import (
    DEFAULT_PEOPLE_FILE,
    Faults,
    create_simulator,
    describe_people,
    load_people,
    serve_simulator,
    simulator_state,
)
from tests.connectors.conftest import SERVICE_PASSWORD, SERVICE_USER, Sim, running_simulator
from tests.support.servers import serve


@pytest.fixture
def http(sim: Sim) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sim.url, timeout=5) as client:
        yield client


def grant(http: httpx.Client, username: str, password: str = "password1") -> httpx.Response:
    return http.post(
        "/token", data={"grant_type": "password", "username": username, "password": password}
    )


def bearer(http: httpx.Client, username: str, password: str = "password1") -> dict[str, str]:
    response = grant(http, username, password)
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def service(http: httpx.Client) -> dict[str, str]:
    return bearer(http, SERVICE_USER, SERVICE_PASSWORD)


# --- /token ---------------------------------------------------------------------------


def test_password_grant_answers_like_imis(http: httpx.Client) -> None:
    response = grant(http, "JDoe")
    body = response.json()
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    assert set(body) == {
        "access_token",
        "token_type",
        "expires_in",
        "userName",
        ".issued",
        ".expires",
    }
    assert (body["token_type"], body["expires_in"], body["userName"]) == ("bearer", 1199, "jdoe")
    assert body[".issued"].endswith(" GMT")


@pytest.mark.parametrize(
    ("username", "password", "description"),
    [
        ("jdoe", "wrong", "The user name or password is incorrect."),
        ("nobody", "password1", "The user name or password is incorrect."),
        ("disabled", "password1", "The user account is disabled."),
        ("disabled", "wrong", "The user name or password is incorrect."),
    ],
)
def test_refused_grants_are_invalid_grant(
    http: httpx.Client, username: str, password: str, description: str
) -> None:
    response = grant(http, username, password)
    assert response.status_code == 400
    assert response.json() == {"error": "invalid_grant", "error_description": description}


def test_token_endpoint_wants_a_password_grant_as_a_form(http: httpx.Client) -> None:
    as_json = http.post("/token", json={"grant_type": "password", "username": "jdoe"})
    other_grant = http.post("/token", data={"grant_type": "client_credentials"})
    assert (as_json.status_code, as_json.json()["error"]) == (400, "invalid_request")
    assert (other_grant.status_code, other_grant.json()["error"]) == (400, "unsupported_grant_type")


# --- /api ------------------------------------------------------------------------------


def test_api_needs_a_valid_bearer_token(http: httpx.Client, sim: Sim) -> None:
    assert http.get("/api/Party/23210").status_code == 401
    bad = http.get("/api/Party/23210", headers={"Authorization": "Bearer nope"})
    assert bad.status_code == 401
    assert bad.headers["www-authenticate"] == "Bearer"
    headers = bearer(http, "jdoe")
    assert http.get("/api/Party/23210", headers=headers).status_code == 200
    sim.state.expire_tokens()
    assert http.get("/api/Party/23210", headers=headers).status_code == 401


def test_tokens_expire_after_token_seconds() -> None:
    with running_simulator(token_seconds=0) as sim, httpx.Client(base_url=sim.url) as http:
        assert http.get("/api/Party/23210", headers=bearer(http, "jdoe")).status_code == 401


def test_user_search_is_paged_with_type_annotations(http: httpx.Client) -> None:
    body = http.get("/api/User", params={"UserName": "eq:JDOE"}, headers=service(http)).json()
    assert body["$type"].startswith("Asi.Soa.Core.DataContracts.PagedResult`1")
    assert (body["Offset"], body["Count"], body["TotalCount"], body["HasNext"]) == (0, 1, 1, False)
    (user,) = body["Items"]["$values"]
    assert (user["UserId"], user["UserName"], user["IsDisabled"]) == ("23210", "jdoe", False)
    by_id = http.get("/api/User", params={"UserId": "23215"}, headers=service(http)).json()
    assert by_id["Items"]["$values"][0]["IsDisabled"] is True
    nobody = http.get("/api/User", params={"UserId": "23218"}, headers=service(http)).json()
    assert nobody["TotalCount"] == 0


def test_paging_follows_offset_and_limit(http: httpx.Client) -> None:
    first = http.get("/api/User", params={"Limit": "2"}, headers=service(http)).json()
    assert (first["Count"], first["HasNext"], first["NextOffset"]) == (2, True, 2)
    second = http.get("/api/User", params={"offset": "2", "limit": "2"}, headers=service(http))
    names = [u["UserName"] for u in second.json()["Items"]["$values"]]
    assert names
    assert names[0] not in {u["UserName"] for u in first["Items"]["$values"]}


def test_party_shapes(http: httpx.Client) -> None:
    headers = service(http)
    jane = http.get("/api/Party/23210", headers=headers).json()
    assert jane["$type"] == "Asi.Soa.Membership.DataContracts.PersonData, Asi.Contracts"
    assert jane["PersonName"]["FullName"] == "Jane Doe"
    assert jane["Emails"]["$values"][0] == {
        "$type": "Asi.Soa.Membership.DataContracts.EmailData, Asi.Contracts",
        "Address": "jane.doe@example.org",
        "EmailType": "_Primary",
        "IsPrimary": True,
    }
    assert jane["PrimaryOrganization"]["OrganizationPartyId"] == "18000"
    dana = http.get("/api/Party/23213", headers=headers).json()
    assert "FullName" not in dana["PersonName"]
    org = http.get("/api/Party/18000", headers=headers).json()
    assert "OrganizationData" in org["$type"]
    assert http.get("/api/Party/424242", headers=headers).status_code == 404


def test_party_search_by_email(http: httpx.Client) -> None:
    headers = service(http)
    for value in ("eq:ARCHERS@example.org", "archers@example.org"):
        body = http.get("/api/Party", params={"Email": value}, headers=headers).json()
        assert sorted(p["PartyId"] for p in body["Items"]["$values"]) == ["23216", "23217", "23218"]
    refused = http.get("/api/Party", params={"Email": "contains:archers"}, headers=headers)
    assert refused.status_code == 400


def test_cscontact_has_properties_with_wrapped_dates(http: httpx.Client) -> None:
    body = http.get("/api/CsContact/23210", headers=service(http)).json()
    props = {p["Name"]: p["Value"] for p in body["Properties"]["$values"]}
    assert props["MemberType"] == "REG"
    assert props["JoinDate"] == {"$type": "System.DateTime", "$value": "2015-03-01T00:00:00"}


def test_a_person_reads_only_their_own_records(http: httpx.Client) -> None:
    headers = bearer(http, "jdoe")
    assert http.get("/api/User", params={"UserName": "jdoe"}, headers=headers).status_code == 200
    assert http.get("/api/Party/23210", headers=headers).status_code == 200
    assert http.get("/api/CsContact/23210", headers=headers).status_code == 200
    for path, params in [
        ("/api/User", {"UserName": "zoe"}),
        ("/api/User", {}),
        ("/api/Party/23214", {}),
        ("/api/CsContact/23214", {}),
        ("/api/Party", {"Email": "jane.doe@example.org"}),
    ]:
        assert http.get(path, params=params, headers=headers).status_code == 403, path


def test_plain_lists_render_collections_without_wrappers() -> None:
    with running_simulator(plain_lists=True) as sim, httpx.Client(base_url=sim.url) as http:
        headers = service(http)
        users = http.get("/api/User", params={"UserName": "jdoe"}, headers=headers).json()
        party = http.get("/api/Party/23210", headers=headers).json()
    assert isinstance(users["Items"], list)
    assert isinstance(party["Emails"], list)
    assert isinstance(party["Phones"], list)


# --- faults and counters -----------------------------------------------------------------


def test_faults_over_http_with_count_and_paths(http: httpx.Client) -> None:
    set_ = http.post(
        "/_sim/faults", json={"status": 503, "retry_after": 7, "count": 2, "paths": ["/token"]}
    )
    assert set_.status_code == 200
    assert set_.json()["status"] == 503
    first, second, third = (grant(http, "jdoe") for _ in range(3))
    assert (first.status_code, first.headers["retry-after"]) == (503, "7")
    assert second.status_code == 503
    assert third.status_code == 200
    assert http.get("/_sim/stats").json()["faults_injected"] == 2


def test_faults_reset_and_validation(http: httpx.Client, sim: Sim) -> None:
    assert http.post("/_sim/faults", json={"stauts": 503}).status_code == 400
    assert http.post("/_sim/faults", json={"count": "two"}).status_code == 400
    assert http.post("/_sim/faults", json=[1]).status_code == 400
    http.post("/_sim/faults", json={"malformed_json": True})
    broken = grant(http, "jdoe")
    with pytest.raises(json.JSONDecodeError):
        json.loads(broken.text)
    http.post("/_sim/faults", json={"wrong_shape_json": True})
    odd = grant(http, "jdoe")
    assert (odd.status_code, "access_token" in odd.json()) == (200, False)
    assert http.post("/_sim/faults", json={"wrong_shape_json": "yes"}).status_code == 400
    assert http.delete("/_sim/faults").status_code == 204
    assert sim.state.faults == Faults()
    assert grant(http, "jdoe").status_code == 200


def test_error_rate_zero_injects_nothing(http: httpx.Client, sim: Sim) -> None:
    sim.state.set_faults(status=500, error_rate=0.0)
    assert grant(http, "jdoe").status_code == 200


def test_timeout_fault_hangs_until_the_client_gives_up(http: httpx.Client, sim: Sim) -> None:
    sim.state.set_faults(timeout=True, timeout_seconds=10, paths=("/token",))
    with pytest.raises(httpx.ReadTimeout):
        http.post("/token", data={"grant_type": "password"}, timeout=0.3)


def test_stats_count_requests_and_can_be_reset(http: httpx.Client) -> None:
    headers = bearer(http, "jdoe")
    grant(http, "jdoe", "wrong")
    http.get("/api/Party/23210", headers=headers)
    http.get("/api/Party/23214", headers=headers)
    stats = http.get("/_sim/stats").json()
    assert stats["token_requests"] == 2
    assert (stats["tokens_issued"], stats["token_failures"]) == (1, 1)
    assert (stats["api_requests"], stats["forbidden"]) == (2, 1)
    assert stats["paths"] == {"/token": 2, "/api/Party/{party_id}": 2}
    assert stats["tokens_by_user"] == {"jdoe": 1}
    assert http.delete("/_sim/stats").status_code == 204
    assert http.get("/_sim/stats").json()["token_requests"] == 0


def test_expire_tokens_over_http(http: httpx.Client) -> None:
    headers = bearer(http, "jdoe")
    assert http.post("/_sim/expire-tokens").status_code == 204
    assert http.get("/api/Party/23210", headers=headers).status_code == 401


# --- people ---------------------------------------------------------------------------


def test_demo_people_cover_every_case() -> None:
    people = {p.username: p for p in load_people(DEFAULT_PEOPLE_FILE) if p.username}
    assert people["jdoe"].phone
    assert people["jdoe"].organization_id
    assert people["bsmith"].phone is None
    assert people["clocal"].phone == "(202) 555-0143"
    assert people["dwhitfield"].full_name is None
    assert people["zoe"].full_name == "Zoë Łukasiewicz-Ñúñez"
    assert people["contoso"].is_organization
    assert people["disabled"].disabled
    assert people["sam"].email == people["alex"].email
    assert people["noemail"].email is None
    assert people["manager"].member_type == "STAFF"
    assert "RemoteService" in people["bridge-service"].roles
    assert {p.member_type for p in people.values()} >= {"REG", "STU", "STAFF"}
    assert {p.status_id for p in people.values()} == {"A", "I"}


def test_people_from_json(tmp_path: Path) -> None:
    path = tmp_path / "people.json"
    path.write_text(
        json.dumps(
            [
                {
                    "id": 5,
                    "username": "x",
                    "password": "y",
                    "emails": [{"address": "x@example.org", "type": "_Primary", "primary": True}],
                }
            ]
        )
    )
    (person,) = load_people(path)
    assert (person.imis_id, person.emails[0].address) == ("5", "x@example.org")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[person]]\nid = "1"\nusrname = "x"\n', "unknown keys usrname"),
        ('[[person]]\nusername = "x"\n', "id is required"),
        ('[[person]]\nid = "1"\nkind = "robot"\n', "kind must be"),
        ('[[person]]\nid = "1"\nemails = [{ adress = "x" }]\n', "emails/phones"),
        ("person = 3\n", "expected a list"),
        ("[[person]\n", "not valid"),
    ],
)
def test_bad_people_files_are_explained(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "people.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        load_people(path)


def test_people_table_lists_who_can_sign_in_with_passwords() -> None:
    table = describe_people(load_people(DEFAULT_PEOPLE_FILE))
    assert "jdoe" in table
    assert "password1" in table
    assert "Robin" not in table  # no credentials
    assert "disabled user" in table


def test_serve_simulator_refuses_a_bad_people_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "people.toml"
    path.write_text("person = 3\n")
    assert serve_simulator(0, str(path), 0) == 2
    assert "cannot read people" in capsys.readouterr().err


def test_reset_restores_the_start(http: httpx.Client, sim: Sim) -> None:
    headers = bearer(http, "jdoe")
    sim.state.set_faults(status=503, paths=("/api",))
    sim.state.latency_ms, sim.state.plain_lists = 5, True
    sim.state.reset()
    assert (sim.state.faults, sim.state.latency_ms, sim.state.plain_lists) == (Faults(), 0, False)
    assert sim.state.stats()["token_requests"] == 0
    assert http.get("/api/Party/23210", headers=headers).status_code == 401


def test_mounted_simulator_matches_fault_paths_below_its_mount() -> None:
    imis = create_simulator()
    app = Starlette(routes=[Mount("/_demo/imis", app=imis)])
    state = simulator_state(imis)
    state.set_faults(status=503, count=1, paths=("/token",))
    with serve(app) as url, httpx.Client(base_url=f"{url}/_demo/imis") as http:
        assert grant(http, "jdoe").status_code == 503
        assert http.get("/api/Party/23210", headers=bearer(http, "jdoe")).status_code == 200
    assert state.stats()["paths"] == {"/token": 2, "/api/Party/{party_id}": 1}
