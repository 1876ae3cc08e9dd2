"""SECURITY G2 end to end: the database stops, comes back, or drops the bridge's connections.

A PostgreSQL cluster of this module's own (:mod:`tests.support.postgres`: never
the shared one, which other tests use) and one real ``bridge serve`` on it, with
the iMIS simulator in the test process. The cluster is stopped with ``pg_ctl stop
-m fast`` under the running bridge: ``/readyz`` says 503 while ``/healthz`` stays
200, and every member-facing request (the sign-in form, ``/authorize``,
``/token``, ``/userinfo``) answers 503 with a Retry-After, as a page or as JSON,
never a 500 nor a stack trace. ``pg_ctl start``: the same process is ready again
by itself, and what was issued before the outage still works. Then
``pg_terminate_backend`` kills every connection of the bridge, also while
requests are running: at most the request in flight gets a 503, and the next ones
succeed.

No SQLite variant: a SQLite file cannot be taken away from a running process
the same way (the test runs as root, which file modes do not stop, and an open
file keeps working after it is moved or removed).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.oauth.rp import Authorization, Rp, http_client, new_browser
from tests.support.bridge import Harness, hidden_fields, portal_registration
from tests.support.leaks import register
from tests.support.outage import Outage, bridge_on_private_postgres
from tests.support.process import BridgeProcess

pytestmark = pytest.mark.slow

SECRET = "outage-portal-secret-0123456789abcdef"
CALLBACK = "https://portal.example.org/callback"
REGISTRATIONS = {"portal": portal_registration(SECRET, CALLBACK)}
#: The longest the bridge may take to see the database again after it restarted.
RECOVERY = 20.0


@pytest.fixture(scope="module")
def outage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outage]:
    tmp = tmp_path_factory.mktemp("faults-database")
    with bridge_on_private_postgres(tmp, REGISTRATIONS) as outage:
        yield outage


def portal(bridge: Harness, http: httpx.Client) -> Rp:
    return Rp(bridge, http, "portal", SECRET, CALLBACK)


def assert_unavailable(response: httpx.Response, *, json: bool) -> None:
    """A 503 with Retry-After, as JSON or as a page, that shows no stack trace."""
    assert response.status_code == 503, (response.status_code, response.text)
    assert int(response.headers["retry-after"]) >= 1
    assert "Traceback" not in response.text
    assert "sqlalchemy" not in response.text.lower()
    assert "psycopg" not in response.text.lower()
    kind = response.headers["content-type"]
    if json:
        assert kind.startswith("application/json"), kind
        assert isinstance(response.json(), dict)
    else:
        assert kind.startswith("text/html"), kind
        assert "try again" in response.text.lower(), response.text


def wait_ready(http: httpx.Client, bridge: Harness) -> list[int]:
    """Poll ``/readyz`` until it is 200 (at most :data:`RECOVERY` s); the statuses seen."""
    seen: list[int] = []
    deadline = time.monotonic() + RECOVERY
    while time.monotonic() < deadline:
        seen.append(http.get(f"{bridge.url}/readyz").status_code)
        if seen[-1] == 200:
            return seen
        time.sleep(0.2)
    raise AssertionError(f"/readyz did not recover within {RECOVERY} s: {seen[-10:]}")


def full_flow(bridge: Harness, http: httpx.Client) -> dict[str, str]:
    """Sign in with a new browser, redeem the code, read userinfo: the tokens."""
    with new_browser(bridge) as browser:
        tokens: dict[str, str] = portal(bridge, http).tokens(browser)
    claims = portal(bridge, http).verify_id_token(tokens["id_token"])
    assert claims["sub"]
    info = portal(bridge, http).userinfo(tokens["access_token"])
    assert info.status_code == 200, info.text
    return tokens


def test_g2_database_stopped_is_a_503_everywhere_then_heals_without_a_restart(
    outage: Outage, http: httpx.Client
) -> None:
    """G2: ``pg_ctl stop -m fast`` under a running ``bridge serve``: /readyz 503, /healthz
    200, the sign-in form, /authorize, /token and /userinfo 503 with Retry-After (never a
    500); ``pg_ctl start``: ready again, a full code flow works, and the code, the refresh
    token and the session issued before the outage still work."""
    register("password1")
    bridge, cluster = outage.bridge, outage.cluster
    rp = portal(bridge, http)
    assert http.get(f"{bridge.url}/readyz").status_code == 200
    earlier = full_flow(bridge, http)
    with new_browser(bridge) as browser, new_browser(bridge) as signed_in:
        # Before the outage: a code not yet redeemed, and a sign-in form on screen.
        pending: Authorization = rp.sign_in(signed_in)
        params = rp.authorize_params()
        to_login = browser.get(rp.authorize_url(params))
        assert to_login.status_code == 303, to_login.text
        form = hidden_fields(browser.get(to_login.headers["location"]).text)

        cluster.stop("fast")
        try:
            ready = http.get(f"{bridge.url}/readyz")
            assert_unavailable(ready, json=True)
            assert ready.json()["database"] is False
            assert http.get(f"{bridge.url}/healthz").status_code == 200

            login = browser.post(
                "/login", data={**form, "username": "jdoe", "password": "password1"}
            )
            assert_unavailable(login, json=False)
            assert not [c for c in browser.cookies if "bridge-session" in c]
            assert_unavailable(browser.get(rp.authorize_url(rp.authorize_params())), json=False)
            assert_unavailable(signed_in.get(rp.authorize_url(rp.authorize_params())), json=False)
            assert_unavailable(rp.redeem(pending), json=True)
            assert_unavailable(rp.refresh(earlier["refresh_token"]), json=True)
            assert_unavailable(rp.userinfo(earlier["access_token"]), json=True)
            # A page script on another origin may read that 503: the registration that
            # lists the origins allowed to is in the database.
            scripted = http.post(
                f"{bridge.url}/token",
                data={
                    "grant_type": "authorization_code",
                    "code": "x",
                    "redirect_uri": CALLBACK,
                    "client_id": "portal",
                    "client_secret": SECRET,
                },
                headers={"origin": "https://app.example.org"},
            )
            assert_unavailable(scripted, json=True)
            assert scripted.headers["access-control-allow-origin"] == "*"
            assert scripted.headers["access-control-expose-headers"] == "Retry-After"
            # A client that asks for JSON gets JSON from a page's route too.
            asked = http.get(rp.authorize_url(params), headers={"accept": "application/json"})
            assert_unavailable(asked, json=True)
        finally:
            cluster.start()

        wait_ready(http, bridge)
        # Nothing the outage touched was used up: the code redeems, the refresh token
        # rotates, the session is still signed in, the form signs in.
        redeemed = rp.redeem(pending)
        assert redeemed.status_code == 200, redeemed.text
        refreshed = rp.refresh(earlier["refresh_token"])
        assert refreshed.status_code == 200, refreshed.text
        assert rp.userinfo(refreshed.json()["access_token"]).status_code == 200
        silent_params = rp.authorize_params(prompt="none")
        rp.authorization_from(signed_in.get(rp.authorize_url(silent_params)), silent_params)
        again = browser.post("/login", data={**form, "username": "jdoe", "password": "password1"})
        assert again.status_code == 303, again.text
        rp.authorization_from(browser.get(again.headers["location"]), params)
    full_flow(bridge, http)
    answered = access_statuses(outage.process)
    assert 503 in answered
    assert [s for s in answered if s >= 500 and s != 503] == []


def access_statuses(process: BridgeProcess) -> list[int]:
    """The status of every request the process answered, from its access log."""
    statuses = []
    for line in process.log().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("logger") == "bridge.access":
            statuses.append(int(record["status"]))
    assert statuses, "no access log line found"
    return statuses


def test_g2_connections_killed_by_the_server_are_replaced_without_a_restart(
    outage: Outage, http: httpx.Client
) -> None:
    """G2: ``pg_terminate_backend`` of every connection of the bridge, between requests
    (the next ones succeed) and while a client keeps asking (at most the request in flight
    at each kill gets a 503; never a 500)."""
    register("password1")
    bridge, cluster = outage.bridge, outage.cluster
    tokens = full_flow(bridge, http)
    assert cluster.terminate_connections() >= 1, "the bridge held no connection to kill"
    assert http.get(f"{bridge.url}/readyz").status_code == 200
    tokens = full_flow(bridge, http)

    statuses: list[int] = []
    stop = threading.Event()

    def keep_asking() -> None:
        with http_client() as own:
            rp = portal(bridge, own)
            while not stop.is_set() and len(statuses) < 2000:
                statuses.append(rp.userinfo(tokens["access_token"]).status_code)

    asker = threading.Thread(target=keep_asking, daemon=True)
    asker.start()
    kills = 0
    try:
        for _ in range(5):
            time.sleep(0.3)
            cluster.terminate_connections()
            kills += 1
        time.sleep(0.3)
    finally:
        stop.set()
        asker.join(timeout=30)
    assert not asker.is_alive()
    assert statuses, "no request was made"
    assert set(statuses) <= {200, 503}, sorted(set(statuses))
    assert statuses.count(503) <= kills, statuses
    full_flow(bridge, http)  # and after the kills, everything works
    assert [s for s in access_statuses(outage.process) if s >= 500 and s != 503] == []
