"""The load generator: a separate process, closed loop, keep-alive, bounded in seconds and requests.

``python -m bench.load SPEC.json`` reads a spec (written by :mod:`bench.run`),
runs ``connections`` closed-loop workers on asyncio (uvloop when installed)
with a minimal HTTP/1.1 client over ``asyncio.open_connection``, and prints
one JSON result on standard output. It is kept cheap per request so that, on
a small machine, it does not starve the server it measures.

The measured window starts after ``warmup`` seconds and ends after
``duration`` seconds or ``max_units`` completed units, whichever comes first.
At both ends the loader reads the server's CPU time (utime + stime of
``cpu_pid`` and all its descendants, from ``/proc``), so the result carries
the server's CPU seconds for exactly the window it counted. A *unit* is what
the scenario counts: a request (S0, S1, S3, S6), a flow of three requests
(S2), a password sign-in POST (S4), a browser's sign-in (S5).

Scenarios (``kind``):

- ``get``: one fixed GET (optional cookie); 200 and optionally a substring.
- ``introspect``: POST the access token to introspection; 200, ``active: true``.
- ``code_flow``: authorize with the session cookie -> 302/303 with ``code``
  and the same ``state`` -> token (Basic auth, PKCE verifier) -> 200 with
  ``access_token`` and ``id_token`` -> userinfo (Bearer) -> 200.
- ``refresh``: each connection owns one refresh chain and rotates it.
- ``login``: a fresh browser per unit: GET the sign-in page (CSRF cookie and
  field), POST the form; 303 counts.
- ``mixed``: S1 and S2 alternately on each connection (S7), with the RSS of
  ``rss_pid`` sampled every ``rss_every`` seconds.
- ``browsers``: S5, ``browsers`` concurrent browsers, each on its own
  connection: all GET the sign-in page, then all POST at once; the POST
  phase is the window.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import re
import resource
import secrets
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlencode, urlsplit

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


# --- /proc ----------------------------------------------------------------------------------


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (via ``/proc/PID/task/*/children``)."""
    out: list[int] = []
    todo = [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                text = Path(f"/proc/{current}/task/{task}/children").read_text()
            except OSError:
                continue
            todo.extend(int(child) for child in text.split())
    return out


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` and its descendants (all threads), in seconds."""
    total = 0
    for each in descendants(pid):
        try:
            stat = Path(f"/proc/{each}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / CLK_TCK


def cpu_of_named(name: str) -> float:
    """utime + stime of every process whose command name is ``name`` (PostgreSQL's
    backends, say), in seconds: what the machine spent beside the server measured."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if stat[stat.index("(") + 1 : stat.rindex(")")] != name:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def rss_bytes(pid: int) -> int:
    """VmRSS of one process."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def raise_nofile() -> None:
    """Open-file limit up to the hard limit (S5 opens a thousand connections)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# --- a minimal HTTP/1.1 client ----------------------------------------------------------------


class HttpError(Exception):
    pass


@dataclass
class Reply:
    status: int
    head: bytes
    body: bytes

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (lowercase), or None."""
        key = b"\r\n" + name.encode() + b":"
        lower = self.head.lower()
        at = lower.find(key)
        if at < 0:
            return None
        start = at + len(key)
        end = self.head.find(b"\r\n", start)
        return self.head[start:end].strip().decode("latin-1")

    def cookies(self) -> dict[str, str]:
        """``name: value`` of every Set-Cookie."""
        out: dict[str, str] = {}
        for line in self.head.split(b"\r\n")[1:]:
            if line[:11].lower() == b"set-cookie:":
                pair = line[11:].split(b";", 1)[0].strip().decode("latin-1")
                name, _, value = pair.partition("=")
                out[name] = value
        return out


class Connection:
    """One keep-alive HTTP/1.1 connection; reconnects when the server closed it."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.hostline = f"{host}:{port}".encode()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def request(
        self, method: bytes, path: str, headers: bytes = b"", body: bytes = b""
    ) -> Reply:
        for attempt in (0, 1):
            if self.writer is None:
                await self.open()
            assert self.reader is not None
            assert self.writer is not None
            data = b"%s %s HTTP/1.1\r\nHost: %s\r\n%s" % (
                method,
                path.encode(),
                self.hostline,
                headers,
            )
            if body or method == b"POST":
                data += b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
            else:
                data += b"\r\n"
            self.writer.write(data)
            try:
                return await self._read()
            except (asyncio.IncompleteReadError, ConnectionError):
                # A keep-alive connection the server closed meanwhile: once more, fresh.
                self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    async def _read(self) -> Reply:
        assert self.reader is not None
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        lower = head.lower()
        at = lower.find(b"\r\ncontent-length:")
        if at >= 0:
            end = lower.find(b"\r\n", at + 17)
            body = await self.reader.readexactly(int(lower[at + 17 : end]))
        elif b"\r\ntransfer-encoding: chunked" in lower:
            parts = []
            while True:
                size_line = await self.reader.readuntil(b"\r\n")
                size = int(size_line.split(b";")[0], 16)
                chunk = await self.reader.readexactly(size + 2)
                if size == 0:
                    # trailers end with an empty line; we asked for none
                    break
                parts.append(chunk[:-2])
            body = b"".join(parts)
        elif status in (204, 304) or 100 <= status < 200:
            body = b""
        else:
            body = await self.reader.read()
            self.close()
        if b"\r\nconnection: close" in lower:
            self.close()
        return Reply(status, head, body)


# --- helpers ------------------------------------------------------------------------------


def split_url(url: str) -> tuple[str, int, str]:
    parts = urlsplit(url)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return parts.hostname or "127.0.0.1", parts.port or 80, path


def basic_auth(client_id: str, secret: str) -> bytes:
    """RFC 6749 2.3.1: form-urlencode id and secret, then Basic."""
    raw = f"{quote(client_id, safe='')}:{quote(secret, safe='')}".encode()
    return b"Authorization: Basic " + base64.b64encode(raw) + b"\r\n"


FORM = b"Content-Type: application/x-www-form-urlencoded\r\n"
_HIDDEN = re.compile(rb'<input[^>]*type="hidden"[^>]*name="([^"]+)"[^>]*value="([^"]*)"')


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(32)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


class Failed(Exception):
    """A unit that did not end as expected (counted as an error)."""


# --- the run ------------------------------------------------------------------------------


@dataclass
class Stats:
    units: int = 0
    requests: int = 0
    errors: int = 0
    unit_latencies: list[float] = field(default_factory=list)
    request_latencies: list[float] = field(default_factory=list)
    error_samples: list[str] = field(default_factory=list)
    extra: dict[str, int] = field(default_factory=dict)

    def error(self, what: str) -> None:
        self.errors += 1
        if len(self.error_samples) < 10:
            self.error_samples.append(what[:300])


class Run:
    """Phases (warm-up, window, stop) and the counters of the window."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.measuring = False
        self.stopped = False
        self.stats = Stats()
        self.max_units = int(spec.get("max_units") or 10**12)
        self.done = asyncio.Event()
        self.t0 = self.t1 = 0.0
        self.cpu0 = self.cpu1 = 0.0
        self.beside0: dict[str, float] = {}
        self.beside1: dict[str, float] = {}
        self.rss: list[tuple[float, int, int]] = []  # (seconds, units, bytes)

    def begin(self) -> None:
        self.cpu0 = cpu_seconds(self.spec["cpu_pid"])
        self.beside0 = {name: cpu_of_named(name) for name in self.spec.get("cpu_beside", ())}
        self.t0 = time.perf_counter()
        self.measuring = True

    def end(self) -> None:
        if self.stopped:
            return
        self.t1 = time.perf_counter()
        self.cpu1 = cpu_seconds(self.spec["cpu_pid"])
        self.beside1 = {name: cpu_of_named(name) for name in self.spec.get("cpu_beside", ())}
        self.measuring = False
        self.stopped = True
        self.done.set()

    def unit_done(self, started: float, requests: int, latencies: list[float]) -> None:
        if not self.measuring:
            return
        now = time.perf_counter()
        stats = self.stats
        stats.units += 1
        stats.requests += requests
        stats.unit_latencies.append(now - started)
        stats.request_latencies.extend(latencies)
        if stats.units >= self.max_units:
            self.end()

    def failed(self, what: str) -> None:
        if self.measuring:
            self.stats.error(what)


async def timed(
    conn: Connection, latencies: list[float], method: bytes, path: str, headers: bytes, body: bytes
) -> Reply:
    started = time.perf_counter()
    reply = await conn.request(method, path, headers, body)
    latencies.append(time.perf_counter() - started)
    return reply


Unit = Callable[[list[float]], Awaitable[int]]


def make_unit(spec: dict[str, Any], conns: dict[tuple[str, int], Connection], slot: int) -> Unit:
    """The coroutine function of one unit for this worker; returns requests made."""
    kind = spec["kind"]
    target = spec.get("target") or {}

    def conn_for(url: str) -> tuple[Connection, str]:
        host, port, path = split_url(url)
        key = (host, port)
        if key not in conns:
            conns[key] = Connection(host, port)
        return conns[key], path

    if kind == "get":
        conn, path = conn_for(spec["url"])
        headers = b"".join(f"{k}: {v}\r\n".encode() for k, v in spec.get("headers", {}).items())
        expect = spec.get("expect_status", 200)
        contains = spec.get("contains", "").encode()

        async def get(lat: list[float]) -> int:
            reply = await timed(conn, lat, b"GET", path, headers, b"")
            if reply.status != expect or (contains and contains not in reply.body):
                raise Failed(f"GET {path}: {reply.status} {reply.body[:120]!r}")
            return 1

        return get

    auth = basic_auth(target.get("client_id", ""), target.get("client_secret", ""))

    if kind == "introspect":
        conn, path = conn_for(target["introspection_url"])
        body = urlencode({"token": target["access_token"]}).encode()
        headers = auth + FORM

        async def introspect(lat: list[float]) -> int:
            reply = await timed(conn, lat, b"POST", path, headers, body)
            if reply.status != 200 or json.loads(reply.body).get("active") is not True:
                raise Failed(f"introspect: {reply.status} {reply.body[:200]!r}")
            return 1

        return introspect

    if kind == "refresh":
        conn, path = conn_for(target["token_url"])
        headers = auth + FORM
        tokens = target["refresh_tokens"]
        state = {"token": tokens[slot % len(tokens)], "broken": False}

        async def refresh(lat: list[float]) -> int:
            if state["broken"]:
                raise Failed("refresh chain broken earlier")
            body = urlencode(
                {"grant_type": "refresh_token", "refresh_token": state["token"]}
            ).encode()
            reply = await timed(conn, lat, b"POST", path, headers, body)
            new = json.loads(reply.body).get("refresh_token") if reply.status == 200 else None
            if not new:
                state["broken"] = True
                raise Failed(f"refresh: {reply.status} {reply.body[:200]!r}")
            state["token"] = new
            return 1

        return refresh

    if kind in ("code_flow", "mixed"):
        flow = _code_flow(target, conn_for, auth)
        if kind == "code_flow":
            return flow
        zconn, zpath = conn_for(spec["s1_url"])
        zheaders = f"Cookie: {target['session_cookie']}\r\n".encode()
        turn = {"n": slot}

        async def mixed(lat: list[float]) -> int:
            turn["n"] += 1
            if turn["n"] % 2:
                return await flow(lat)
            reply = await timed(zconn, lat, b"GET", zpath, zheaders, b"")
            if reply.status != 200 or b'name="jwt"' not in reply.body:
                raise Failed(f"zendesk: {reply.status} {reply.body[:120]!r}")
            return 1

        return mixed

    if kind == "login":
        conn, path = conn_for(spec["login_url"])
        fields = {"username": spec["username"], "password": spec["password"]}
        posts: list[float] = []
        spec.setdefault("_post_latencies", posts)

        async def login(lat: list[float]) -> int:
            page = await timed(conn, lat, b"GET", path, b"", b"")
            if page.status != 200:
                raise Failed(f"login page: {page.status}")
            cookie = "; ".join(f"{k}={v}" for k, v in page.cookies().items())
            hidden = {k.decode(): v.decode() for k, v in _HIDDEN.findall(page.body)}
            body = urlencode({**hidden, **fields}).encode()
            headers = FORM + f"Cookie: {cookie}\r\n".encode()
            reply = await timed(conn, lat, b"POST", "/login", headers, body)
            if reply.status != 303:
                raise Failed(f"login POST: {reply.status} {reply.body[:200]!r}")
            posts.append(lat[-1])
            return 2

        return login

    raise ValueError(f"unknown kind {kind!r}")


def _code_flow(
    target: dict[str, Any],
    conn_for: Callable[[str], tuple[Connection, str]],
    auth: bytes,
) -> Unit:
    aconn, apath = conn_for(target["authorize_url"])
    tconn, tpath = conn_for(target["token_url"])
    uconn, upath = conn_for(target["userinfo_url"])
    cookie = f"Cookie: {target['session_cookie']}\r\n".encode()
    redirect_uri = target["redirect_uri"]
    fixed = {
        "response_type": "code",
        "client_id": target["client_id"],
        "redirect_uri": redirect_uri,
        "scope": target["scope"],
        **target.get("authorize_extra", {}),
    }
    token_headers = auth + FORM
    sep = "&" if "?" in apath else "?"

    async def flow(lat: list[float]) -> int:
        verifier, challenge = pkce_pair()
        state = secrets.token_urlsafe(8)
        query = urlencode(
            {
                **fixed,
                "state": state,
                "nonce": secrets.token_urlsafe(8),
                "code_challenge": challenge,
                "code_challenge_method": "S256",
            }
        )
        reply = await timed(aconn, lat, b"GET", f"{apath}{sep}{query}", cookie, b"")
        location = reply.header("location") or ""
        if reply.status not in (302, 303) or not location.startswith(redirect_uri):
            raise Failed(f"authorize: {reply.status} {location[:200]} {reply.body[:200]!r}")
        got = parse_qs(urlsplit(location).query)
        code = got.get("code", [""])[0]
        if not code or got.get("state", [""])[0] != state:
            raise Failed(f"authorize: no code or wrong state in {location[:200]}")
        body = urlencode(
            {
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": redirect_uri,
                "code_verifier": verifier,
            }
        ).encode()
        reply = await timed(tconn, lat, b"POST", tpath, token_headers, body)
        tokens = json.loads(reply.body) if reply.status == 200 else {}
        access = tokens.get("access_token")
        if not access or not tokens.get("id_token"):
            raise Failed(f"token: {reply.status} {reply.body[:200]!r}")
        bearer = f"Authorization: Bearer {access}\r\n".encode()
        reply = await timed(uconn, lat, b"GET", upath, bearer, b"")
        if reply.status != 200:
            raise Failed(f"userinfo: {reply.status} {reply.body[:200]!r}")
        return 3

    return flow


async def worker(run: Run, slot: int) -> None:
    conns: dict[tuple[str, int], Connection] = {}
    unit = make_unit(run.spec, conns, slot)
    try:
        while not run.stopped:
            started = time.perf_counter()
            latencies: list[float] = []
            try:
                requests = await unit(latencies)
            except Failed as exc:
                run.failed(str(exc))
                if "chain broken" in str(exc):
                    await asyncio.sleep(0.05)
                continue
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                run.failed(f"{type(exc).__name__}: {exc}")
                for conn in conns.values():
                    conn.close()
                await asyncio.sleep(0.01)
                continue
            run.unit_done(started, requests, latencies)
    finally:
        for conn in conns.values():
            conn.close()


async def sample_rss(run: Run, pid: int, every: float) -> None:
    start = time.perf_counter()
    while not run.stopped:
        run.rss.append((time.perf_counter() - start, run.stats.units, rss_bytes(pid)))
        await asyncio.sleep(every)
    run.rss.append((time.perf_counter() - start, run.stats.units, rss_bytes(pid)))


async def closed_loop(spec: dict[str, Any]) -> Run:
    run = Run(spec)
    tasks = [asyncio.create_task(worker(run, i)) for i in range(spec["connections"])]
    if spec.get("rss_pid"):
        tasks.append(asyncio.create_task(sample_rss(run, spec["rss_pid"], spec["rss_every"])))
    await asyncio.sleep(spec.get("warmup", 0))
    run.begin()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(run.done.wait(), timeout=spec["duration"])
    run.end()
    # Let in-flight units finish (not counted); a stuck one is cancelled.
    _, pending = await asyncio.wait(tasks, timeout=10)
    for task in pending:
        task.cancel()
    return run


# --- S5: concurrent browsers ----------------------------------------------------------------


async def browsers(spec: dict[str, Any]) -> dict[str, Any]:
    host, port, path = split_url(spec["login_url"])
    count = spec["browsers"]
    fields = {"username": spec["username"], "password": spec["password"]}
    conns = [Connection(host, port) for _ in range(count)]
    forms: list[tuple[bytes, bytes] | None] = [None] * count
    errors: list[str] = []

    async def fetch_page(i: int) -> None:
        try:
            page = await conns[i].request(b"GET", path)
            if page.status != 200:
                raise Failed(f"login page: {page.status}")
            cookie = "; ".join(f"{k}={v}" for k, v in page.cookies().items())
            hidden = {k.decode(): v.decode() for k, v in _HIDDEN.findall(page.body)}
            forms[i] = (
                FORM + f"Cookie: {cookie}\r\n".encode(),
                urlencode({**hidden, **fields}).encode(),
            )
        except (Failed, OSError, asyncio.IncompleteReadError) as exc:
            errors.append(f"page: {exc}")

    # Pages in batches, so opening a thousand connections at once is not what is measured.
    started = time.perf_counter()
    for first in range(0, count, 100):
        await asyncio.gather(*(fetch_page(i) for i in range(first, min(first + 100, count))))
    pages_seconds = time.perf_counter() - started

    latencies: list[float] = []
    ends: list[float] = []

    async def post(i: int) -> None:
        form = forms[i]
        if form is None:
            return
        begin = time.perf_counter()
        try:
            reply = await conns[i].request(b"POST", "/login", form[0], form[1])
        except (OSError, asyncio.IncompleteReadError) as exc:
            errors.append(f"post: {type(exc).__name__}: {exc}")
            return
        end = time.perf_counter()
        if reply.status != 303:
            errors.append(f"post: {reply.status} {reply.body[:160]!r}")
            return
        latencies.append(end - begin)
        ends.append(end)

    cpu0 = cpu_seconds(spec["cpu_pid"])
    t0 = time.perf_counter()
    await asyncio.wait_for(
        asyncio.gather(*(post(i) for i in range(count))), timeout=spec.get("timeout", 300)
    )
    t1 = time.perf_counter()
    cpu1 = cpu_seconds(spec["cpu_pid"])
    for conn in conns:
        conn.close()
    return {
        "units": len(latencies),
        "requests": len(latencies),
        "errors": len(errors),
        "error_samples": errors[:10],
        "seconds": t1 - t0,
        "completion_seconds": (max(ends) - t0) if ends else None,
        "cpu_seconds": cpu1 - cpu0,
        "pages_seconds": pages_seconds,
        "unit_latencies": latencies,
    }


# --- results ----------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def summarize(run: Run) -> dict[str, Any]:
    stats = run.stats
    seconds = run.t1 - run.t0
    result: dict[str, Any] = {
        "units": stats.units,
        "requests": stats.requests,
        "errors": stats.errors,
        "error_samples": stats.error_samples,
        "seconds": seconds,
        "cpu_seconds": run.cpu1 - run.cpu0,
        "cpu_beside_seconds": {k: run.beside1[k] - v for k, v in run.beside0.items()},
        "unit_p50": percentile(stats.unit_latencies, 0.50),
        "unit_p99": percentile(stats.unit_latencies, 0.99),
        "request_p50": percentile(stats.request_latencies, 0.50),
        "request_p99": percentile(stats.request_latencies, 0.99),
    }
    posts = run.spec.get("_post_latencies")
    if posts is not None:
        result["post_p50"] = percentile(posts, 0.50)
        result["post_p99"] = percentile(posts, 0.99)
    if run.rss:
        result["rss"] = run.rss
    return result


def with_latency_summary(result: dict[str, Any]) -> dict[str, Any]:
    lat = result.pop("unit_latencies", None)
    if lat is not None:
        result["unit_p50"] = percentile(lat, 0.50)
        result["unit_p99"] = percentile(lat, 0.99)
        result["unit_max"] = max(lat) if lat else None
        result["unit_min"] = min(lat) if lat else None
    return result


async def main_async(spec: dict[str, Any]) -> dict[str, Any]:
    if spec["kind"] == "browsers":
        return with_latency_summary(await browsers(spec))
    driver0 = time.process_time()
    run = await closed_loop(spec)
    result = summarize(run)
    result["driver_cpu_seconds"] = time.process_time() - driver0
    return result


def main() -> int:
    spec = json.loads(Path(sys.argv[1]).read_text())
    raise_nofile()
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:
        runner = asyncio.run
    result = runner(main_async(spec))
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
