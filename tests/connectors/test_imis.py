"""ImisUserStore against the simulator over real loopback HTTP: every outcome, retries, tokens."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from bridge.connectors import (
    AccountDisabled,
    NotFound,
    OrganizationAccount,
    Unavailable,
    WrongCredentials,
)
from bridge.connectors.imis import (
    ImisUserStore,
    contact_properties,
    identity_from_party,
    primary_email,
)
from bridge.demo.simulator import SimEmail, SimPerson
from bridge.identity import Identity
from bridge.logs import request_id
from tests.connectors.conftest import (
    Sim,
    StoreFactory,
    demo_people,
    imis_settings,
    running_simulator,
)
from tests.support.servers import free_port

pytestmark = pytest.mark.anyio


async def sign_in(store: ImisUserStore, username: str, password: str = "password1") -> Identity:
    outcome = await store.authenticate(username, password)
    assert isinstance(outcome, Identity), outcome
    return outcome


# --- outcomes ------------------------------------------------------------------


async def test_member_with_everything_gets_a_normalised_identity(store: ImisUserStore) -> None:
    identity = await sign_in(store, "jdoe")
    assert identity == Identity(
        imis_id="23210",
        username="jdoe",
        full_name="Jane Doe",
        first_name="Jane",
        last_name="Doe",
        email="jane.doe@example.org",
        phone="+12025550100",
        organization_name="Contoso Ltd",
        organization_id="18000",
        status="Active",
        status_id="A",
    )


async def test_username_is_case_insensitive_and_comes_back_as_imis_spells_it(
    store: ImisUserStore,
) -> None:
    identity = await sign_in(store, "  JDoe ")
    assert identity.username == "jdoe"


async def test_person_without_phone_has_no_phone(store: ImisUserStore) -> None:
    identity = await sign_in(store, "bsmith")
    assert identity.phone is None
    # marked primary only by EmailType "_Primary"
    assert identity.email == "bob.smith@example.org"


async def test_local_phone_format_becomes_e164(store: ImisUserStore) -> None:
    identity = await sign_in(store, "clocal")
    assert identity.phone == "+12025550143"


async def test_missing_full_name_is_built_from_first_and_last(store: ImisUserStore) -> None:
    identity = await sign_in(store, "dwhitfield")
    assert identity.full_name == "Dana Whitfield"
    assert identity.phone == "+12025550177"  # extension dropped


async def test_unicode_names_arrive_intact(store: ImisUserStore) -> None:
    identity = await sign_in(store, "zoe")
    assert identity.full_name == "Zoë Łukasiewicz-Ñúñez"
    assert identity.last_name == "Łukasiewicz-Ñúñez"
    assert identity.organization_name == "Société Générale des Œuvres"
    assert identity.phone == "+442079460958"


async def test_organization_record_may_not_sign_in(store: ImisUserStore) -> None:
    assert await store.authenticate("contoso", "password1") == OrganizationAccount("18000")


async def test_disabled_user_is_refused_with_imis_reason(store: ImisUserStore) -> None:
    outcome = await store.authenticate("disabled", "password1")
    assert outcome == WrongCredentials(detail="The user account is disabled.")


async def test_person_without_primary_email_has_no_email(store: ImisUserStore) -> None:
    identity = await sign_in(store, "noemail")
    assert identity.email is None
    assert identity.phone == "+12025550155"


async def test_lapsed_member_signs_in_with_inactive_status(store: ImisUserStore) -> None:
    identity = await sign_in(store, "inactive")
    assert (identity.status_id, identity.status) == ("I", "Inactive")


@pytest.mark.parametrize(
    ("username", "password"),
    [("jdoe", "wrong"), ("jdoe", "PASSWORD1"), ("nobody", "password1")],
)
async def test_wrong_password_and_unknown_user_are_wrong_credentials(
    store: ImisUserStore, username: str, password: str
) -> None:
    outcome = await store.authenticate(username, password)
    assert outcome == WrongCredentials(detail="The user name or password is incorrect.")


async def test_empty_password_is_refused_without_asking_imis(
    store: ImisUserStore, sim: Sim
) -> None:
    assert isinstance(await store.authenticate("jdoe", ""), WrongCredentials)
    assert sim.state.stats()["token_requests"] == 0


async def test_requested_properties_fill_member_type_and_unwrap_values(
    store: ImisUserStore, sim: Sim
) -> None:
    outcome = await store.authenticate(
        "jdoe", "password1", properties=["MemberType", "JoinDate", "Chapter", "NoSuchThing"]
    )
    assert isinstance(outcome, Identity)
    assert outcome.member_type == "REG"
    assert dict(outcome.properties) == {
        "MemberType": "REG",
        "JoinDate": "2015-03-01T00:00:00",
        "Chapter": "Capital",
    }
    assert outcome.field("JoinDate") == "2015-03-01T00:00:00"


async def test_cscontact_is_read_only_when_properties_are_asked_for(
    store: ImisUserStore, sim: Sim
) -> None:
    await sign_in(store, "jdoe")
    assert "/api/CsContact/{party_id}" not in sim.state.stats()["paths"]


async def test_without_service_account_the_persons_own_token_reads_the_profile(
    make_store: StoreFactory, sim: Sim
) -> None:
    store = make_store(service_username=None, service_password=None)
    identity = await sign_in(store, "clocal")
    assert identity.imis_id == "23212"
    assert sim.state.stats()["tokens_by_user"] == {"clocal": 1}
    assert await store.authenticate("contoso", "password1") == OrganizationAccount("18000")


async def test_without_service_account_lookup_and_shared_email_are_unavailable(
    make_store: StoreFactory,
) -> None:
    store = make_store(service_username=None, service_password=None)
    identity = await sign_in(store, "sam")
    lookup = await store.lookup("23216")
    shared = await store.others_sharing_email(identity)
    assert isinstance(lookup, Unavailable)
    assert "service account" in lookup.detail
    assert isinstance(shared, Unavailable)
    assert "service account" in shared.detail


async def test_plain_list_shapes_of_older_imis_are_understood() -> None:
    with running_simulator(plain_lists=True) as sim:
        async with ImisUserStore(imis_settings(), base_url=sim.url) as store:
            identity = await sign_in(store, "jdoe")
            assert identity.email == "jane.doe@example.org"
            assert identity.phone == "+12025550100"
            outcome = await store.authenticate("jdoe", "password1", properties=["JoinDate"])
            assert isinstance(outcome, Identity)
            assert outcome.properties == {"JoinDate": "2015-03-01T00:00:00"}
            sam = await sign_in(store, "sam")
            assert await store.others_sharing_email(sam) == ("23217",)


def test_party_parsing_accepts_variants() -> None:
    party = {
        "PartyId": "1",
        "PersonName": {"FirstName": " Ann ", "LastName": "Lee", "FullName": ""},
        "Emails": [
            {"Address": "old@example.org", "EmailType": "_Primary", "IsPrimary": False},
            {"Address": "new@example.org", "EmailType": "Work", "IsPrimary": "true"},
        ],
        "Phones": [{"Number": "not a phone", "IsPrimary": True}],
        "Status": "A",
        "UnknownKey": {"$type": "whatever"},
    }
    identity = identity_from_party(party, username="ann", region="US")
    assert isinstance(identity, Identity)
    assert (identity.full_name, identity.first_name) == ("Ann Lee", "Ann")
    assert identity.email == "new@example.org"
    assert identity.phone is None
    assert identity.status_id == "A"
    assert identity_from_party({"Id": "7", "OrganizationName": "X"}, username="", region="US") == (
        OrganizationAccount("7")
    )


def test_primary_email_needs_a_primary_and_an_address() -> None:
    assert primary_email({"$values": [{"Address": "a@b.c", "EmailType": "Work"}]}) is None
    assert primary_email([{"Address": "", "IsPrimary": True}]) is None
    assert primary_email(None) is None


def test_contact_properties_unwrap_typed_values() -> None:
    data = {
        "Properties": {
            "$values": [
                {"Name": "Paid", "Value": {"$type": "System.Decimal", "$value": 12.5}},
                {"Name": "Flag", "Value": True},
                {"Name": "Nothing", "Value": None},
                {"Name": "Nested", "Value": {"$type": "Thing", "A": 1}},
                {"Name": "Count", "Value": 3},
            ]
        }
    }
    assert contact_properties(data) == {"Paid": "12.5", "Flag": "true", "Count": "3"}


# --- lookup ----------------------------------------------------------------------


async def test_lookup_reads_a_profile_with_the_service_account(store: ImisUserStore) -> None:
    identity = await store.lookup("23210", properties=["MemberType"])
    assert isinstance(identity, Identity)
    assert (identity.username, identity.email, identity.member_type) == (
        "jdoe",
        "jane.doe@example.org",
        "REG",
    )


@pytest.mark.parametrize(
    ("imis_id", "expected"),
    [
        ("99999", NotFound("99999")),
        ("18000", OrganizationAccount("18000")),
        ("23215", AccountDisabled(detail="the iMIS user is disabled (IsDisabled)")),
        ("23218", AccountDisabled(detail="the iMIS contact has no User (sign-in) record")),
    ],
)
async def test_lookup_outcomes(store: ImisUserStore, imis_id: str, expected: object) -> None:
    assert await store.lookup(imis_id) == expected


async def test_lookup_username(store: ImisUserStore) -> None:
    found = await store.lookup_username("ZOE")
    assert isinstance(found, Identity)
    assert found.imis_id == "23214"
    assert await store.lookup_username("nobody") == NotFound("nobody")


# --- retries, timeouts, garbage ------------------------------------------------------


async def test_read_succeeds_after_two_503s(store: ImisUserStore, sim: Sim) -> None:
    sim.state.set_faults(status=503, count=2, paths=("/api/User",))
    await sign_in(store, "jdoe")
    stats = sim.state.stats()
    assert stats["faults_injected"] == 2
    assert stats["paths"]["/api/User"] == 3


@pytest.mark.parametrize("retries", [0, 2])
@pytest.mark.parametrize("status", [429, 502, 503, 504])
async def test_read_that_keeps_failing_is_tried_exactly_one_plus_retries_times(
    make_store: StoreFactory, sim: Sim, retries: int, status: int
) -> None:
    store = make_store(retries=retries)
    sim.state.set_faults(status=status, paths=("/api/Party",))
    outcome = await store.authenticate("jdoe", "password1")
    assert isinstance(outcome, Unavailable)
    assert str(status) in outcome.detail
    assert sim.state.stats()["paths"]["/api/Party/{party_id}"] == 1 + retries


async def test_internal_server_error_is_not_retried(store: ImisUserStore, sim: Sim) -> None:
    sim.state.set_faults(status=500, paths=("/api/User",))
    assert isinstance(await store.authenticate("jdoe", "password1"), Unavailable)
    assert sim.state.stats()["paths"]["/api/User"] == 1


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_password_grant_is_never_retried(store: ImisUserStore, sim: Sim, status: int) -> None:
    sim.state.set_faults(status=status, paths=("/token",))
    outcome = await store.authenticate("jdoe", "password1")
    assert isinstance(outcome, Unavailable)
    assert sim.state.stats()["token_requests"] == 1


async def test_wrong_password_is_asked_once(store: ImisUserStore, sim: Sim) -> None:
    assert isinstance(await store.authenticate("jdoe", "nope"), WrongCredentials)
    stats = sim.state.stats()
    assert (stats["token_requests"], stats["api_requests"]) == (1, 0)


async def test_short_retry_after_is_waited_for(store: ImisUserStore, sim: Sim) -> None:
    sim.state.set_faults(status=503, retry_after=1, count=1, paths=("/api/Party",))
    started = time.monotonic()
    await sign_in(store, "jdoe")
    assert time.monotonic() - started >= 1.0


async def test_long_retry_after_ends_the_call_and_is_passed_on(
    store: ImisUserStore, sim: Sim
) -> None:
    sim.state.set_faults(status=503, retry_after=120, paths=("/api/User",))
    started = time.monotonic()
    outcome = await store.authenticate("jdoe", "password1")
    assert outcome == Unavailable(retry_after=120, detail="iMIS answered 503 to GET /api/User")
    assert time.monotonic() - started < 1.0
    assert sim.state.stats()["paths"]["/api/User"] == 1


async def test_unavailable_without_retry_after_suggests_a_default(
    store: ImisUserStore, sim: Sim
) -> None:
    sim.state.set_faults(status=503, paths=("/token",))
    outcome = await store.authenticate("jdoe", "password1")
    assert isinstance(outcome, Unavailable)
    assert 5 <= outcome.retry_after <= 30


@pytest.mark.parametrize("path", ["/token", "/api/User", "/api/Party"])
async def test_timeout_is_unavailable_not_wrong_password(
    make_store: StoreFactory, sim: Sim, path: str
) -> None:
    store = make_store(timeout=0.3)
    sim.state.set_faults(timeout=True, timeout_seconds=5, paths=(path,))
    started = time.monotonic()
    outcome = await store.authenticate("jdoe", "password1")
    assert isinstance(outcome, Unavailable)
    assert "timed out" in outcome.detail
    # a timed-out read is not repeated
    assert time.monotonic() - started < 1.5


@pytest.mark.parametrize("path", ["/token", "/api/User", "/api/Party", "/api/CsContact"])
async def test_malformed_json_is_unavailable(store: ImisUserStore, sim: Sim, path: str) -> None:
    sim.state.set_faults(malformed_json=True, paths=(path,))
    outcome = await store.authenticate("jdoe", "password1", properties=["MemberType"])
    assert isinstance(outcome, Unavailable)


@pytest.mark.parametrize("path", ["/token", "/api/User", "/api/Party", "/api/CsContact"])
async def test_g1_wrong_shape_json_is_unavailable(
    store: ImisUserStore, sim: Sim, path: str
) -> None:
    """G1: well-formed JSON that is no answer iMIS gives (no token, no Items, no party)
    is "unavailable", never a sign-in with an empty profile nor "wrong password"."""
    sim.state.set_faults(wrong_shape_json=True, paths=(path,))
    outcome = await store.authenticate("jdoe", "password1", properties=["MemberType"])
    assert isinstance(outcome, Unavailable), outcome


async def test_unreachable_imis_is_unavailable(make_store: StoreFactory) -> None:
    store = make_store(base_url=f"http://127.0.0.1:{free_port()}")
    outcome = await store.authenticate("jdoe", "password1")
    assert isinstance(outcome, Unavailable)
    assert "ConnectError" in outcome.detail


async def test_connection_errors_on_reads_are_retried(make_store: StoreFactory) -> None:
    store = make_store(base_url=f"http://127.0.0.1:{free_port()}")
    outcome = await store.lookup("23210")
    assert isinstance(outcome, Unavailable)


# --- the service token ---------------------------------------------------------------


async def test_service_token_is_fetched_once_for_many_sign_ins(
    store: ImisUserStore, sim: Sim
) -> None:
    await asyncio.gather(*(sign_in(store, "jdoe") for _ in range(20)))
    for _ in range(5):
        await sign_in(store, "zoe")
    assert sim.state.stats()["tokens_by_user"] == {"bridge-service": 1, "jdoe": 20, "zoe": 5}


async def test_service_token_is_renewed_once_when_imis_says_401(
    store: ImisUserStore, sim: Sim
) -> None:
    await sign_in(store, "jdoe")
    sim.state.expire_tokens()
    await asyncio.gather(*(sign_in(store, "jdoe") for _ in range(5)))
    stats = sim.state.stats()
    assert stats["tokens_by_user"]["bridge-service"] == 2
    assert stats["unauthorized"] >= 1


async def test_service_token_is_renewed_before_it_expires() -> None:
    with running_simulator(token_seconds=1) as sim:
        async with ImisUserStore(imis_settings(), base_url=sim.url) as store:
            await sign_in(store, "jdoe")
            await asyncio.sleep(1.0)
            await sign_in(store, "jdoe")
            stats = sim.state.stats()
    assert stats["tokens_by_user"]["bridge-service"] == 2
    assert stats["unauthorized"] == 0


async def test_a_401_after_renewal_is_unavailable() -> None:
    with running_simulator(token_seconds=0) as sim:
        async with ImisUserStore(imis_settings(), base_url=sim.url) as store:
            outcome = await store.lookup("23210")
            stats = sim.state.stats()
    assert isinstance(outcome, Unavailable)
    assert "401" in outcome.detail
    # two reads (User, Party), each tried with a token and once more with a renewed one
    assert stats["api_requests"] == stats["unauthorized"] == 4


async def test_rejected_service_account_is_unavailable_and_not_asked_again_at_once(
    make_store: StoreFactory, sim: Sim
) -> None:
    store = make_store(service_password="wrong")
    first = await store.authenticate("jdoe", "password1")
    second = await store.authenticate("zoe", "password1")
    assert isinstance(first, Unavailable)
    assert "service account" in first.detail
    assert isinstance(second, Unavailable)
    assert sim.state.stats()["token_failures"] == 1


async def test_concurrent_first_requests_share_one_failed_service_sign_in(
    make_store: StoreFactory, sim: Sim
) -> None:
    store = make_store()
    sim.state.set_faults(status=503, paths=("/token",))
    outcomes = await asyncio.gather(*(store.lookup("23210") for _ in range(10)))
    assert all(isinstance(o, Unavailable) for o in outcomes)
    assert sim.state.stats()["token_requests"] == 1


# --- shared email ----------------------------------------------------------------------


async def test_shared_email_names_other_people_who_can_sign_in(store: ImisUserStore) -> None:
    sam, alex = await sign_in(store, "sam"), await sign_in(store, "alex")
    # Robin Archer (23218) has the same email but no credentials.
    assert await store.others_sharing_email(sam) == ("23217",)
    assert await store.others_sharing_email(alex) == ("23216",)


async def test_unshared_or_missing_email_names_nobody(store: ImisUserStore, sim: Sim) -> None:
    assert await store.others_sharing_email(await sign_in(store, "jdoe")) == ()
    sim.state.reset_stats()
    assert await store.others_sharing_email(await sign_in(store, "noemail")) == ()
    assert "/api/Party" not in sim.state.stats()["paths"]


async def test_shared_email_answer_is_cached_per_email(store: ImisUserStore, sim: Sim) -> None:
    sam, alex = await sign_in(store, "sam"), await sign_in(store, "alex")
    for person in (sam, alex, sam):
        assert len(await store.others_sharing_email(person)) == 1
    assert sim.state.stats()["paths"]["/api/Party"] == 1


async def test_shared_email_cache_can_be_turned_off(make_store: StoreFactory, sim: Sim) -> None:
    store = make_store(shared_email_cache_seconds=0)
    sam = await sign_in(store, "sam")
    await store.others_sharing_email(sam)
    await store.others_sharing_email(sam)
    assert sim.state.stats()["paths"]["/api/Party"] == 2


async def test_shared_email_with_plus_sign_and_disabled_sharer() -> None:
    people = [
        *[p for p in demo_people() if p.username == "bridge-service"],
        SimPerson("1", "ann", "pw", full_name="Ann", email="fam+ily@example.org"),
        SimPerson("2", "ben", "pw", full_name="Ben", email="FAM+ily@example.org"),
        SimPerson("3", "cat", "pw", full_name="Cat", email="fam+ily@example.org", disabled=True),
        SimPerson(
            "4", full_name="Dee", emails=(SimEmail("fam+ily@example.org", "_Primary", True),)
        ),
    ]
    with running_simulator(people) as sim:
        async with ImisUserStore(imis_settings(), base_url=sim.url) as store:
            ann = await sign_in(store, "ann", "pw")
            assert await store.others_sharing_email(ann) == ("2",)


async def test_shared_email_check_failure_is_unavailable(store: ImisUserStore, sim: Sim) -> None:
    sam = await sign_in(store, "sam")
    sim.state.set_faults(status=500, paths=("/api/User",))
    assert isinstance(await store.others_sharing_email(sam), Unavailable)


# --- scale and logs -----------------------------------------------------------------------


async def test_concurrent_sign_ins_do_not_wait_on_each_other() -> None:
    latency = 0.3
    with running_simulator(latency_ms=int(latency * 1000)) as sim:
        async with ImisUserStore(imis_settings(), base_url=sim.url) as store:
            await sign_in(store, "jdoe")  # the service token is fetched once, before timing
            started = time.monotonic()
            await sign_in(store, "zoe")
            one = time.monotonic() - started
            started = time.monotonic()
            people = ["jdoe", "bsmith", "clocal", "dwhitfield", "zoe"] * 10
            identities = await asyncio.gather(*(sign_in(store, u) for u in people))
            fifty = time.monotonic() - started
    assert len({i.imis_id for i in identities}) == 5
    assert one >= 3 * latency  # grant, User, Party
    # Sequential sign-ins would take 50x one; in parallel it is close to one latency.
    # The bound leaves room for a loaded 2-core CI machine (the CPU work of 50
    # sign-ins on both the simulator and the client is not free).
    assert fifty < 5 * one, (one, fifty)
    assert sim.state.stats()["tokens_by_user"]["bridge-service"] == 1


async def test_logs_hold_no_passwords_tokens_or_bodies(
    make_store: StoreFactory, sim: Sim, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    store = make_store(timeout=0.5)
    secret = "Hunter2-very-secret"
    await store.authenticate("jdoe", "password1", properties=["MemberType"])
    await store.authenticate("jdoe", secret)
    await store.authenticate(secret, secret)
    await store.others_sharing_email(await sign_in(store, "sam"))
    await store.lookup("23210")
    tokens = sim.state.issued_tokens()
    for faults in (
        {"status": 503, "paths": ("/api/User",)},
        {"malformed_json": True, "paths": ("/api/Party",)},
        {"timeout": True, "timeout_seconds": 3, "paths": ("/token",)},
    ):
        sim.state.set_faults(**faults)
        await store.authenticate("jdoe", "password1")
    sim.state.clear_faults()
    sim.state.expire_tokens()
    await store.lookup("23214")
    rejected = make_store(service_password=secret)
    await rejected.authenticate("jdoe", "password1")
    tokens += sim.state.issued_tokens()

    text = caplog.text
    assert any(r.name == "bridge.imis" for r in caplog.records)
    assert tokens
    for forbidden in [secret, "password1", "service-password1", *tokens]:
        assert forbidden not in text
    for body_part in ("$type", "$values", "access_token", "PersonName", "Asi.Soa", "Jane Doe"):
        assert body_part not in text


# --- answers the simulator never gives (a scripted transport) ---------------------------------


def scripted(routes: dict[str, httpx.Response]) -> httpx.MockTransport:
    """Answer each request by the first route whose 'METHOD /path' prefixes it."""

    def handle(request: httpx.Request) -> httpx.Response:
        for prefix, response in routes.items():
            if f"{request.method} {request.url.path}".startswith(prefix):
                return response
        return httpx.Response(404)

    return httpx.MockTransport(handle)


TOKEN = httpx.Response(200, json={"access_token": "t", "expires_in": 60})


def user_page(**user: object) -> httpx.Response:
    return httpx.Response(200, json={"Items": {"$values": [user]}, "TotalCount": 1})


async def outcome_of(routes: dict[str, httpx.Response]) -> object:
    store = ImisUserStore(imis_settings(retries=0), transport=scripted(routes))
    async with store:
        return await store.authenticate("someone", "pw")


async def test_user_record_marked_disabled_is_account_disabled() -> None:
    routes = {"POST /token": TOKEN, "GET /api/User": user_page(UserId="1", IsDisabled="True")}
    assert await outcome_of(routes) == AccountDisabled(
        detail="the iMIS user is disabled (IsDisabled)"
    )


@pytest.mark.parametrize(
    ("routes", "detail"),
    [
        ({"POST /token": httpx.Response(404)}, "iMIS answered 404 to POST /token"),
        (
            {"POST /token": httpx.Response(400, json={"error": "unsupported_grant_type"})},
            "iMIS answered 400 to POST /token",
        ),
        (
            {"POST /token": httpx.Response(200, json={"token_type": "bearer"})},
            "iMIS sent an unusable answer to POST /token",
        ),
        (
            {"POST /token": TOKEN, "GET /api/User": httpx.Response(200, json={"Items": []})},
            "iMIS accepted the password but has no User record for it",
        ),
        (
            {"POST /token": TOKEN, "GET /api/User": user_page(UserName="someone")},
            "iMIS sent a User record without UserId",
        ),
        (
            {"POST /token": TOKEN, "GET /api/User": user_page(UserId="1")},
            "iMIS has a User but no Party for 1",
        ),
        (
            {"POST /token": TOKEN, "GET /api/User": httpx.Response(403)},
            "iMIS forbade GET /api/User (403): does the service account have the "
            "RemoteService role?",
        ),
        (
            {"POST /token": TOKEN, "GET /api/User": httpx.Response(302)},
            "iMIS answered 302 to GET /api/User",
        ),
    ],
)
async def test_odd_answers_are_unavailable(routes: dict[str, httpx.Response], detail: str) -> None:
    outcome = await outcome_of(routes)
    assert isinstance(outcome, Unavailable)
    assert outcome.detail == detail


async def test_retry_after_as_http_date_is_understood() -> None:
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=90), usegmt=True)
    routes = {
        "POST /token": TOKEN,
        "GET /api/User": httpx.Response(503, headers={"Retry-After": later}),
    }
    outcome = await outcome_of(routes)
    assert isinstance(outcome, Unavailable)
    assert 80 <= outcome.retry_after <= 90


@pytest.mark.parametrize(
    "routes",
    [
        {
            "POST /token": httpx.Response(200, json={"access_token": "t", "expires_in": "\u00b2"}),
            "GET /api/User": httpx.Response(404),
        },
        {
            "POST /token": TOKEN,
            "GET /api/User": httpx.Response(503, headers={"Retry-After": b"\xb2"}),
        },
    ],
)
async def test_g1_digits_int_cannot_read_from_imis_are_unavailable_not_a_crash(
    routes: dict[str, httpx.Response],
) -> None:
    """``str.isdigit`` takes ``²`` (an ``expires_in``, a ``Retry-After`` read as
    Latin-1), which ``int()`` and ``float()`` refuse: garbage, not an exception."""
    outcome = await outcome_of(routes)
    assert isinstance(outcome, Unavailable)


def test_simulator_base_url_needs_somewhere_to_go() -> None:
    with pytest.raises(ValueError, match="simulator"):
        ImisUserStore(imis_settings())


async def test_calls_made_while_answering_a_request_carry_its_request_id() -> None:
    seen: list[str | None] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("x-request-id"))
        return httpx.Response(400, json={"error": "invalid_grant"})

    transport = httpx.MockTransport(answer)
    async with ImisUserStore(imis_settings(), transport=transport, base_url="http://imis") as store:
        await store.authenticate("jdoe", "wrong-password")
        token = request_id.set("req-77")
        try:
            await store.authenticate("jdoe", "wrong-password")
        finally:
            request_id.reset(token)
    assert seen == [None, "req-77"]
