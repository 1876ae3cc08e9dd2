"""``python -m bench.soak``: minutes of mixed load against a real ``bridge serve``; fails on a
5xx or on growth.

The orchestrator starts the iMIS simulator and ``bridge serve`` as processes of
their own (the machinery of :mod:`bench.run`), with lifetimes short enough that
the scheduled purge has work (sessions of two minutes, a purge about every 20
seconds), then runs the *driver* (``python -m bench.soak --drive SPEC``, a
separate process on the hand-written HTTP/1.1 client of :mod:`bench.load`) for
``--minutes``. Each of ``--connections`` closed-loop connections keeps its own
browser (cookies, device cookie), refresh chain and access token, and draws
its next unit from a fixed mix:

- S1: the Zendesk remote login with the session cookie (200 with the ``jwt`` field);
- S2: a code flow (authorize, token, userinfo), every other one with
  ``offline_access`` for the refresh chain;
- S3: a refresh rotation of the connection's chain;
- S6: introspection of the connection's newest access token;
- S4: a password sign-in through the iMIS simulator (GET the form, POST it), a
  returning browser with its device cookie; it renews the connection's session;
- bad input: a wrong password (401, or 429 once throttled), an unknown token
  to introspection (inactive), userinfo and refresh grants with unknown tokens,
  a wrong client secret, a replayed code, an unregistered redirect URI, an
  unknown Zendesk registration: each with the 4xx it must get.

Every answer is checked: a 5xx, any other status than the expected ones and a
transport error (reset, timeout) are counted apart. Meanwhile the orchestrator
samples every ``--sample-every`` seconds the RSS and open file descriptors of
the server's process tree, the database's size and row counts, and scrapes
``/metrics``. The verdict fails (exit 1) on any 5xx, unexpected status,
transport error, ERROR line in the bridge's log, or growth (see :func:`growth`).
The report is Markdown on standard output and JSON under ``bench/results/``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import re
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx

from bench import load
from bench.run import (
    CLIENT_ID,
    CLIENT_SECRET,
    FLOW_SCOPE,
    MB,
    PASSWORD,
    REDIRECT_URI,
    RESULTS,
    ROOT,
    USERNAME,
    ZENDESK_SLUG,
    Children,
    _raise_nofile,
    bridge_bin,
    db_upgrade,
    free_port,
    start_bridge,
    wait_ready,
    write_config,
)

#: A person of the simulator signed in with a wrong password (never the soak's own
#: USERNAME, whose returning browsers must not be slowed by it).
WRONG_USER = "bsmith"
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"

#: Lifetimes of the soak's bridge: short, so that sessions expire and the purge removes them
#: during the run. Codes, tokens and grants are kept a day after they expire by design
#: (CODE_KEEP_SECONDS, TOKEN_KEEP_SECONDS), so their rows grow for the whole soak.
SESSION_SECONDS = 120
SESSION_IDLE_SECONDS = 60
ACCESS_SECONDS = 60
PURGE_SECONDS = 20.0
TOML_TOP = f"""\
log_format = "json"
purge_interval_seconds = {PURGE_SECONDS}
"""
TOML_SECTIONS = f"""
[sessions]
lifetime_seconds = {SESSION_SECONDS}
idle_seconds = {SESSION_IDLE_SECONDS}

[tokens]
code_seconds = 30
access_token_seconds = {ACCESS_SECONDS}
id_token_seconds = {ACCESS_SECONDS}
refresh_token_seconds = 300

[login]
throttle_base_seconds = 0.25
throttle_max_seconds = 2.0
"""

#: The mix: how many of every 20 units are of each kind.
MIX = {"S1": 5, "S2": 4, "S3": 4, "S6": 4, "S4": 1, "bad": 2}
BAD_KINDS = (
    "wrong password",
    "unknown token to introspect",
    "unknown bearer to userinfo",
    "unknown refresh token",
    "wrong client secret",
    "replayed code",
    "unregistered redirect_uri",
    "unknown Zendesk registration",
)
LABELS = {
    "S1": "S1 Zendesk remote login",
    "S2": "S2 code flow",
    "S3": "S3 refresh rotation",
    "S6": "S6 introspection",
    "S4": "S4 password sign-in",
}


def progress(message: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- the driver (its own process) -----------------------------------------------------------


def _code_exchange(code: str, verifier: str) -> bytes:
    """The form of a code redemption at /token (the client authenticates apart)."""
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT_URI,
        "code_verifier": verifier,
    }
    return urlencode(form).encode()


@dataclass
class Tally:
    """What one kind of unit got."""

    units: int = 0
    requests: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    server_errors: int = 0
    unexpected: int = 0
    transport: int = 0
    notes: Counter[str] = field(default_factory=Counter)


class Problem(Exception):
    """A unit ended on an answer it must not get (already counted)."""


class Driver:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.tallies: dict[str, Tally] = {}
        self.samples: list[str] = []
        self.stopped = False

    def tally(self, kind: str) -> Tally:
        return self.tallies.setdefault(kind, Tally())

    def sample(self, text: str) -> None:
        if len(self.samples) < 20:
            self.samples.append(text[:300])

    def check(self, kind: str, what: str, reply: load.Reply, expected: tuple[int, ...]) -> None:
        tally = self.tally(kind)
        tally.requests += 1
        tally.statuses[reply.status] += 1
        if reply.status >= 500:
            tally.server_errors += 1
            self.sample(f"{kind}: {what}: {reply.status} {reply.body[:200]!r}")
            raise Problem
        if reply.status not in expected:
            tally.unexpected += 1
            self.sample(
                f"{kind}: {what}: {reply.status} (expected {expected}) {reply.body[:200]!r}"
            )
            raise Problem

    def wrong(self, kind: str, text: str) -> None:
        """A right status with a wrong answer (no code, an inactive young token...)."""
        self.tally(kind).unexpected += 1
        self.sample(f"{kind}: {text}")
        raise Problem


class Browser:
    """One connection's browser, client and tokens."""

    def __init__(self, driver: Driver, slot: int) -> None:
        spec = driver.spec
        self.d = driver
        self.base = spec["base_url"]
        host, port, _ = load.split_url(self.base)
        self.conn = load.Connection(host, port)
        self.timeout = spec["request_timeout"]
        self.rng = random.Random(spec["seed"] * 1000 + slot)
        self.flows = slot
        self.bad_turn = slot
        self.jar: dict[str, str] = {}
        self.signed_in_at = 0.0
        self.refresh: str | None = None
        self.refresh_grant = ""
        self.access: str | None = None
        self.access_at = 0.0
        self.access_grant = ""
        self.spent: tuple[str, str] | None = None  # a redeemed code and its verifier
        self.auth = load.basic_auth(CLIENT_ID, CLIENT_SECRET)
        self.deck: list[str] = []

    async def send(
        self, method: bytes, path: str, headers: bytes = b"", body: bytes = b""
    ) -> load.Reply:
        try:
            return await asyncio.wait_for(
                self.conn.request(method, path, headers, body), self.timeout
            )
        except BaseException:
            self.conn.close()
            raise

    def cookie(self, *names: str) -> bytes:
        pairs = [f"{k}={v}" for k, v in self.jar.items() if not names or k in names]
        return f"Cookie: {'; '.join(pairs)}\r\n".encode() if pairs else b""

    def next_kind(self) -> str:
        if time.monotonic() - self.signed_in_at > self.d.spec["renew_session_after"]:
            return "S4"
        if not self.deck:
            self.deck = [kind for kind, n in MIX.items() for _ in range(n)]
            self.rng.shuffle(self.deck)
        return self.deck.pop()

    # the units; each returns the kind it ran (S3 and S6 run an S2 when they have no token)

    async def s4(self, kind: str = "S4") -> str:
        """A returning browser: its device cookie only, a fresh CSRF cookie and session."""
        device = {k: v for k, v in self.jar.items() if k.endswith("bridge-device")}
        page = await self.send(b"GET", "/login", self.cookie(*device))
        self.d.check(kind, "GET /login", page, (200,))
        hidden = {k.decode(): v.decode() for k, v in load._HIDDEN.findall(page.body)}
        jar = {**device, **page.cookies()}
        cookie = "; ".join(f"{k}={v}" for k, v in jar.items())
        body = urlencode({**hidden, "username": USERNAME, "password": PASSWORD}).encode()
        reply = await self.send(
            b"POST", "/login", load.FORM + f"Cookie: {cookie}\r\n".encode(), body
        )
        self.d.check(kind, "POST /login", reply, (303,))
        self.jar = {**jar, **reply.cookies()}
        self.signed_in_at = time.monotonic()
        return kind

    async def s1(self) -> str:
        reply = await self.send(b"GET", f"/zendesk/{ZENDESK_SLUG}", self.cookie())
        self.d.check("S1", "GET /zendesk", reply, (200,))
        if b'name="jwt"' not in reply.body:
            self.d.wrong("S1", f"no jwt field: {reply.body[:200]!r}")
        return "S1"

    async def s2(self) -> str:
        self.flows += 1
        offline = self.flows % 2 == 0
        verifier, challenge = load.pkce_pair()
        state = secrets.token_urlsafe(8)
        query = urlencode(
            {
                "response_type": "code",
                "client_id": CLIENT_ID,
                "redirect_uri": REDIRECT_URI,
                "scope": FLOW_SCOPE + (" offline_access" if offline else ""),
                "state": state,
                "nonce": secrets.token_urlsafe(8),
                "code_challenge": challenge,
                "code_challenge_method": "S256",
            }
        )
        reply = await self.send(b"GET", f"/authorize?{query}", self.cookie())
        self.d.check("S2", "authorize", reply, (302, 303))
        location = reply.header("location") or ""
        got = parse_qs(urlsplit(location).query)
        code = got.get("code", [""])[0]
        if not location.startswith(REDIRECT_URI) or not code or got.get("state") != [state]:
            self.d.wrong("S2", f"authorize sent to {location[:200]}")
        body = _code_exchange(code, verifier)
        reply = await self.send(b"POST", "/token", self.auth + load.FORM, body)
        self.d.check("S2", "token", reply, (200,))
        tokens = json.loads(reply.body)
        if not tokens.get("access_token") or not tokens.get("id_token"):
            self.d.wrong("S2", f"token answer without tokens: {sorted(tokens)}")
        if offline:
            if not tokens.get("refresh_token"):
                self.d.wrong("S2", "offline_access without a refresh token")
            self.refresh, self.refresh_grant = tokens["refresh_token"], code
        else:
            self.spent = (code, verifier)
        self.access, self.access_at, self.access_grant = (
            tokens["access_token"],
            time.monotonic(),
            code,
        )
        bearer = f"Authorization: Bearer {tokens['access_token']}\r\n".encode()
        reply = await self.send(b"GET", "/userinfo", bearer)
        self.d.check("S2", "userinfo", reply, (200,))
        return "S2"

    async def s3(self) -> str:
        if self.refresh is None:
            return await self.s2()
        body = urlencode({"grant_type": "refresh_token", "refresh_token": self.refresh}).encode()
        token, self.refresh = self.refresh, None  # a failed rotation starts a new chain
        reply = await self.send(b"POST", "/token", self.auth + load.FORM, body)
        self.d.check("S3", "refresh", reply, (200,))
        tokens = json.loads(reply.body)
        if not tokens.get("refresh_token") or tokens["refresh_token"] == token:
            self.d.wrong("S3", "no new refresh token")
        self.refresh = tokens["refresh_token"]
        self.access, self.access_at, self.access_grant = (
            tokens["access_token"],
            time.monotonic(),
            self.refresh_grant,
        )
        return "S3"

    async def s6(self) -> str:
        if self.access is None:
            return await self.s2()
        body = urlencode({"token": self.access}).encode()
        reply = await self.send(b"POST", "/introspect", self.auth + load.FORM, body)
        self.d.check("S6", "introspect", reply, (200,))
        active = json.loads(reply.body).get("active")
        self.d.tally("S6").notes[f"active: {active}"] += 1
        young = time.monotonic() - self.access_at < ACCESS_SECONDS - 5
        if active is not True and young:
            self.d.wrong("S6", f"a {time.monotonic() - self.access_at:.0f} s old token inactive")
        return "S6"

    def bad_kind(self) -> str:
        return f"bad: {BAD_KINDS[self.bad_turn % len(BAD_KINDS)]}"

    async def bad(self) -> str:
        self.bad_turn += 1
        kind = self.bad_kind()
        what = kind.removeprefix("bad: ")
        junk = secrets.token_urlsafe(32)
        form = self.auth + load.FORM
        if what == "wrong password":
            page = await self.send(b"GET", "/login")
            self.d.check(kind, "GET /login", page, (200,))
            hidden = {k.decode(): v.decode() for k, v in load._HIDDEN.findall(page.body)}
            cookie = "; ".join(f"{k}={v}" for k, v in page.cookies().items())
            body = urlencode({**hidden, "username": WRONG_USER, "password": junk}).encode()
            reply = await self.send(
                b"POST", "/login", load.FORM + f"Cookie: {cookie}\r\n".encode(), body
            )
            self.d.check(kind, "POST /login", reply, (401, 429))
        elif what == "unknown token to introspect":
            reply = await self.send(
                b"POST", "/introspect", form, urlencode({"token": junk}).encode()
            )
            self.d.check(kind, "introspect", reply, (200,))
            if json.loads(reply.body).get("active") is not False:
                self.d.wrong(kind, f"an unknown token is not inactive: {reply.body[:100]!r}")
            self.d.tally(kind).notes["active: False"] += 1
        elif what == "unknown bearer to userinfo":
            reply = await self.send(
                b"GET", "/userinfo", f"Authorization: Bearer {junk}\r\n".encode()
            )
            self.d.check(kind, "userinfo", reply, (401,))
        elif what == "unknown refresh token":
            body = urlencode({"grant_type": "refresh_token", "refresh_token": junk}).encode()
            reply = await self.send(b"POST", "/token", form, body)
            self.d.check(kind, "token", reply, (400,))
        elif what == "wrong client secret":
            body = urlencode(
                {"grant_type": "authorization_code", "code": junk, "redirect_uri": REDIRECT_URI}
            ).encode()
            auth = load.basic_auth(CLIENT_ID, junk)
            reply = await self.send(b"POST", "/token", auth + load.FORM, body)
            self.d.check(kind, "token", reply, (401,))
        elif what == "replayed code":
            code, verifier = self.spent or (junk, junk)
            self.spent = None
            if self.access_grant == code:
                self.access = None  # a replay revokes what the code gave (SECURITY B2)
            reply = await self.send(b"POST", "/token", form, _code_exchange(code, verifier))
            self.d.check(kind, "token", reply, (400,))
        elif what == "unregistered redirect_uri":
            query = urlencode(
                {
                    "response_type": "code",
                    "client_id": CLIENT_ID,
                    "redirect_uri": "https://attacker.example/callback",
                    "scope": "openid",
                    "state": junk[:8],
                }
            )
            reply = await self.send(b"GET", f"/authorize?{query}", self.cookie())
            self.d.check(kind, "authorize", reply, (400,))
        else:
            reply = await self.send(b"GET", "/zendesk/no-such-registration", self.cookie())
            self.d.check(kind, "zendesk", reply, (404,))
        return kind

    async def unit(self, kind: str) -> str:
        """Run one unit of ``kind``; the kind it ran (S3 and S6 need an S2 first)."""
        units = {"S4": self.s4, "S1": self.s1, "S2": self.s2, "S3": self.s3, "S6": self.s6}
        return await units.get(kind, self.bad)()


async def connection_loop(driver: Driver, slot: int) -> None:
    browser = Browser(driver, slot)
    first = True
    try:
        while not driver.stopped:
            kind = "S4" if first else browser.next_kind()
            first = False
            try:
                ran = await browser.unit(kind)
            except Problem:
                await asyncio.sleep(0.05)
                continue
            except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
                label = browser.bad_kind() if kind == "bad" else kind
                driver.tally(label).transport += 1
                driver.sample(f"{label}: {type(exc).__name__}: {exc}")
                await asyncio.sleep(0.05)
                continue
            driver.tally(ran).units += 1
    finally:
        browser.conn.close()


async def drive(spec: dict[str, Any]) -> dict[str, Any]:
    driver = Driver(spec)
    cpu0 = time.process_time()
    started = time.monotonic()
    tasks = [asyncio.create_task(connection_loop(driver, i)) for i in range(spec["connections"])]
    await asyncio.sleep(spec["seconds"])
    driver.stopped = True
    _, pending = await asyncio.wait(tasks, timeout=spec["request_timeout"] + 5)
    for task in pending:
        task.cancel()
    return {
        "seconds": time.monotonic() - started,
        "driver_cpu_seconds": time.process_time() - cpu0,
        "kinds": {
            kind: {
                "units": t.units,
                "requests": t.requests,
                "statuses": {str(k): v for k, v in sorted(t.statuses.items())},
                "server_errors": t.server_errors,
                "unexpected": t.unexpected,
                "transport": t.transport,
                "notes": dict(t.notes),
            }
            for kind, t in sorted(driver.tallies.items(), key=lambda kv: _order(kv[0]))
        },
        "problems": driver.samples,
    }


def _order(kind: str) -> tuple[int, str]:
    return (list(LABELS).index(kind) if kind in LABELS else len(LABELS), kind)


def drive_main(spec_file: str) -> int:
    spec = json.loads(Path(spec_file).read_text())
    load.raise_nofile()
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:
        runner = asyncio.run
    json.dump(runner(drive(spec)), sys.stdout)
    sys.stdout.write("\n")
    return 0


# --- growth ------------------------------------------------------------------------------


def slope_per_minute(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, value) points, per minute."""
    if len(points) < 2:
        return None
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if var == 0:
        return None
    return sum((t - mean_t) * (v - mean_v) for t, v in points) / var * 60


def growth(
    points: list[tuple[float, float]],
    *,
    tolerance: float,
    slope_tolerance: float | None,
    min_rise: float = 0.0,
) -> dict[str, Any]:
    """Whether a series (seconds, value) grows once warmed up.

    The first third is warm-up (caches fill, the allocator finds its arenas) and is
    ignored. Growth is the median of the last third minus the median of the middle
    third (medians: one odd sample moves neither), beyond ``tolerance``; or, when
    ``slope_tolerance`` is given, a least-squares slope over the second half beyond
    it (per minute) that adds up to more than ``min_rise`` over that half (a steep
    slope over a few seconds is warm-up, not a leak). Fewer than 6 points decide nothing.
    """
    n = len(points)
    if n < 6:
        return {
            "points": n,
            "tolerance": tolerance,
            "slope_tolerance": slope_tolerance,
            "min_rise": min_rise,
            "grows": None,
            "why": f"only {n} samples: too few to judge",
        }
    middle = [v for _, v in points[n // 3 : 2 * n // 3]]
    last = [v for _, v in points[2 * n // 3 :]]
    delta = median(last) - median(middle)
    half = points[n // 2 :]
    slope = slope_per_minute(half)
    rise = slope * (half[-1][0] - half[0][0]) / 60 if slope is not None else None
    reasons = []
    if delta > tolerance:
        reasons.append(f"last third {delta:+.1f} over the middle third (tolerance {tolerance:g})")
    if (
        slope_tolerance is not None
        and slope is not None
        and rise is not None
        and slope > slope_tolerance
        and rise > min_rise
    ):
        reasons.append(
            f"slope {slope:+.2f}/min over the second half, {rise:+.1f} in all "
            f"(tolerance {slope_tolerance:g}/min and {min_rise:g})"
        )
    return {
        "points": n,
        "middle_median": median(middle),
        "last_median": median(last),
        "delta": delta,
        "slope_per_minute": slope,
        "second_half_rise": rise,
        "min_rise": min_rise,
        "tolerance": tolerance,
        "slope_tolerance": slope_tolerance,
        "grows": bool(reasons),
        "why": "; ".join(reasons) or "flat",
    }


# --- sampling the server ------------------------------------------------------------------


def tree_rss_and_fds(pid: int) -> tuple[int, int, dict[int, int]]:
    """Total VmRSS (bytes) and open descriptors of ``pid``'s tree, and RSS per process."""
    per: dict[int, int] = {}
    fds = 0
    for each in load.descendants(pid):
        per[each] = load.rss_bytes(each)
        with contextlib.suppress(OSError):
            fds += len(os.listdir(f"/proc/{each}/fd"))
    return sum(per.values()), fds, per


class Database:
    """Size and row counts of the bridge's database, read beside the server."""

    def __init__(self, url: str, sqlite_path: Path | None) -> None:
        self.url = url
        self.sqlite_path = sqlite_path

    def read(self) -> tuple[int, dict[str, int]]:
        if self.sqlite_path is not None:
            size = sum(
                p.stat().st_size
                for p in (self.sqlite_path, Path(f"{self.sqlite_path}-wal"))
                if p.exists()
            )
            db = sqlite3.connect(f"file:{self.sqlite_path}?mode=ro", uri=True, timeout=5)
            try:
                return size, _row_counts(
                    db,
                    "SELECT name FROM sqlite_master WHERE type = 'table' "
                    "AND name NOT LIKE 'sqlite_%' AND name != 'alembic_version' ORDER BY name",
                )
            finally:
                db.close()
        import psycopg

        with psycopg.connect(self.url.replace("+psycopg", ""), autocommit=True) as conn:
            size = int(conn.execute("SELECT pg_database_size(current_database())").fetchone()[0])
            return size, _row_counts(
                conn,
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                "AND tablename != 'alembic_version' ORDER BY tablename",
            )


def _row_counts(connection: Any, tables_query: str) -> dict[str, int]:
    """The rows of each table that ``tables_query`` names, on a sqlite3 or psycopg
    connection (both execute SQL on the connection and iterate the result)."""
    names = [row[0] for row in connection.execute(tables_query)]
    return {
        name: int(connection.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0])
        for name in names
    }


@dataclass
class Sample:
    t: float
    rss: int
    fds: int
    per_process: dict[int, int]
    db_bytes: int | None
    rows: dict[str, int]
    metrics_status: int | None


def take_sample(t: float, pid: int, db: Database, url: str) -> Sample:
    rss, fds, per = tree_rss_and_fds(pid)
    size: int | None = None
    rows: dict[str, int] = {}
    try:
        size, rows = db.read()
    except Exception as exc:  # a busy database must not stop the soak; the report says so
        progress(f"database not read: {type(exc).__name__}: {exc}")
    status: int | None = None
    with contextlib.suppress(httpx.HTTPError):
        status = httpx.get(f"{url}/metrics", timeout=10).status_code
    return Sample(t, rss, fds, per, size, rows, status)


# --- the orchestrator ---------------------------------------------------------------------


def pg_database(name: str, *, create: bool) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if create:
            conn.execute(f'CREATE DATABASE "{name}"')


def log_findings(log: Path) -> dict[str, Any]:
    """ERROR lines and tracebacks in the bridge's log, and what the purge removed."""
    errors = 0
    samples: list[str] = []
    purges = 0
    shutdowns = 0
    removed: Counter[str] = Counter()
    with contextlib.suppress(OSError), log.open(errors="replace") as fh:
        for line in fh:
            level = ""
            message = line
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    record = json.loads(line)
                    level = str(record.get("level", ""))
                    message = str(record.get("message", ""))
            if level in ("ERROR", "CRITICAL") or (not level and "Traceback" in line):
                errors += 1
                if len(samples) < 5:
                    samples.append(line.strip()[:400])
            if "Application shutdown complete" in message:
                shutdowns += 1
            if "purged expired rows" in message:
                purges += 1
                for kind, count in re.findall(r"([a-z][a-z -]*): (\d+)", message.split(":", 1)[1]):
                    removed[kind.strip()] += int(count)
    return {
        "error_lines": errors,
        "error_samples": samples,
        "purges_logged": purges,
        "purged": dict(removed),
        "graceful_shutdowns": shutdowns,
    }


def run_soak(args: argparse.Namespace, folder: Path, children: Children) -> dict[str, Any]:
    seconds = args.minutes * 60
    imis_port = free_port()
    port = free_port()
    # The simulator starts while the bridge does (the bridge asks iMIS nothing until a sign-in).
    sim_log = folder / "imis.log"
    simulator = children.start(
        [bridge_bin(), "imis-simulator", "--port", str(imis_port)],
        log=sim_log,
    )
    pg_name = f"soak_{os.getpid()}"
    if args.database == "postgresql":
        pg_database(pg_name, create=True)
        database_url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{pg_name}"
    else:
        database_url = "sqlite:///bridge.db"
    config = write_config(
        folder / "config",
        port=port,
        imis_port=imis_port,
        database_url=database_url,
        log_level=args.log_level,
        top=TOML_TOP,
        sections=TOML_SECTIONS,
    )
    try:
        if args.database == "postgresql":
            db_upgrade(config)
        bridge = start_bridge(children, config, port, args.workers)
        wait_ready(f"http://127.0.0.1:{imis_port}/_sim/stats", simulator, sim_log)
        progress(
            f"bridge on :{port} ({args.database}, {args.workers} worker(s)), iMIS simulator on "
            f":{imis_port}; {args.connections} connections for {args.minutes:g} min"
        )
        db = Database(database_url, config / "bridge.db" if args.database == "sqlite" else None)
        spec = {
            "base_url": bridge.url,
            "connections": args.connections,
            "seconds": seconds,
            "request_timeout": args.request_timeout,
            "seed": args.seed,
            "renew_session_after": SESSION_IDLE_SECONDS / 2,
        }
        spec_file = folder / "soak-spec.json"
        spec_file.write_text(json.dumps(spec))
        out_file = folder / "driver.json"
        started = time.monotonic()
        cpu0 = load.cpu_seconds(bridge.proc.pid)
        samples = [take_sample(0.0, bridge.proc.pid, db, bridge.url)]
        with out_file.open("wb") as out:
            driver = subprocess.Popen(
                [sys.executable, "-m", "bench.soak", "--drive", str(spec_file)],
                stdout=out,
                cwd=ROOT,
                start_new_session=True,
                preexec_fn=_raise_nofile,
            )
        children.adopt(driver)
        deadline = started + seconds + args.request_timeout + 60
        next_sample = started + args.sample_every
        next_note = started + 60
        while driver.poll() is None:
            if time.monotonic() > deadline:
                children.stop(driver)
                raise RuntimeError("the driver did not finish in time")
            if bridge.proc.poll() is not None:
                raise RuntimeError(
                    f"bridge serve exited ({bridge.proc.returncode}) during the soak"
                )
            now = time.monotonic()
            if now >= next_sample:
                samples.append(take_sample(now - started, bridge.proc.pid, db, bridge.url))
                next_sample += args.sample_every
            if now >= next_note:
                last = samples[-1]
                progress(
                    f"{(now - started) / 60:.0f} min: RSS {last.rss / MB:.1f} MB, "
                    f"{last.fds} fds, load {os.getloadavg()[0]:.2f}"
                )
                next_note += 60
            time.sleep(min(0.5, max(0.0, next_sample - time.monotonic())))
        if driver.returncode != 0:
            raise RuntimeError(f"the driver failed ({driver.returncode})")
        samples.append(take_sample(time.monotonic() - started, bridge.proc.pid, db, bridge.url))
        result = json.loads(out_file.read_text())
        result["server_cpu_seconds"] = load.cpu_seconds(bridge.proc.pid) - cpu0
        children.stop(bridge.proc, timeout=15)
        result["bridge_exit_code"] = bridge.proc.returncode
        result["log"] = log_findings(bridge.log)
    finally:
        if args.database == "postgresql":
            with contextlib.suppress(Exception):
                pg_database(pg_name, create=False)
    result["series"] = samples
    return result


# --- the verdict and the report ------------------------------------------------------------


def judge(args: argparse.Namespace, result: dict[str, Any]) -> dict[str, Any]:
    kinds = result["kinds"]
    samples: list[Sample] = result["series"]
    total = {
        key: sum(k[key] for k in kinds.values())
        for key in ("units", "requests", "server_errors", "unexpected", "transport")
    }
    rss = growth(
        [(s.t, s.rss / MB) for s in samples],
        tolerance=args.rss_tolerance_mb * args.workers,
        slope_tolerance=args.rss_slope_mb_min * args.workers,
        min_rise=args.rss_min_rise_mb * args.workers,
    )
    fds = growth(
        [(s.t, float(s.fds)) for s in samples], tolerance=args.fd_tolerance, slope_tolerance=None
    )
    failures = []
    if total["server_errors"]:
        failures.append(f"{total['server_errors']} 5xx")
    if total["unexpected"]:
        failures.append(f"{total['unexpected']} unexpected answers")
    if total["transport"]:
        failures.append(f"{total['transport']} transport errors")
    if result["log"]["error_lines"]:
        failures.append(f"{result['log']['error_lines']} ERROR lines in the bridge's log")
    if rss["grows"]:
        failures.append(f"RSS grows: {rss['why']} MB")
    if fds["grows"]:
        failures.append(f"open descriptors grow: {fds['why']}")
    if result["log"]["graceful_shutdowns"] < args.workers:
        failures.append("no graceful shutdown on SIGTERM ('Application shutdown complete')")
    if not total["units"]:
        failures.append("no unit completed")
    return {
        "passed": not failures,
        "failures": failures,
        "total": total,
        "rss_growth": rss,
        "fd_growth": fds,
    }


def _statuses(statuses: dict[str, int]) -> str:
    return ", ".join(f"{k}×{v:,}" for k, v in statuses.items()) or "–"


def report(args: argparse.Namespace, result: dict[str, Any], verdict: dict[str, Any]) -> str:
    samples: list[Sample] = result["series"]
    total = verdict["total"]
    rss, fds = verdict["rss_growth"], verdict["fd_growth"]
    storage = "SQLite" if args.database == "sqlite" else "PostgreSQL"
    seconds = result["seconds"]
    word = "PASS" if verdict["passed"] else "FAIL"
    signalled = result["bridge_exit_code"] == -signal.SIGTERM
    graceful = (
        "a graceful shutdown"
        if result["log"]["graceful_shutdowns"] >= args.workers
        else "**no graceful shutdown**"
    )
    lines = [
        f"## Soak: {args.minutes:g} min of mixed load, `bridge serve --workers {args.workers}` "
        f"on {storage}: **{word}**",
        "",
        f"{total['units']:,} units, {total['requests']:,} requests in {seconds:.0f} s "
        f"({total['requests'] / seconds:,.0f} req/s) over {args.connections} connections; "
        f"**{total['server_errors']} 5xx**, {total['unexpected']} unexpected answers, "
        f"{total['transport']} transport errors; {result['log']['error_lines']} ERROR lines in "
        f"the bridge's log; server CPU {result['server_cpu_seconds']:.0f} s "
        f"({result['server_cpu_seconds'] / seconds:.0%} of a core); on SIGTERM "
        f"{graceful} (exit code {result['bridge_exit_code']}"
        f"{': uvicorn raises the signal again once shut down' if signalled else ''}).",
        "",
        "| kind | units | requests | statuses | 5xx | unexpected | transport errors |",
        "|---|---:|---:|---|---:|---:|---:|",
    ]
    for kind, k in result["kinds"].items():
        notes = "; " + ", ".join(f"{n} ×{c:,}" for n, c in k["notes"].items()) if k["notes"] else ""
        lines.append(
            f"| {LABELS.get(kind, kind)} | {k['units']:,} | {k['requests']:,} "
            f"| {_statuses(k['statuses'])}{notes} | {k['server_errors']} | {k['unexpected']} "
            f"| {k['transport']} |"
        )
    lines.append(
        f"| **total** | {total['units']:,} | {total['requests']:,} | | "
        f"**{total['server_errors']}** | {total['unexpected']} | {total['transport']} |"
    )
    if result["problems"]:
        lines += ["", "Problems (first ones):", ""]
        lines += [f"- `{s}`" for s in result["problems"][:10]]
    if result["log"]["error_samples"]:
        lines += ["", "ERROR lines of the bridge's log (first ones):", ""]
        lines += [f"- `{s[:300]}`" for s in result["log"]["error_samples"]]

    def fmt(value: float | None, unit: str = "") -> str:
        return "–" if value is None else f"{value:+.2f}{unit}"

    lines += [
        "",
        f"**Growth** (first third is warm-up; median of the last third minus median of the "
        f"middle third; least-squares slope over the second half): "
        f"RSS {fmt(rss.get('delta'), ' MB')} (tolerance {rss.get('tolerance', 0):g} MB), "
        f"slope {fmt(rss.get('slope_per_minute'), ' MB/min')} "
        f"(tolerance {rss.get('slope_tolerance', 0):g} MB/min when it adds up to more than "
        f"{rss.get('min_rise', 0):g} MB): {rss['why']}; open descriptors "
        f"{fmt(fds.get('delta'))} (tolerance {fds.get('tolerance', 0):g}): {fds['why']}.",
        "",
    ]
    tables = sorted({name for s in samples for name in s.rows})
    shown = ("browser_sessions", "authorization_codes", "tokens", "grants", "login_throttle")
    columns = [t for t in shown if t in tables]
    step = max(1, round(len(samples) / 20))
    picked = samples[::step]
    if picked[-1] is not samples[-1]:
        picked.append(samples[-1])
    lines += [
        f"Server process tree every {args.sample_every:g} s "
        f"({'every sample' if step == 1 else f'one sample in {step}'} shown; all in the JSON). "
        "Rows: what the tables hold; codes and tokens are kept a day after they expire, so "
        "they grow; sessions are purged.",
        "",
        "| t | RSS MB | fds | database MB | " + " | ".join(columns) + " | /metrics |",
        "|---:|---:|---:|---:|" + "---:|" * len(columns) + "---|",
    ]
    for s in picked:
        db_mb = "–" if s.db_bytes is None else f"{s.db_bytes / MB:.1f}"
        lines.append(
            f"| {s.t:.0f} s | {s.rss / MB:.1f} | {s.fds} | {db_mb} | "
            + " | ".join(f"{s.rows.get(c, 0):,}" for c in columns)
            + f" | {s.metrics_status or '–'} |"
        )
    log = result["log"]
    sign_ins = result["kinds"].get("S4", {}).get("units", 0)
    purged = ", ".join(f"{k} {v:,}" for k, v in log["purged"].items() if v) or "nothing"
    lines += [
        "",
        f"**Housekeeping**: sessions live {SESSION_SECONDS} s ({SESSION_IDLE_SECONDS} s idle), "
        f"access and ID tokens {ACCESS_SECONDS} s, codes 30 s, refresh tokens 300 s, purge about "
        f"every {PURGE_SECONDS:g} s. {log['purges_logged']} purges removed rows "
        f"(from the log{'' if args.log_level == 'info' else '; needs --log-level info'}): "
        f"{purged}; {sign_ins:,} sign-ins made sessions, "
        f"{samples[-1].rows.get('browser_sessions', 0):,} are left.",
        "",
        f"Machine: {os.cpu_count()} cores, Python {platform.python_version()}, load average "
        f"{result['load_average'][0]:.2f} at the end; load generator CPU "
        f"{result['driver_cpu_seconds']:.0f} s; bridge log level {args.log_level}.",
    ]
    if not verdict["passed"]:
        lines += ["", "**FAIL**: " + "; ".join(verdict["failures"]) + "."]
    else:
        lines += ["", "**PASS**: no 5xx, no unexpected answer, no growth."]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--log-level", choices=("warning", "info"), default="info")
    parser.add_argument("--sample-every", type=float, default=10.0, help="seconds")
    parser.add_argument("--rss-tolerance-mb", type=float, default=5.0, help="per worker")
    parser.add_argument("--rss-slope-mb-min", type=float, default=1.5, help="per worker")
    parser.add_argument(
        "--rss-min-rise-mb",
        type=float,
        default=2.0,
        help="per worker: a slope that adds up to less over the second half is noise",
    )
    parser.add_argument("--fd-tolerance", type=float, default=10.0)
    parser.add_argument("--request-timeout", type=float, default=30.0, help="seconds")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", help="JSON result file (default bench/results/soak-<stamp>.json)")
    parser.add_argument("--drive", metavar="SPEC", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.minutes <= 0 or args.connections < 1 or args.workers < 1 or args.sample_every <= 0:
        parser.error("--minutes, --sample-every must be positive; --connections, --workers ≥ 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.drive:
        return drive_main(args.drive)
    _raise_nofile()
    children = Children()
    folder = Path(tempfile.mkdtemp(prefix="imis-soak-"))
    stamp = time.strftime("%Y%m%d-%H%M%S")

    def on_signal(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)

    def keep_logs() -> None:
        """Keep the end of the servers' logs of a failed soak, to see why."""
        logs = RESULTS / f"logs-soak-{stamp}"
        logs.mkdir(parents=True, exist_ok=True)
        for log in folder.rglob("*.log"):
            tail = log.read_text(errors="replace").splitlines()[-5000:]
            (logs / f"{log.parent.name}-{log.name}").write_text("\n".join(tail) + "\n")
        progress(f"failed: the ends of the servers' logs are in {logs}")

    try:
        try:
            result = run_soak(args, folder, children)
            result["load_average"] = os.getloadavg()
        except KeyboardInterrupt:
            progress("interrupted: stopping every child")
            return 130
        except RuntimeError as exc:
            children.stop_all()
            progress(f"the soak stopped: {exc}")
            keep_logs()
            return 1
        finally:
            children.stop_all()
        verdict = judge(args, result)
        if not verdict["passed"]:
            keep_logs()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    text = report(args, result, verdict)
    print(text, flush=True)
    out = Path(args.out) if args.out else RESULTS / f"soak-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    samples: list[Sample] = result["series"]
    out.write_text(
        json.dumps(
            {
                "args": {k: v for k, v in vars(args).items() if k != "drive"},
                "passed": verdict["passed"],
                "failures": verdict["failures"],
                "total": verdict["total"],
                "rss_growth": verdict["rss_growth"],
                "fd_growth": verdict["fd_growth"],
                "kinds": result["kinds"],
                "problems": result["problems"],
                "log": result["log"],
                "bridge_exit_code": result["bridge_exit_code"],
                "seconds": result["seconds"],
                "driver_cpu_seconds": result["driver_cpu_seconds"],
                "server_cpu_seconds": result["server_cpu_seconds"],
                "load_average": result["load_average"],
                "settings": {
                    "session_seconds": SESSION_SECONDS,
                    "session_idle_seconds": SESSION_IDLE_SECONDS,
                    "access_token_seconds": ACCESS_SECONDS,
                    "purge_interval_seconds": PURGE_SECONDS,
                },
                "samples": [
                    {
                        "t": round(s.t, 1),
                        "rss_mb": round(s.rss / MB, 2),
                        "rss_mb_per_process": {
                            str(p): round(b / MB, 2) for p, b in s.per_process.items()
                        },
                        "fds": s.fds,
                        "db_bytes": s.db_bytes,
                        "rows": s.rows,
                        "metrics_status": s.metrics_status,
                    }
                    for s in samples
                ],
                "report": text,
            },
            indent=1,
        )
    )
    progress(f"wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return 0 if verdict["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
