"""SECURITY G1 end to end: a real ``bridge serve`` in front of an iMIS that fails.

One ``bridge serve`` process (its own database: SQLite, or a PostgreSQL schema
when ``BRIDGE_TEST_DATABASE_URL`` is set) talks to the iMIS simulator, which runs
in the test process on a fixed loopback port so that it can be stopped and started
again. ``[imis] timeout`` is 1 s, so "slow" is a delay of 2.5 s.

For each fault (iMIS down, slow, answering 500, answering garbage) and each
flow that asks for a password (an OIDC authorization, a Zendesk remote login),
the password sign-in on ``/login`` must answer 503 with a Retry-After, say
"iMIS is unavailable" and never "wrong password", keep the username, set no
session cookie, and write nothing: every table is compared row by row before
and after (the sign-in statistics are checked once, after the process flushed
them: they count the attempt as "iMIS unavailable" and nothing else). Then the
fault is cleared and the same form succeeds, with no restart of the bridge.

``tests/routes/test_login.py::test_g1_*`` covers the page itself in process;
``tests/connectors/test_imis.py`` covers each odd answer of iMIS.
"""

from __future__ import annotations

import html
import re
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.pool import NullPool

from bridge.demo.simulator import create_simulator
from tests.conftest import DatabaseFactory
from tests.oauth.rp import Rp, new_browser
from tests.support.bridge import (
    Harness,
    helpdesk_registration,
    hidden_fields,
    portal_registration,
    served_bridge,
    write_config,
)
from tests.support.leaks import register
from tests.support.servers import free_port, serve

pytestmark = pytest.mark.slow

PASSWORD = "password1"
PORTAL_SECRET = "faults-portal-secret-0123456789abcdef"
DESK_SECRET = "faults-desk-shared-secret-0123456789abcdef"
CALLBACK = "https://portal.example.org/callback"
REGISTRATIONS = {
    "portal": portal_registration(PORTAL_SECRET, CALLBACK, ("openid", "profile", "email")),
    "helpdesk": helpdesk_registration(DESK_SECRET),
}
#: Fail fast: one attempt per read, a 1 s budget per call to iMIS.
IMIS = "[imis]\ntimeout = 1\nconnect_timeout = 1\nretries = 0\n"
UNAVAILABLE = "iMIS is unavailable right now, so we cannot check your password."
#: What the sign-in statistics may hold without being "written" by a failed attempt.
STATS_TABLE = "sign_in_counts"
#: How long the process may take to write its counted sign-ins (it does every 5 s).
FLUSH_WAIT = 20.0


class Imis:
    """The iMIS simulator on one fixed loopback port, stopped and started at will.

    A start after a stop is a new simulator (as a restarted iMIS: the tokens it
    gave before are unknown to it)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._running: ExitStack | None = None

    def start(self) -> None:
        assert self._running is None
        stack = ExitStack()
        stack.enter_context(serve(create_simulator(), port=self.port))
        self._running = stack

    def stop(self) -> None:
        if self._running is not None:
            self._running.close()
            self._running = None


@dataclass
class Tally:
    """What the module's sign-ins should have counted, per (registration, outcome)."""

    counts: Counter[tuple[str, str]] = field(default_factory=Counter)


@pytest.fixture(scope="module")
def imis() -> Iterator[Imis]:
    server = Imis()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def database(database_factory: DatabaseFactory) -> str:
    """A database of this module's own: the comparisons below are of whole tables."""
    return database_factory.migrated_url()


@pytest.fixture(scope="module")
def bridge(
    tmp_path_factory: pytest.TempPathFactory, database: str, imis: Imis
) -> Iterator[Harness]:
    tmp = tmp_path_factory.mktemp("faults-imis")
    port = free_port()
    config = write_config(
        tmp / "config",
        issuer=f"http://127.0.0.1:{port}",
        database_url=database,
        imis_url=imis.url,
        registrations=REGISTRATIONS,
        extra=IMIS,
    )
    with served_bridge(tmp, config, port, imis.url) as (bridge, _):
        yield bridge


@pytest.fixture(scope="module")
def tally() -> Tally:
    return Tally()


# --- the database, as the process left it ----------------------------------------------------


def snapshot(database: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table but the sign-in statistics, in a stable order."""
    engine = create_engine(database, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            tables = sorted(set(inspect(connection).get_table_names()) - {STATS_TABLE})
            return {
                table: sorted(
                    (tuple(row) for row in connection.execute(text(f"SELECT * FROM {table}"))),
                    key=repr,
                )
                for table in tables
            }
    finally:
        engine.dispose()


def stats(database: str) -> Counter[tuple[str, str]]:
    engine = create_engine(database, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                text(f"SELECT registration, outcome, count FROM {STATS_TABLE}")
            )
            counted: Counter[tuple[str, str]] = Counter()
            for registration, outcome, count in rows:
                counted[(registration, outcome)] += count
            return counted
    finally:
        engine.dispose()


# --- the faults ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    """One way iMIS fails: simulator faults to set, or ``down`` (the port is closed)."""

    name: str
    faults: dict[str, Any] = field(default_factory=dict)
    down: bool = False

    def start(self, bridge: Harness, imis: Imis) -> None:
        if self.down:
            imis.stop()
        else:
            bridge.set_faults(**self.faults)

    def clear(self, bridge: Harness, imis: Imis) -> None:
        if self.down:
            imis.stop()  # no-op unless a failed assertion left it stopped
            imis.start()
        else:
            bridge.clear_faults()


FAULTS = [
    Fault("down", down=True),
    Fault("slow", {"latency_ms": 2500}),
    Fault("500", {"status": 500}),
    Fault("503-retry-after", {"status": 503, "retry_after": 42}),
    Fault("not-json", {"malformed_json": True}),
    Fault("wrong-shape-json", {"wrong_shape_json": True}),
    # The password is accepted, then the profile read answers garbage.
    Fault("wrong-shape-party", {"wrong_shape_json": True, "paths": ["/api/Party"]}),
]


# --- the two flows that ask for a password ---------------------------------------------------


def portal(bridge: Harness, http: httpx.Client) -> Rp:
    return Rp(bridge, http, "portal", PORTAL_SECRET, CALLBACK, scope="openid profile email")


def start_flow(
    flow: str, bridge: Harness, http: httpx.Client, browser: httpx.Client
) -> tuple[dict[str, str] | None, str]:
    """Start ``flow`` in ``browser`` up to the sign-in form: the OIDC request's parameters
    (None for Zendesk) and the sign-in form's URL."""
    params: dict[str, str] | None = None
    if flow == "oidc":
        params = portal(bridge, http).authorize_params()
        response = browser.get(portal(bridge, http).authorize_url(params))
    else:
        response = browser.get("/zendesk/helpdesk")
    assert response.status_code == 303, response.text
    assert response.headers["location"].startswith("/login?request="), response.headers
    return params, response.headers["location"]


def finish_flow(
    bridge: Harness,
    http: httpx.Client,
    browser: httpx.Client,
    response: httpx.Response,
    params: dict[str, str] | None,
) -> None:
    """From the successful sign-in's redirect to what the app receives, checked."""
    assert response.status_code == 303, response.text
    location = response.headers["location"]
    for _ in range(5):
        if not location.startswith("/"):
            break
        response = browser.get(location)
        location = response.headers.get("location", "")
    if params is not None:
        rp = portal(bridge, http)
        authz = rp.authorization_from(response, params)
        redeemed = rp.redeem(authz)
        assert redeemed.status_code == 200, redeemed.text
        claims = rp.verify_id_token(redeemed.json()["id_token"])
        assert claims["nonce"] == params["nonce"]
    else:
        assert response.status_code == 200, response.text
        assert "jwt" in hidden_fields(response.text), response.text


_USERNAME = re.compile(r'<input[^>]*\bname="username"[^>]*\bvalue="([^"]*)"')


def shown_username(page: str) -> str:
    match = _USERNAME.search(page)
    assert match, page
    return html.unescape(match.group(1))


def session_cookies(response: httpx.Response) -> list[str]:
    return [c for c in response.headers.get_list("set-cookie") if "bridge-session" in c]


@pytest.mark.parametrize("flow", ["oidc", "zendesk"])
@pytest.mark.parametrize("fault", FAULTS, ids=lambda f: f.name)
def test_g1_imis_fault_on_sign_in_is_a_503_that_writes_nothing_and_heals(
    bridge: Harness,
    imis: Imis,
    database: str,
    http: httpx.Client,
    tally: Tally,
    fault: Fault,
    flow: str,
) -> None:
    """G1: while iMIS is down, slow, failing or talking nonsense, a password sign-in within
    an OIDC authorization or a Zendesk remote login is a 503 with Retry-After (never "wrong
    password"), keeps the username, starts no session and writes nothing; once iMIS is
    back, the same form signs in, without restarting the bridge."""
    register(PASSWORD)
    slug = "portal" if flow == "oidc" else "helpdesk"
    with new_browser(bridge) as browser:
        params, login_url = start_flow(flow, bridge, http, browser)
        form = hidden_fields(browser.get(login_url).text)
        before = snapshot(database)
        fault.start(bridge, imis)
        try:
            failed = browser.post("/login", data={**form, "username": "jdoe", "password": PASSWORD})
        finally:
            fault.clear(bridge, imis)
        tally.counts[(slug, "imis_unavailable")] += 1

        assert failed.status_code == 503, failed.text
        retry_after = int(failed.headers["retry-after"])
        if fault.name == "503-retry-after":
            assert retry_after == 42  # iMIS's own value
        else:
            assert 1 <= retry_after <= 3600
        page = html.unescape(failed.text)
        assert UNAVAILABLE in page
        assert "incorrect" not in page.lower()
        assert shown_username(failed.text) == "jdoe"
        assert session_cookies(failed) == []
        assert not [c for c in browser.cookies if "bridge-session" in c]
        assert snapshot(database) == before, "a sign-in iMIS could not decide wrote to the database"

        # iMIS is back: the form of the 503 page signs in, and the flow ends at the app.
        again = browser.post(
            "/login",
            data={**hidden_fields(failed.text), "username": "jdoe", "password": PASSWORD},
        )
        assert session_cookies(again), again.text
        finish_flow(bridge, http, browser, again, params)
        tally.counts[(slug, "success")] += 1


def test_g1_sign_in_statistics_count_imis_unavailable_and_nothing_else(
    bridge: Harness, imis: Imis, database: str, tally: Tally
) -> None:
    """G1: once the process has written its counts, the faulted sign-ins of this module
    are "iMIS unavailable" (never "wrong password" or "throttled"), each once."""
    register(PASSWORD)
    # One more faulted attempt, so this test means something when run alone.
    with new_browser(bridge) as browser:
        response = browser.get("/zendesk/helpdesk")
        form = hidden_fields(browser.get(response.headers["location"]).text)
        bridge.set_faults(status=500)
        try:
            failed = browser.post("/login", data={**form, "username": "jdoe", "password": PASSWORD})
        finally:
            bridge.clear_faults()
        assert failed.status_code == 503
        tally.counts[("helpdesk", "imis_unavailable")] += 1
    expected = Counter(tally.counts)
    deadline = time.monotonic() + FLUSH_WAIT
    while (found := stats(database)) != expected and time.monotonic() < deadline:
        time.sleep(0.25)
    assert found == expected
