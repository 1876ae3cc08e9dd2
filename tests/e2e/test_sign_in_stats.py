"""Sign-in statistics over real HTTP: each outcome is counted once, for the right registration.

A bridge with the iMIS simulator, on a database of its own; browsers are httpx
clients. Every test reads the counters before and after what it does through
:func:`bridge.stats.sign_in_stats`, as the admin page will. Covers the outcomes
the admin statistics show: success (OIDC and Zendesk), wrong password, access
rule, no email, shared email (E4), iMIS unavailable (G1), and the extra reasons
organization and throttled (D3).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest

from bridge.stats import sign_in_stats
from bridge.storage.stats import NO_REGISTRATION, Outcome
from tests.oauth.rp import Rp
from tests.support.bridge import Harness, hidden_fields, running_bridge, sign_in

SECRET = "stats-portal-secret-0123456789abcdef"
REDIRECT = "https://stats.example.org/callback"
PORTAL = f"""
name = "Stats Portal"
profile = "oidc"
client_id = "stats-portal"
client_secret = "{SECRET}"
redirect_uris = ["{REDIRECT}"]
scopes = ["openid", "profile", "email"]
"""
STAFF_PORTAL = f"""
name = "Stats Staff Portal"
profile = "oidc"
client_id = "stats-staff-portal"
client_secret = "{SECRET}"
redirect_uris = ["{REDIRECT}"]
scopes = ["openid"]

[access]
member_types = ["STAFF"]
"""
DESK = """
name = "Stats Desk"
profile = "zendesk"
subdomain = "statsdesk"
shared_secret = "stats-desk-shared-secret-0123456789"
"""
STAFF_DESK = """
name = "Stats Staff Desk"
profile = "zendesk"
subdomain = "statsstaff"
shared_secret = "stats-desk-shared-secret-0123456789"

[access]
member_types = ["STAFF"]
message = "Only association staff can use the Stats Staff Desk."
"""
FORUM_SECRET = "stats-forum-connect-secret-0123456789abcdef"
FORUM = f"""
name = "Stats Forum"
profile = "discourse"
discourse_url = "https://forum.example.org"
connect_secret = "{FORUM_SECRET}"
"""


#: Long enough that the attempt after the free failures is always refused (429).
THROTTLE = """
[login]
throttle_base_seconds = 30
throttle_max_seconds = 30
"""


@pytest.fixture(scope="module")
def bridge(tmp_path_factory: pytest.TempPathFactory, database_factory: Any) -> Iterator[Harness]:
    """A bridge on a database of its own: no other module's sign-ins or failures in it."""
    tmp: Path = tmp_path_factory.mktemp("stats")
    registrations = {
        "stats-portal": PORTAL,
        "stats-staff-portal": STAFF_PORTAL,
        "stats-desk": DESK,
        "stats-staff-desk": STAFF_DESK,
        "stats-forum": FORUM,
    }
    with running_bridge(
        tmp, database_factory.migrated_url(), registrations=registrations, extra=THROTTLE
    ) as harness:
        yield harness


SLUGS = (
    "stats-portal",
    "stats-staff-portal",
    "stats-desk",
    "stats-staff-desk",
    "stats-forum",
    NO_REGISTRATION,
)


def forum_start() -> str:
    """The connect URL with a request signed as Discourse signs it."""
    payload = {"nonce": "n0nce", "return_sso_url": "https://forum.example.org/session/sso_login"}
    sso = base64.b64encode(urlencode(payload).encode()).decode()
    sig = hmac.new(FORUM_SECRET.encode(), sso.encode(), hashlib.sha256).hexdigest()
    return "/discourse/stats-forum?" + urlencode({"sso": sso, "sig": sig})


def counters(bridge: Harness) -> Counter[tuple[str, Outcome]]:
    """Every (registration, outcome) counted in the last 24 hours, for this module's slugs."""
    now = int(time.time())
    found: Counter[tuple[str, Outcome]] = Counter()
    for slug in SLUGS:
        for outcome, n in sign_in_stats(bridge.services.store, slug, now).hours.totals.items():
            found[(slug, outcome)] = n
    return found


def counted(bridge: Harness, action: Callable[[], None]) -> dict[tuple[str, Outcome], int]:
    """What ``action`` added to the counters (only what changed)."""
    before = counters(bridge)
    action()
    after = counters(bridge)
    return {key: after[key] - before[key] for key in after if after[key] != before[key]}


def login_for(browser: httpx.Client, start: str) -> str:
    """Follow ``start`` to the sign-in page; returns the pending request's id."""
    response = browser.get(start)
    assert response.status_code == 303, response.text
    location = response.headers["location"]
    assert location.startswith("/login?request="), location
    return parse_qs(urlsplit(location).query)["request"][0]


def submit(
    browser: httpx.Client, request_id: str | None, username: str, password: str
) -> httpx.Response:
    page = browser.get("/login", params={"request": request_id} if request_id else None)
    fields = hidden_fields(page.text)
    return browser.post("/login", data={**fields, "username": username, "password": password})


def portal(bridge: Harness, http: httpx.Client, client_id: str = "stats-portal") -> Rp:
    return Rp(bridge, http, client_id, SECRET, REDIRECT, scope="openid")


# --- successes ------------------------------------------------------------------------


def test_an_oidc_code_issued_is_one_success_for_its_registration(
    bridge: Harness, http: httpx.Client
) -> None:
    def run() -> None:
        with bridge.client() as browser:
            portal(bridge, http).sign_in(browser, "jdoe")

    assert counted(bridge, run) == {("stats-portal", Outcome.SUCCESS): 1}


def test_an_oidc_code_for_a_signed_in_person_is_a_success_too(
    bridge: Harness, http: httpx.Client
) -> None:
    with bridge.client() as browser:
        rp = portal(bridge, http)
        rp.sign_in(browser, "jdoe")

        def again() -> None:
            params = rp.authorize_params()
            rp.authorization_from(browser.get(rp.authorize_url(params)), params)

        assert counted(bridge, again) == {("stats-portal", Outcome.SUCCESS): 1}


def test_a_zendesk_jwt_sent_is_one_success_for_its_registration(bridge: Harness) -> None:
    def run() -> None:
        with bridge.client() as browser:
            response = sign_in(browser, "/zendesk/stats-desk", "clocal")
            assert response.status_code == 200, response.text
            assert 'id="zendesk-jwt"' in response.text

    # The password check at /login is not a success of its own: the JWT is.
    assert counted(bridge, run) == {("stats-desk", Outcome.SUCCESS): 1}


# --- refusals -------------------------------------------------------------------------


def test_a_wrong_password_counts_for_the_app_the_person_was_signing_in_to(
    bridge: Harness,
) -> None:
    def run() -> None:
        with bridge.client() as browser:
            request_id = login_for(browser, "/zendesk/stats-desk")
            assert submit(browser, request_id, "zoe", "not-her-password").status_code == 401

    assert counted(bridge, run) == {("stats-desk", Outcome.WRONG_PASSWORD): 1}


def test_a_wrong_password_on_the_bridges_own_page_counts_for_no_registration(
    bridge: Harness,
) -> None:
    def run() -> None:
        with bridge.client() as browser:
            assert submit(browser, None, "zoe", "not-her-password").status_code == 401

    assert counted(bridge, run) == {(NO_REGISTRATION, Outcome.WRONG_PASSWORD): 1}


def test_the_access_rule_refusing_counts_for_zendesk_and_oidc(
    bridge: Harness, http: httpx.Client
) -> None:
    def run() -> None:
        with bridge.client() as browser:
            refused = sign_in(browser, "/zendesk/stats-staff-desk", "jdoe")
            assert refused.status_code == 403
            assert "Only association staff" in refused.text
            rp = portal(bridge, http, "stats-staff-portal")
            page = browser.get(rp.authorize_url(rp.authorize_params()))
            assert page.status_code == 403
            # prompt=none: the refusal goes back to the client, and is counted the same.
            silent = browser.get(rp.authorize_url(rp.authorize_params(prompt="none")))
            assert silent.status_code == 303
            assert "error=access_denied" in silent.headers["location"]

    assert counted(bridge, run) == {
        ("stats-staff-desk", Outcome.ACCESS_RULE): 1,
        ("stats-staff-portal", Outcome.ACCESS_RULE): 2,
    }


def test_no_primary_email_is_counted_as_no_email(bridge: Harness) -> None:
    def run() -> None:
        with bridge.client() as browser:
            response = sign_in(browser, "/zendesk/stats-desk", "noemail")
            assert response.status_code == 403
            assert "no primary email" in response.text

    assert counted(bridge, run) == {("stats-desk", Outcome.NO_EMAIL): 1}


def test_no_primary_email_at_the_forum_is_counted_as_no_email(bridge: Harness) -> None:
    def run() -> None:
        with bridge.client() as browser:
            response = sign_in(browser, forum_start(), "noemail")
            assert response.status_code == 403
            assert "no primary email" in response.text

    assert counted(bridge, run) == {("stats-forum", Outcome.NO_EMAIL): 1}


def test_e4_a_shared_primary_email_at_the_forum_is_counted_as_shared_email(
    bridge: Harness,
) -> None:
    def run() -> None:
        with bridge.client() as browser:
            response = sign_in(browser, forum_start(), "sam")
            assert response.status_code == 403
            assert "also the email address of another" in response.text

    assert counted(bridge, run) == {("stats-forum", Outcome.SHARED_EMAIL): 1}


def test_e4_a_shared_primary_email_is_counted_as_shared_email(bridge: Harness) -> None:
    def run() -> None:
        with bridge.client() as browser:
            response = sign_in(browser, "/zendesk/stats-desk", "sam")
            assert response.status_code == 403
            assert "also the email address of another" in response.text

    assert counted(bridge, run) == {("stats-desk", Outcome.SHARED_EMAIL): 1}


def test_g1_imis_unavailable_at_the_password_check_counts_for_the_pending_app(
    bridge: Harness,
) -> None:
    def run() -> None:
        with bridge.client() as browser:
            request_id = login_for(browser, "/zendesk/stats-desk")
            bridge.set_faults(status=503, retry_after=3)
            try:
                response = submit(browser, request_id, "jdoe", "password1")
            finally:
                bridge.clear_faults()
            assert response.status_code == 503

    assert counted(bridge, run) == {("stats-desk", Outcome.IMIS_UNAVAILABLE): 1}


def test_g1_imis_unavailable_while_finishing_a_sign_in_is_counted(bridge: Harness) -> None:
    """Signed in already; iMIS fails the shared-email check of the Zendesk answer."""
    with bridge.client() as browser:
        assert submit(browser, None, "jdoe", "password1").status_code == 303

        def run() -> None:
            bridge.set_faults(status=503, retry_after=3)
            try:
                response = browser.get("/zendesk/stats-desk")
            finally:
                bridge.clear_faults()
            assert response.status_code == 503

        assert counted(bridge, run) == {("stats-desk", Outcome.IMIS_UNAVAILABLE): 1}


def test_an_organization_account_is_counted_as_an_extra_reason(bridge: Harness) -> None:
    """(An account iMIS marks disabled after a good password is counted the same way: see
    tests/test_stats.py; the simulator's disabled user fails the password grant itself.)"""

    def run() -> None:
        with bridge.client() as browser:
            request_id = login_for(browser, "/zendesk/stats-desk")
            assert submit(browser, request_id, "contoso", "password1").status_code == 403

    assert counted(bridge, run) == {("stats-desk", Outcome.ORGANIZATION): 1}


def test_d3_a_throttled_attempt_is_counted_as_throttled(bridge: Harness) -> None:
    def run() -> None:
        with bridge.client() as browser:
            request_id = login_for(browser, "/zendesk/stats-desk")
            statuses = [
                submit(browser, request_id, "stats-nobody", f"guess-{n}").status_code
                for n in range(4)
            ]
            assert statuses == [401, 401, 401, 429]

    assert counted(bridge, run) == {
        ("stats-desk", Outcome.WRONG_PASSWORD): 3,
        ("stats-desk", Outcome.THROTTLED): 1,
    }


def test_counts_reach_the_database_at_shutdown_without_a_reader(
    tmp_path: Path, database_factory: Any
) -> None:
    """Counting is in memory; the app writes what it counted when it stops (and every
    few seconds before), so another process's statistics see it."""
    from bridge.storage import Database, Store

    url = database_factory.migrated_url()
    with (
        running_bridge(tmp_path, url, registrations={"stats-desk": DESK}) as harness,
        harness.client() as browser,
    ):
        assert sign_in(browser, "/zendesk/stats-desk", "jdoe").status_code == 200
    with Database(url) as database:  # another process: nothing of the first one's memory
        found = sign_in_stats(Store(database), "stats-desk", int(time.time()))
    assert found.hours.totals[Outcome.SUCCESS] == 1
