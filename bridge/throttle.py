"""Sign-in throttling per username and per client address (SECURITY D3).

After ``[login] throttle_free_failures`` failed sign-ins for a key within
:data:`WINDOW_SECONDS`, every further attempt must wait
``throttle_base_seconds * 2 ** (failures - free)`` seconds (at most
``throttle_max_seconds``) after that key's last failure; an attempt that comes
earlier is refused with 429 before iMIS is asked. There is never a hard
lockout: the delay is capped, so a member locked out by an attacker's
guessing waits at most a minute. A successful sign-in clears the username's
count (never the address's, or an attacker could reset it with their own
account). Counters live in the database through the Store, so every bridge
process sees the same ones. This module decides *whether* to wait; it does
not render pages, read forms or talk to iMIS.
"""

from __future__ import annotations

import math
import time
from typing import Any

from starlette.requests import Request

from bridge.errors import TooManyRequests
from bridge.settings import LoginSettings

#: Failures older than this (since a key's last failure) are forgotten.
WINDOW_SECONDS = 3600
#: Many members can share one address (an office, a campus, a mobile carrier's
#: NAT), so an address gets this many times a username's free failures.
ADDRESS_FREE_FACTOR = 5
MESSAGE = "Too many unsuccessful sign-in attempts. Please wait {seconds} and try again."


def delay_seconds(failures: int, free: int, login: LoginSettings) -> float:
    """How long after its last failure a key with ``failures`` must wait (0: no wait)."""
    if failures == 0 or failures < free:
        return 0.0
    # 2**n overflows floats for absurd counts; the cap is reached long before.
    exponent = min(failures - free, 64)
    return float(min(login.throttle_base_seconds * 2.0**exponent, login.throttle_max_seconds))


def client_address(request: Request) -> str:
    """The caller's address as uvicorn reports it (trusted proxies already applied)."""
    return request.client.host if request.client else "unknown"


def _keys(request: Request, username: str) -> list[tuple[str, int]]:
    """(key, free failures) pairs; usernames are case-insensitive, as in iMIS."""
    free = request.app.state.services.settings.login.throttle_free_failures
    return [
        (f"user:{username.strip().casefold()}", free),
        (f"addr:{client_address(request)}", free * ADDRESS_FREE_FACTOR),
    ]


def _services(request: Request) -> Any:
    return request.app.state.services


def _wording(seconds: int) -> str:
    return "a second" if seconds == 1 else f"{seconds} seconds"


async def check(request: Request, username: str) -> None:
    """Raise :class:`TooManyRequests` (with ``retry_after``) if this attempt must wait."""
    services = _services(request)
    login: LoginSettings = services.settings.login
    now = int(time.time())

    def wait() -> int:
        longest = 0
        for key, free in _keys(request, username):
            failures = services.store.throttle_state([key], now=now, window_seconds=WINDOW_SECONDS)
            delay = math.ceil(delay_seconds(failures, free, login))
            # A failure within the last ``delay`` seconds means the key must still wait.
            # The Store tells counts, not times, so the wait announced is the whole
            # delay: an upper bound that is always enough.
            if delay and services.store.throttle_state([key], now=now, window_seconds=delay):
                longest = max(longest, delay)
        return longest

    seconds = await services.db.run(wait)
    if seconds:
        raise TooManyRequests(
            MESSAGE.format(seconds=_wording(seconds)),
            retry_after=seconds,
            detail="sign-in throttled",
        )


async def record_failure(request: Request, username: str) -> None:
    """Count one failed sign-in against the username and the address."""
    services = _services(request)
    keys = [key for key, _ in _keys(request, username)]
    now = int(time.time())
    await services.db.run(
        lambda: services.store.record_failure(keys, now=now, window_seconds=WINDOW_SECONDS)
    )


async def clear(request: Request, username: str) -> None:
    """Forget the username's failures after a successful sign-in."""
    services = _services(request)
    key = _keys(request, username)[0][0]
    await services.db.run(services.store.clear_failures, [key])
