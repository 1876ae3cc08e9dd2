"""Sign-in throttling (SECURITY D3): the delay policy, device cookies, and the counters in the
real database. The end-to-end proof over HTTP is tests/e2e/test_lockout.py."""

from __future__ import annotations

import secrets
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from starlette.requests import Request
from starlette.responses import Response

from bridge import throttle
from bridge.errors import TooManyRequests
from bridge.keys import KeyStore
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


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> KeyStore:
    return KeyStore.load_or_create(tmp_path_factory.mktemp("keys"))


@pytest.fixture
def services(db: Database, store: Store, keys: KeyStore) -> Any:
    settings = Settings(issuer="http://127.0.0.1:8000", config_dir=Path("."), login=LOGIN)
    return SimpleNamespace(settings=settings, db=db, store=store, keys=keys)


COOKIE = throttle.device_cookie_name(Settings(issuer="http://x", config_dir=Path(".")))


def from_address(services: Any, address: str, device: str | None = None) -> Request:
    """A request from ``address``, carrying the device cookie ``device`` if given."""
    app = SimpleNamespace(state=SimpleNamespace(services=services))
    headers = [(b"cookie", f"{COOKIE}={device}".encode())] if device else []
    return Request({"type": "http", "app": app, "headers": headers, "client": (address, 40000)})


def signed_in(request: Request, username: str) -> str:
    """The device cookie this browser holds after signing in as ``username``."""
    response = Response()
    throttle.remember_device(request, response, username)
    [header] = response.headers.getlist("set-cookie")
    assert header.startswith(f"{COOKIE}=")
    return header.split(";", 1)[0].split("=", 1)[1]


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
    allowance = LOGIN.throttle_free_failures * throttle.USERNAME_FREE_FACTOR
    for _ in range(allowance):
        await fail(from_address(services, new_address()), name.upper())
    with pytest.raises(TooManyRequests):
        await throttle.check(from_address(services, new_address()), f" {name} ")


@pytest.mark.anyio
async def test_d3_one_address_guessing_one_username_waits_before_the_username_does(
    services: Any, clock: Clock
) -> None:
    request, name = from_address(services, new_address()), new_username()
    await fail(request, name, LOGIN.throttle_free_failures)
    with pytest.raises(TooManyRequests):
        await throttle.check(request, name)
    await throttle.check(from_address(services, new_address()), name)


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
async def test_d3_success_clears_the_username_at_that_address_but_not_the_address(
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


# --- device cookies -------------------------------------------------------------------


@pytest.mark.anyio
async def test_d3_a_known_device_is_exempt_from_the_username_wide_limit(
    services: Any, clock: Clock
) -> None:
    name = new_username()
    device = signed_in(from_address(services, new_address()), name)
    # Strangers everywhere guess the member's password, waiting out every delay.
    for _ in range(40):
        await fail(from_address(services, new_address()), name)
    with pytest.raises(TooManyRequests) as refused:
        await throttle.check(from_address(services, new_address()), name)
    assert refused.value.detail == "sign-in throttled (unknown device)"
    await throttle.check(from_address(services, new_address(), device), name.upper())


@pytest.mark.anyio
async def test_d3_a_device_cookie_is_throttled_on_its_own_failures_only(
    services: Any, clock: Clock
) -> None:
    name = new_username()
    device = signed_in(from_address(services, new_address()), name)
    thief = from_address(services, new_address(), device)
    await fail(thief, name, LOGIN.throttle_free_failures)
    with pytest.raises(TooManyRequests) as refused:
        await throttle.check(thief, name)
    assert refused.value.detail == "sign-in throttled (known device)"
    # Its failures are its own: not the username's, not the address's.
    await throttle.check(from_address(services, new_address()), name)
    await throttle.check(from_address(services, thief.client.host), name)  # type: ignore[union-attr]
    # Never a hard lockout, and a success clears the device's count.
    await fail(thief, name, 40)
    clock.now += LOGIN.throttle_max_seconds
    await throttle.check(thief, name)
    await throttle.clear(thief, name)
    await fail(thief, name, LOGIN.throttle_free_failures - 1)
    await throttle.check(thief, name)


@pytest.mark.anyio
async def test_d3_a_device_cookie_counts_only_for_its_own_username_and_while_valid(
    services: Any, clock: Clock, tmp_path: Path
) -> None:
    name, other = new_username(), new_username()
    device = signed_in(from_address(services, new_address()), name)
    assert throttle.device_nonce(from_address(services, new_address(), device), name)
    assert throttle.device_nonce(from_address(services, new_address(), device), other) is None

    key_id, nonce, issued, mac = device.split(".")
    tampered = [
        f"{key_id}.{nonce}.{int(issued) + 1}.{mac}",
        f"{key_id}.{nonce[::-1]}.{issued}.{mac}",
        f"{key_id}.{nonce}.{issued}.{mac[::-1]}",
        f"{'0' * len(key_id)}.{nonce}.{issued}.{mac}",
        "garbage",
        device + "x" * 5000,
    ]
    for forged in tampered:
        assert throttle.device_nonce(from_address(services, new_address(), forged), name) is None

    # Another bridge's keyring does not vouch for it.
    foreign = SimpleNamespace(**{**vars(services), "keys": KeyStore.load_or_create(tmp_path)})
    assert throttle.device_nonce(from_address(foreign, new_address(), device), name) is None

    clock.now += LOGIN.device_cookie_seconds
    assert throttle.device_nonce(from_address(services, new_address(), device), name) is None


@pytest.mark.anyio
async def test_d3_device_cookies_survive_a_keyring_rotation(
    services: Any, clock: Clock, tmp_path: Path
) -> None:
    keys = KeyStore.load_or_create(tmp_path)
    mine = SimpleNamespace(**{**vars(services), "keys": keys})
    name = new_username()
    device = signed_in(from_address(mine, new_address()), name)
    keys.rotate_keyring()
    assert throttle.device_nonce(from_address(mine, new_address(), device), name)
    renewed = signed_in(from_address(mine, new_address(), device), name)
    assert renewed.startswith(keys.keyring_ids()[-1] + ".")


def test_d3_one_browser_keeps_device_cookies_for_a_few_usernames(services: Any) -> None:
    address = new_address()
    names = [new_username() for _ in range(throttle.MAX_DEVICES_PER_BROWSER + 1)]
    device = None
    for name in names:
        device = signed_in(from_address(services, address, device), name)
    again = signed_in(from_address(services, address, device), names[-1])
    assert again.count("~") == device.count("~") == throttle.MAX_DEVICES_PER_BROWSER - 1
    browser = from_address(services, address, again)
    assert throttle.device_nonce(browser, names[0]) is None  # the oldest made room
    assert all(throttle.device_nonce(browser, name) for name in names[1:])
    # Signing in again replaced that username's cookie with a new one.
    assert throttle.device_nonce(browser, names[-1]) != throttle.device_nonce(
        from_address(services, address, device), names[-1]
    )
