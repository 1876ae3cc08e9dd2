"""Sign-in throttling (SECURITY D3): the delay policy and its counters in the real database."""

from __future__ import annotations

import secrets
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from starlette.requests import Request

from bridge import throttle
from bridge.errors import TooManyRequests
from bridge.settings import LoginSettings, Settings
from bridge.storage import Database, Store

LOGIN = LoginSettings(throttle_free_failures=3, throttle_base_seconds=1, throttle_max_seconds=60)


@pytest.mark.parametrize(
    ("failures", "delay"),
    [(0, 0), (1, 0), (2, 0), (3, 1), (4, 2), (5, 4), (8, 32), (9, 60), (10, 60), (10**6, 60)],
)
def test_d3_delay_doubles_after_the_free_failures_and_is_capped(
    failures: int, delay: float
) -> None:
    assert throttle.delay_seconds(failures, 3, LOGIN) == delay


def test_d3_without_free_failures_every_failure_waits() -> None:
    assert throttle.delay_seconds(0, 0, LOGIN) == 0
    assert throttle.delay_seconds(1, 0, LOGIN) == 2


class Clock:
    def __init__(self) -> None:
        self.now = 1_900_000_000.0

    def time(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(throttle, "time", clock)
    return clock


@pytest.fixture
def services(db: Database, store: Store) -> Any:
    settings = Settings(issuer="http://127.0.0.1:8000", config_dir=Path("."), login=LOGIN)
    return SimpleNamespace(settings=settings, db=db, store=store)


def from_address(services: Any, address: str) -> Request:
    app = SimpleNamespace(state=SimpleNamespace(services=services))
    return Request({"type": "http", "app": app, "headers": [], "client": (address, 40000)})


def new_address() -> str:
    """Tests share one database: each uses addresses and usernames of its own."""
    return f"10.{secrets.randbelow(256)}.{secrets.randbelow(256)}.{secrets.randbelow(256)}"


def new_username() -> str:
    return f"member-{secrets.token_hex(4)}"


async def fail(request: Request, username: str, times: int = 1) -> None:
    for _ in range(times):
        await throttle.record_failure(request, username)


@pytest.mark.anyio
async def test_d3_free_failures_do_not_wait_then_the_next_attempt_does(
    services: Any, clock: Clock
) -> None:
    request, name = from_address(services, new_address()), new_username()
    await fail(request, name, 2)
    await throttle.check(request, name)
    await fail(request, name)
    with pytest.raises(TooManyRequests) as refused:
        await throttle.check(request, name)
    assert refused.value.retry_after == 1
    assert refused.value.status_code == 429
    assert refused.value.message == (
        "Too many unsuccessful sign-in attempts. Please wait a second and try again."
    )


@pytest.mark.anyio
async def test_d3_waiting_out_the_delay_allows_the_next_attempt(
    services: Any, clock: Clock
) -> None:
    request, name = from_address(services, new_address()), new_username()
    await fail(request, name, 5)
    with pytest.raises(TooManyRequests) as refused:
        await throttle.check(request, name)
    assert refused.value.retry_after == 4
    clock.now += 3
    with pytest.raises(TooManyRequests):
        await throttle.check(request, name)
    clock.now += 1
    await throttle.check(request, name)


@pytest.mark.anyio
async def test_d3_no_hard_lockout_even_after_many_failures(services: Any, clock: Clock) -> None:
    request, name = from_address(services, new_address()), new_username()
    await fail(request, name, 40)
    with pytest.raises(TooManyRequests) as refused:
        await throttle.check(request, name)
    assert refused.value.retry_after == 60
    clock.now += 60
    await throttle.check(request, name)


@pytest.mark.anyio
async def test_d3_usernames_are_counted_case_insensitively_across_addresses(
    services: Any, clock: Clock
) -> None:
    name = new_username()
    await fail(from_address(services, new_address()), name.upper(), 3)
    with pytest.raises(TooManyRequests):
        await throttle.check(from_address(services, new_address()), f" {name} ")


@pytest.mark.anyio
async def test_d3_one_address_is_throttled_across_usernames_with_a_larger_allowance(
    services: Any, clock: Clock
) -> None:
    request = from_address(services, new_address())
    allowance = LOGIN.throttle_free_failures * throttle.ADDRESS_FREE_FACTOR
    for _ in range(allowance - 1):
        await fail(request, new_username())
    await throttle.check(request, new_username())
    await fail(request, new_username())
    with pytest.raises(TooManyRequests):
        await throttle.check(request, new_username())
    await throttle.check(from_address(services, new_address()), new_username())


@pytest.mark.anyio
async def test_d3_success_clears_the_username_but_not_the_address(
    services: Any, clock: Clock
) -> None:
    request = from_address(services, new_address())
    name = new_username()
    await fail(request, name, 3)
    for _ in range(LOGIN.throttle_free_failures * throttle.ADDRESS_FREE_FACTOR - 3):
        await fail(request, new_username())
    await throttle.clear(request, name)
    with pytest.raises(TooManyRequests):
        await throttle.check(request, name)  # the address still waits
    await throttle.check(from_address(services, new_address()), name)


@pytest.mark.anyio
async def test_d3_failures_are_forgotten_after_the_window(services: Any, clock: Clock) -> None:
    request, name = from_address(services, new_address()), new_username()
    await fail(request, name, 10)
    clock.now += throttle.WINDOW_SECONDS + 1
    await fail(request, name)  # counting starts again at one
    await throttle.check(request, name)
