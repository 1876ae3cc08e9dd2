"""``/metrics`` over real HTTP: what a sign-in, a token and a request add, and who may scrape.

A bridge with the iMIS simulator, on a database of its own; the scraper is a
plain client on 127.0.0.1 (the default allow list), a stranger one bound to
127.0.0.2 (Linux routes all of 127.0.0.0/8 to the loopback interface). Each test
reads the scrape before and after what it does. Under ``bridge serve --workers 2``
one scrape adds up what every worker counted.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bridge.demo.simulator import create_simulator
from tests.oauth.rp import Rp, new_browser
from tests.support.bridge import Harness, hidden_fields, running_bridge, write_config
from tests.support.process import bridge_process
from tests.support.servers import free_port, serve

SECRET = "metrics-portal-secret-0123456789abcdef"
REDIRECT = "https://metrics.example.org/callback"
PORTAL = f"""
name = "Metrics Portal"
profile = "oidc"
client_id = "metrics-portal"
client_secret = "{SECRET}"
redirect_uris = ["{REDIRECT}"]
scopes = ["openid", "offline_access"]
"""
DESK = """
name = "Metrics Desk"
profile = "zendesk"
subdomain = "metricsdesk"
shared_secret = "metrics-desk-shared-secret-0123456789"
"""

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str, local_address: str = "127.0.0.1") -> Samples:
    """Every sample of one scrape, from a client at ``local_address``."""
    transport = httpx.HTTPTransport(local_address=local_address)
    with httpx.Client(transport=transport, timeout=30) as client:
        response = client.get(f"{url}/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of every series of ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, found), v in samples.items() if n == name and wanted <= found)


@pytest.fixture(scope="module")
def bridge(tmp_path_factory: pytest.TempPathFactory, database_factory: Any) -> Iterator[Harness]:
    tmp: Path = tmp_path_factory.mktemp("metrics")
    registrations = {"metrics-portal": PORTAL, "metrics-desk": DESK}
    with running_bridge(tmp, database_factory.migrated_url(), registrations=registrations) as h:
        yield h


def submit(browser: httpx.Client, username: str, password: str) -> httpx.Response:
    """The bridge's own sign-in page, filled in and sent."""
    fields = hidden_fields(browser.get("/login").text)
    return browser.post("/login", data={**fields, "username": username, "password": password})


def portal(bridge: Harness, http: httpx.Client) -> Rp:
    return Rp(bridge, http, "metrics-portal", SECRET, REDIRECT, scope="openid offline_access")


def test_a_sign_in_counts_for_its_registration_and_outcome(
    bridge: Harness, http: httpx.Client
) -> None:
    before = scrape(bridge.url)
    with new_browser(bridge) as browser:
        portal(bridge, http).sign_in(browser, "jdoe")
    after = scrape(bridge.url)
    labels = {"registration": "metrics-portal", "outcome": "success"}
    assert value(after, "bridge_sign_ins_total", **labels) == (
        value(before, "bridge_sign_ins_total", **labels) + 1
    )


def test_a_wrong_password_counts_as_wrong_password(bridge: Harness) -> None:
    labels = {"registration": "-", "outcome": "wrong_password"}
    before = value(scrape(bridge.url), "bridge_sign_ins_total", **labels)
    with new_browser(bridge) as browser:
        assert submit(browser, "jdoe", "not-the-password").status_code == 401
    assert value(scrape(bridge.url), "bridge_sign_ins_total", **labels) == before + 1


def test_a_code_exchange_and_a_refresh_count_tokens_by_grant(
    bridge: Harness, http: httpx.Client
) -> None:
    name = "bridge_tokens_issued_total"
    before = scrape(bridge.url)
    rp = portal(bridge, http)
    with new_browser(bridge) as browser:
        tokens = rp.tokens(browser)
    middle = scrape(bridge.url)
    assert value(middle, name, grant_type="authorization_code") == (
        value(before, name, grant_type="authorization_code") + 1
    )
    assert value(middle, name, grant_type="refresh_token") == value(
        before, name, grant_type="refresh_token"
    )
    refreshed = rp.refresh(tokens["refresh_token"])
    assert refreshed.status_code == 200, refreshed.text
    after = scrape(bridge.url)
    assert value(after, name, grant_type="refresh_token") == (
        value(middle, name, grant_type="refresh_token") + 1
    )


def test_imis_latency_has_samples_by_operation_after_a_sign_in(
    bridge: Harness, http: httpx.Client
) -> None:
    with new_browser(bridge) as browser:
        portal(bridge, http).sign_in(browser, "jdoe")
    samples = scrape(bridge.url)
    name = "bridge_imis_request_duration_seconds_count"
    for operation in ("token", "user", "party"):
        assert value(samples, name, operation=operation) >= 1, operation
    assert not any(n == name and ("operation", "") in labels for n, labels in samples)


def test_imis_errors_are_counted_by_kind(bridge: Harness) -> None:
    name = "bridge_imis_errors_total"
    before = total(scrape(bridge.url), name, kind="5xx")
    bridge.set_faults(status=500, paths=["/token"], count=1)
    try:
        with new_browser(bridge) as browser:
            assert submit(browser, "jdoe", "password1").status_code == 503
    finally:
        bridge.clear_faults()
    assert total(scrape(bridge.url), name, kind="5xx") == before + 1


def test_a_request_is_timed_under_its_route_template(bridge: Harness) -> None:
    name = "bridge_http_request_duration_seconds_count"
    labels = {"route": "/zendesk/{slug}/logout", "method": "GET", "status": "2xx"}
    before = scrape(bridge.url)
    response = httpx.get(f"{bridge.url}/zendesk/metrics-desk/logout", timeout=30)
    assert response.status_code == 200
    assert httpx.get(f"{bridge.url}/no/such/page", timeout=30).status_code == 404
    after = scrape(bridge.url)
    assert value(after, name, **labels) == value(before, name, **labels) + 1
    unmatched = {"route": "-", "method": "GET", "status": "4xx"}
    assert value(after, name, **unmatched) == value(before, name, **unmatched) + 1
    assert not any("metrics-desk" in dict(found).get("route", "") for _, found in after)


def test_the_database_pool_is_reported(bridge: Harness) -> None:
    samples = scrape(bridge.url)
    assert value(samples, "bridge_db_pool_size") >= 1
    assert ("bridge_db_pool_checked_out", frozenset()) in samples


def test_a_scrape_from_an_address_not_allowed_is_an_unknown_page(bridge: Harness) -> None:
    transport = httpx.HTTPTransport(local_address="127.0.0.2")
    with httpx.Client(base_url=bridge.url, transport=transport, timeout=30) as stranger:
        refused = stranger.get("/metrics")
        unknown = stranger.get("/no-such-page")
    assert refused.status_code == 404
    assert refused.text == unknown.text
    assert "bridge_" not in refused.text


def test_metrics_can_be_turned_off(
    tmp_path: Path, database_factory: Any, http: httpx.Client
) -> None:
    extra = """
        [metrics]
        enabled = false
    """
    with running_bridge(tmp_path, database_factory.migrated_url(), extra=extra) as other:
        assert httpx.get(f"{other.url}/metrics", timeout=30).status_code == 404


def test_the_allow_list_admits_the_addresses_it_names(
    tmp_path: Path, database_factory: Any
) -> None:
    extra = """
        [metrics]
        allow = ["127.0.0.2/32"]
    """
    with running_bridge(tmp_path, database_factory.migrated_url(), extra=extra) as other:
        assert httpx.get(f"{other.url}/metrics", timeout=30).status_code == 404
        assert scrape(other.url, local_address="127.0.0.2")


# --- bridge serve --workers 2 ----------------------------------------------------------


def worker_pids(folder: Path) -> set[str]:
    """The workers that answered a request (each writes histogram_PID.db on its first)."""
    return {p.stem.rsplit("_", 1)[1] for p in folder.glob("histogram_*.db")}


def test_two_workers_are_counted_in_one_scrape(tmp_path: Path, database_factory: Any) -> None:
    folder = tmp_path / "prometheus"
    folder.mkdir()
    (folder / "counter_1.db").write_bytes(b"")  # an earlier run's: cleared at start
    port = free_port()
    with serve(create_simulator()) as imis_url:
        config = write_config(
            tmp_path / "config",
            issuer=f"http://127.0.0.1:{port}",
            database_url=database_factory.migrated_url(),
            imis_url=imis_url,
        )
        args = ("serve", "--config", str(config), "--port", str(port), "--workers", "2")
        env: Mapping[str, str] = {"PROMETHEUS_MULTIPROC_DIR": str(folder)}
        with bridge_process(tmp_path, port, *args, env=env, ready_count=2) as running:
            assert not (folder / "counter_1.db").exists()
            name = "bridge_http_request_duration_seconds_count"
            labels = {"route": "/healthz", "method": "GET", "status": "2xx"}
            before = value(scrape(running.url), name, **labels)
            sent = 0
            # A new connection per request: the kernel hands them to either worker.
            while sent < 20 or (len(worker_pids(folder)) < 2 and sent < 400):
                assert httpx.get(f"{running.url}/healthz", timeout=30).status_code == 200
                sent += 1
            assert len(worker_pids(folder)) == 2, f"one worker took all {sent} requests"
            assert value(scrape(running.url), name, **labels) == before + sent
