"""``bridge serve`` as a real process: what it logs, per worker, and what it never mounts.

Each test module run starts ``python -m bridge serve`` twice (one worker, then
two), against the iMIS simulator on its own loopback port, and reads the
process's standard error as an operator would.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from bridge.demo.simulator import create_simulator
from tests.conftest import DatabaseFactory
from tests.support.bridge import hidden_fields, write_config
from tests.support.process import READY, BridgeProcess, bridge_process
from tests.support.servers import free_port, serve

pytestmark = pytest.mark.slow

HELPDESK = """\
    name = "Helpdesk"
    profile = "zendesk"
    subdomain = "contoso"
    shared_secret = "zendesk-shared-secret-0123456789abcdef"
    """


def parse(line: str) -> dict[str, object] | str:
    """A JSON log line (standard error is a file, so ``log_format = "auto"`` is JSON),
    or the line itself when it is not one."""
    try:
        found = json.loads(line)
    except ValueError:
        return line
    return found if isinstance(found, dict) else line


@dataclass
class Served:
    process: BridgeProcess
    workers: int

    def lines(self, text: str) -> list[dict[str, object] | str]:
        """Every log line containing ``text``, parsed by :func:`parse`."""
        return [parse(line) for line in self.process.log().splitlines() if text in line]


@pytest.fixture(scope="module")
def imis_url() -> Iterator[str]:
    with serve(create_simulator()) as url:
        yield url


def start(tmp: Path, database_url: str, imis_url: str, workers: int) -> Iterator[Served]:
    port = free_port()
    config = write_config(
        tmp / "config",
        issuer=f"http://127.0.0.1:{port}",
        database_url=database_url,
        imis_url=imis_url,
        registrations={"helpdesk": HELPDESK},
    )
    args = ("serve", "--config", str(config), "--port", str(port), "--workers", str(workers))
    with bridge_process(tmp, port, *args, ready_count=workers) as process:
        yield Served(process, workers)


@pytest.fixture(scope="module", params=[1, 2], ids=["one-worker", "two-workers"])
def served(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    database_factory: DatabaseFactory,
    imis_url: str,
) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp(f"serve-{request.param}")
    yield from start(tmp, database_factory.migrated_url(), imis_url, request.param)


def sign_in(url: str, username: str, password: str) -> httpx.Response:
    with httpx.Client(base_url=url, timeout=30) as browser:
        page = browser.get("/login")
        fields = hidden_fields(page.text)
        return browser.post("/login", data={**fields, "username": username, "password": password})


def test_every_worker_logs_ready_in_the_bridge_format(served: Served) -> None:
    lines = served.lines(READY)
    assert len(lines) == served.workers, served.process.log()
    for line in lines:
        assert isinstance(line, dict), f"not in the bridge's format: {line!r}"
        assert (line["level"], line["logger"]) == ("INFO", "bridge")


def test_a_sign_in_is_logged_by_whichever_worker_answers(served: Served) -> None:
    response = sign_in(served.process.url, "jdoe", "password1")
    assert response.status_code == 303
    served.process.wait_for("sign-in ok: username='jdoe'")
    [line] = served.lines("sign-in ok: username='jdoe'")
    assert isinstance(line, dict), f"not in the bridge's format: {line!r}"
    assert (line["level"], line["logger"]) == ("INFO", "bridge.login")


def test_a_warning_is_logged_in_the_bridge_format_not_bare(served: Served) -> None:
    response = httpx.get(
        f"{served.process.url}/zendesk/helpdesk/logout",
        params={"kind": "error", "message": "served-warning"},
        timeout=30,
    )
    assert response.status_code == 200
    served.process.wait_for("served-warning")
    [line] = served.lines("served-warning")
    assert isinstance(line, dict), f"bare, not in the bridge's format: {line!r}"
    assert (line["level"], line["logger"]) == ("WARNING", "bridge.zendesk")


def test_each_request_is_one_access_line_with_its_route_template_and_request_id(
    served: Served,
) -> None:
    response = httpx.get(
        f"{served.process.url}/zendesk/helpdesk/logout",
        params={"kind": "error", "message": "access-line"},
        headers={"X-Request-ID": "trace-access-1"},
        timeout=30,
    )
    assert response.headers["x-request-id"] == "trace-access-1"
    served.process.wait_for('"trace-access-1"', count=2)
    lines = [line for line in served.lines("trace-access-1") if isinstance(line, dict)]
    [access] = [line for line in lines if line["logger"] == "bridge.access"]
    assert access["route"] == "/zendesk/{slug}/logout"
    assert (access["method"], access["status"], access["registration"]) == ("GET", 200, "helpdesk")
    assert "access-line" not in json.dumps(access)  # never the query string
    # The handler's own warning carries the same id.
    assert any(line["logger"] == "bridge.zendesk" for line in lines)


@pytest.mark.parametrize(
    "path", ["/_demo/imis/token", "/_demo/imis/api/party", "/_demo/client/", "/_demo/zendesk/x/hc"]
)
def test_serve_never_mounts_the_demo_pages(served: Served, path: str) -> None:
    """The iMIS simulator, and with it the demo people's passwords, exists only in the demo."""
    assert httpx.get(f"{served.process.url}{path}", timeout=30).status_code == 404
    assert httpx.post(f"{served.process.url}{path}", timeout=30).status_code in (404, 405)
