"""Sign-in throttling that slows guessers without locking the member out (SECURITY D3).

It follows OWASP's *device cookies* design. After a successful sign-in as a
username, the browser gets a signed **device cookie** for it (HMAC of the
casefolded username, a random nonce and the issue time, with a key derived from
the bridge's keyring; the username itself is not in the cookie). An attempt
that shows a valid device cookie for the username it tries is a *known device*:
it is throttled only on that device cookie's own failures. Any other attempt is
an *unknown device* and is throttled per (username, address), per address, and
per username (the username-wide limit applies to unknown devices only). So a
stranger guessing a member's password, however patiently and from wherever,
slows down other strangers but never the member's own browser.

Each limit is a key with a count of failures within :data:`WINDOW_SECONDS`:
after ``free`` failures, every further attempt must wait ``throttle_base_seconds
* 2 ** (failures - free)`` seconds (at most ``throttle_max_seconds``) after that
key's last failure; an earlier attempt is refused with 429 before iMIS is
asked. There is never a hard lockout: the delay is capped. A successful sign-in
clears the device cookie's and the (username, address) counts, never the
address's or the username-wide one (an attacker could otherwise reset them
with their own account or by waiting for the member). Counters live in the
database through the Store, so every bridge process sees the same ones. This
module decides *whether* to wait and issues device cookies; it does not render
pages, read forms or talk to iMIS.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import re
import secrets
import time

from starlette.requests import Request
from starlette.responses import Response

from bridge.addresses import address_key
from bridge.errors import TooManyRequests
from bridge.services import services
from bridge.settings import LoginSettings, Settings

#: Failures older than this (since a key's last failure) are forgotten.
WINDOW_SECONDS = 3600
#: Many members can share one address (an office, a campus, a mobile carrier's
#: NAT), so an address gets this many times a username's free failures.
ADDRESS_FREE_FACTOR = 5
#: The username-wide limit (unknown devices from any address) allows this many
#: times the free failures of one (username, address): a member may mistype on
#: a new phone and a new laptop before it starts; a guesser spread over many
#: addresses meets the exponential delay all the same.
USERNAME_FREE_FACTOR = 2
#: Device cookies one browser keeps (one per username, newest kept): enough for
#: a shared family computer, small enough to stay a short cookie.
MAX_DEVICES_PER_BROWSER = 5
#: A device cookie issued this far in the future (clock skew between processes) still counts.
CLOCK_SKEW_SECONDS = 300
MESSAGE = "Too many unsuccessful sign-in attempts. Please wait {seconds} and try again."
#: What the keyring-derived MAC key is for (see :meth:`bridge.keys.KeyStore.mac_keys`).
MAC_PURPOSE = "device cookie"

# One entry: keyring id . nonce . issued at . MAC (all URL-safe, no separators inside).
_ENTRY = re.compile(r"^([0-9a-f]{8,64})\.([A-Za-z0-9_-]{22})\.([0-9]{1,12})\.([A-Za-z0-9_-]{43})$")
_SEPARATOR = "~"
_MAX_COOKIE_CHARS = 4096


def delay_seconds(failures: int, free: int, login: LoginSettings) -> float:
    """How long after its last failure a key with ``failures`` must wait (0: no wait)."""
    if failures == 0 or failures < free:
        return 0.0
    # 2**n overflows floats for absurd counts; the cap is reached long before.
    exponent = min(failures - free, 64)
    return float(min(login.throttle_base_seconds * 2.0**exponent, login.throttle_max_seconds))


def client_address(request: Request) -> str:
    """The caller's address as a limit counts it (an IPv6 address counts as its /64),
    from what uvicorn reports (trusted proxies already applied)."""
    return address_key(request.client.host if request.client else None)


def device_cookie_name(settings: Settings) -> str:
    """``__Host-`` prefixed when the issuer is https, like the session cookie."""
    return "__Host-bridge-device" if settings.secure_cookies else "bridge-device"


def _fold(username: str) -> str:
    """Usernames are case-insensitive, as in iMIS."""
    return username.strip().casefold()


# --- device cookies ---------------------------------------------------------------


def _mac(key: bytes, username: str, nonce: str, issued: int) -> str:
    # Length-prefixed: no username/nonce split can be read two ways.
    message = f"{len(username)}:{username}|{nonce}|{issued}".encode()
    digest = hmac.new(key, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _entries(request: Request) -> list[str]:
    """The well-formed entries of this browser's device cookie, oldest first."""
    raw = request.cookies.get(device_cookie_name(services(request).settings), "")
    if not raw or len(raw) > _MAX_COOKIE_CHARS:
        return []
    parts = raw.split(_SEPARATOR)[-MAX_DEVICES_PER_BROWSER:]
    return [part for part in parts if _ENTRY.match(part)]


def _entry_for(entry: str, username: str, request: Request, now: int) -> str | None:
    """The nonce of ``entry`` if it is a live device cookie for ``username``, else None."""
    found = _ENTRY.match(entry)
    if found is None:
        return None
    key_id, nonce, issued_text, mac = found.groups()
    known = services(request)
    issued = int(issued_text)
    if not now - known.settings.login.device_cookie_seconds < issued <= now + CLOCK_SKEW_SECONDS:
        return None
    keys = dict(known.keys.mac_keys(MAC_PURPOSE))
    key = keys.get(key_id)
    if key is None:
        return None
    expected = _mac(key, _fold(username), nonce, issued)
    return nonce if hmac.compare_digest(expected.encode(), mac.encode()) else None


def device_nonce(request: Request, username: str) -> str | None:
    """The nonce of this browser's valid device cookie for ``username``, if it has one."""
    now = int(time.time())
    for entry in reversed(_entries(request)):
        nonce = _entry_for(entry, username, request, now)
        if nonce is not None:
            return nonce
    return None


def remember_device(request: Request, response: Response, username: str) -> None:
    """After a successful sign-in: give this browser a new device cookie for ``username``.

    Any earlier one for the same username is replaced; those for other
    usernames are kept, the newest :data:`MAX_DEVICES_PER_BROWSER` in all.
    """
    known = services(request)
    settings: Settings = known.settings
    now = int(time.time())
    key_id, key = known.keys.mac_keys(MAC_PURPOSE)[0]
    nonce = secrets.token_urlsafe(16)
    mine = f"{key_id}.{nonce}.{now}.{_mac(key, _fold(username), nonce, now)}"
    others = [e for e in _entries(request) if _entry_for(e, username, request, now) is None]
    kept = [*others, mine][-MAX_DEVICES_PER_BROWSER:]
    response.set_cookie(
        device_cookie_name(settings),
        _SEPARATOR.join(kept),
        max_age=settings.login.device_cookie_seconds,
        path="/",
        secure=settings.secure_cookies,
        httponly=True,
        samesite="lax",
    )


# --- limits -------------------------------------------------------------------------


def _keys(request: Request, username: str) -> tuple[str, list[tuple[str, int]]]:
    """Which limits apply to this attempt: (name for the log, [(key, free failures)])."""
    free = services(request).settings.login.throttle_free_failures
    nonce = device_nonce(request, username)
    if nonce is not None:
        return "known device", [(f"device:{nonce}", free)]
    name, address = _fold(username), client_address(request)
    return "unknown device", [
        # The address first: it holds no space, so the key reads one way only.
        (f"user-addr:{address} {name}", free),
        (f"addr:{address}", free * ADDRESS_FREE_FACTOR),
        (f"user:{name}", free * USERNAME_FREE_FACTOR),
    ]


def _wording(seconds: int) -> str:
    return "a second" if seconds == 1 else f"{seconds} seconds"


async def check(request: Request, username: str) -> None:
    """Raise :class:`TooManyRequests` (with ``retry_after``) if this attempt must wait."""
    known = services(request)
    login: LoginSettings = known.settings.login
    now = int(time.time())
    device, keys = _keys(request, username)

    def wait() -> int:
        longest = 0
        for key, free in keys:
            found = known.store.failures_of(key)
            if found is None or found[1] <= now - WINDOW_SECONDS:
                continue  # none, or none within the window: they count no more
            failures, last_failure = found
            delay = math.ceil(delay_seconds(failures, free, login))
            # A failure within the last ``delay`` seconds means the key must still wait.
            # The wait announced is the whole delay: an upper bound that is always enough.
            if delay and last_failure > now - delay:
                longest = max(longest, delay)
        return longest

    seconds = await known.db.run(wait)
    if seconds:
        raise TooManyRequests(
            MESSAGE.format(seconds=_wording(seconds)),
            retry_after=seconds,
            detail=f"sign-in throttled ({device})",
        )


async def record_failure(request: Request, username: str) -> None:
    """Count one failed sign-in against every limit that applies to this attempt."""
    known = services(request)
    keys = [key for key, _ in _keys(request, username)[1]]
    now = int(time.time())
    await known.db.run(
        lambda: known.store.record_failure(keys, now=now, window_seconds=WINDOW_SECONDS)
    )


async def clear(request: Request, username: str) -> None:
    """After a successful sign-in: forget this device's (or username-and-address's) failures."""
    known = services(request)
    keys = [
        key for key, _ in _keys(request, username)[1] if key.startswith(("device:", "user-addr:"))
    ]
    await known.db.run(known.store.clear_failures, keys)
