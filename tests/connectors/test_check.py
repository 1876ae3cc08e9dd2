"""``bridge imis check`` says clearly what is wrong with the iMIS settings."""

from __future__ import annotations

import pytest

from bridge.connectors.check import CheckLine, check_imis, run_check
from bridge.demo.simulator import create_simulator
from tests.connectors.conftest import Sim, imis_settings
from tests.support.servers import free_port

pytestmark = pytest.mark.anyio


def failures(lines: list[CheckLine]) -> list[str]:
    return [line.text for line in lines if not line.ok]


async def test_good_config_passes(sim: Sim) -> None:
    lines = await check_imis(imis_settings(), sim.url, "jdoe")
    assert failures(lines) == []
    text = "\n".join(line.text for line in lines)
    assert "'bridge-service' signed in" in text
    assert "may read iMIS users" in text
    assert "iMIS ID 23210, Jane Doe, email jane.doe@example.org, phone +12025550100" in text
    assert "service-password1" not in text


async def test_user_notes_shared_and_missing_email(sim: Sim) -> None:
    sam = await check_imis(imis_settings(), sim.url, "sam")
    nora = await check_imis(imis_settings(), sim.url, "noemail")
    assert "note: primary email also signs in iMIS ID(s) 23217" in [line.text for line in sam]
    assert any("no primary email" in line.text for line in nora)


@pytest.mark.parametrize(
    ("user", "problem"),
    [
        ("nobody", "user 'nobody': no such iMIS user"),
        ("contoso", "user 'contoso': iMIS ID 18000 is an organization record (cannot sign in)"),
        ("disabled", "user 'disabled': account disabled (the iMIS user is disabled (IsDisabled))"),
    ],
)
async def test_user_problems_are_named(sim: Sim, user: str, problem: str) -> None:
    assert failures(await check_imis(imis_settings(), sim.url, user)) == [problem]


async def test_wrong_service_password(sim: Sim) -> None:
    lines = await check_imis(imis_settings(service_password="nope"), sim.url, None)
    assert failures(lines) == [
        "iMIS rejected the service account 'bridge-service': "
        "The user name or password is incorrect."
    ]


async def test_missing_remote_service_role(sim: Sim) -> None:
    settings = imis_settings(service_username="jdoe", service_password="password1")
    (problem,) = failures(await check_imis(settings, sim.url, "zoe"))
    assert "403 on /api/User" in problem
    assert "RemoteService role" in problem


async def test_unreachable_url() -> None:
    port = free_port()
    (problem,) = failures(await check_imis(imis_settings(), f"http://127.0.0.1:{port}", None))
    assert problem == f"connection to 127.0.0.1:{port} refused: nothing listens there"


async def test_unknown_host() -> None:
    (problem,) = failures(await check_imis(imis_settings(), "https://imis.invalid", None))
    assert problem.startswith("cannot resolve imis.invalid (DNS)") or "timed out" in problem


async def test_tls_to_a_plain_http_port(sim: Sim) -> None:
    url = sim.url.replace("http://", "https://")
    (problem,) = failures(await check_imis(imis_settings(), url, None))
    assert problem.startswith("TLS handshake with 127.0.0.1:")


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("imis.example.org", "is not an http(s) URL"),
        ("http://imis.example.org", "uses http"),
        ("https://imis.example.org/api", "ends in /api"),
    ],
)
async def test_bad_urls(url: str, problem: str) -> None:
    (found,) = failures(await check_imis(imis_settings(), url, None))
    assert problem in found


async def test_url_that_is_not_imis(sim: Sim) -> None:
    (problem,) = failures(await check_imis(imis_settings(), sim.url + "/nothing", None))
    assert "not found (404)" in problem


async def test_without_service_account_only_the_token_endpoint_is_checked(sim: Sim) -> None:
    settings = imis_settings(service_username=None, service_password=None)
    lines = await check_imis(settings, sim.url, None)
    assert failures(lines) == []
    assert any(line.text.startswith("note: no service account") for line in lines)
    with_user = await check_imis(settings, sim.url, "jdoe")
    assert failures(with_user) == [
        "--user needs a service account: profiles cannot be read without one"
    ]


async def test_imis_failing(sim: Sim) -> None:
    sim.state.set_faults(status=502, paths=("/token",))
    (problem,) = failures(await check_imis(imis_settings(), sim.url, None))
    assert "answered 502" in problem


async def test_built_in_simulator_is_checked_in_process() -> None:
    lines = await check_imis(imis_settings(), None, "zoe", simulator=create_simulator())
    assert failures(lines) == []
    assert lines[0].text.startswith("base_url is 'simulator'")


async def test_simulator_base_url_without_a_simulator_is_a_clear_failure() -> None:
    """The check does not know where the demo's simulator lives: the CLI hands it in."""
    assert failures(await check_imis(imis_settings(), None, "zoe")) == [
        "base_url is 'simulator' but no simulator was given"
    ]


def test_run_check_prints_and_returns_an_exit_code(
    sim: Sim, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_check(imis_settings(), "jdoe", base_url=sim.url) == 0
    assert "iMIS check passed" in capsys.readouterr().out
    assert run_check(imis_settings(service_password="x"), None, base_url=sim.url) == 1
    out = capsys.readouterr().out
    assert "FAIL  iMIS rejected the service account" in out
