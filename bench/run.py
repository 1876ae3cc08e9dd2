"""``python -m bench.run``: the scenarios of PERFORMANCE.md against real processes, one table.

The orchestrator writes a temporary configuration (one confidential OIDC
client with ``offline_access``, one Zendesk registration, SQLite in the
temporary folder), starts the iMIS simulator and ``bridge serve`` as their
own processes, signs in through the real login form, and prepares a
:class:`bench.target.Target`. Each scenario then runs :mod:`bench.load` as a
separate process on loopback; the peer (panva ``oidc-provider``, from
:mod:`bench.peer`) runs S2, S3 and S6 right after the bridge in the same run.
Every child runs in its own process group and is killed on exit or ^C.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import math
import os
import platform
import re
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import timeit
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from bench.target import Target

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
ALL = ("S0", "S1", "S2", "S3", "S4", "S5", "S6", "S7", "S8")
PEER_SCENARIOS = ("S2", "S3", "S6")

CLIENT_ID = "bench-portal"
CLIENT_SECRET = "bench-portal-secret-0123456789abcdef"
REDIRECT_URI = "https://portal.example.org/callback"
ZENDESK_SLUG = "helpdesk"
ZENDESK_SECRET = "bench-zendesk-shared-secret-0123456789"
USERNAME, PASSWORD = "jdoe", "password1"
SERVICE_USER, SERVICE_PASSWORD = "bridge-service", "service-password1"
#: One S2 flow asks for what the peer's flow asks for (no refresh token).
FLOW_SCOPE = "openid profile email phone"
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
PG_BENCH_DB = "bench"
PG_BENCH_URL = f"postgresql+psycopg://postgres@127.0.0.1:5432/{PG_BENCH_DB}"
MB = 1024 * 1024


def progress(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- processes ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Children:
    """Every child process of the run, each in its own process group; all killed at the end."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(
        self, cmd: list[str], *, log: Path, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        out = log.open("ab")
        proc = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=ROOT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
            preexec_fn=_raise_nofile,
        )
        out.close()
        self.procs.append(proc)
        return proc

    def adopt(self, proc: subprocess.Popen[Any]) -> None:
        self.procs.append(proc)

    def stop(self, proc: subprocess.Popen[Any], timeout: float = 10) -> None:
        """SIGTERM (the whole group when the child leads one), then SIGKILL."""
        try:
            group = os.getpgid(proc.pid) == proc.pid
        except ProcessLookupError:
            group = False

        def send(sig: signal.Signals) -> None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if group:
                    os.killpg(proc.pid, sig)
                elif proc.poll() is None:
                    proc.send_signal(sig)

        if proc.poll() is None:
            send(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                send(signal.SIGKILL)
                proc.wait(5)
        # Workers of a multi-worker server may outlive their parent, the group's leader.
        send(signal.SIGKILL)
        if proc in self.procs:
            self.procs.remove(proc)

    def stop_all(self) -> None:
        for proc in list(reversed(self.procs)):
            self.stop(proc, timeout=5)


def wait_ready(url: str, proc: subprocess.Popen[Any], log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: process exited ({proc.returncode}):\n{_tail(log)}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready after {timeout} s:\n{_tail(log)}")


def _tail(log: Path, lines: int = 30) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def worker_pids(pid: int) -> list[int]:
    from bench.load import descendants

    return [p for p in descendants(pid) if p != pid] or [pid]


# --- the bridge -------------------------------------------------------------------------------


def write_config(
    folder: Path,
    *,
    port: int,
    imis_port: int,
    database_url: str,
    log_level: str,
    top: str = "",
    sections: str = "",
) -> Path:
    """``log_level``: "warning" leaves out the access line of each request (oidc-provider
    writes none); "info" measures it too. ``top`` (top-level keys) and ``sections``
    (further tables) are TOML added as they are (the soak shortens lifetimes with them)."""
    (folder / "registrations").mkdir(parents=True, exist_ok=True)
    (folder / "bridge.toml").write_text(
        textwrap.dedent(
            f"""\
            issuer = "http://127.0.0.1:{port}"
            database_url = "{database_url}"
            keys_dir = "keys"
            log_level = "{log_level}"
            """
        )
        + textwrap.dedent(top)
        + textwrap.dedent(
            f"""
            [imis]
            base_url = "http://127.0.0.1:{imis_port}"
            service_username = "{SERVICE_USER}"
            service_password = "{SERVICE_PASSWORD}"

            [ui]
            organization_name = "Bench Association"
            """
        )
        + textwrap.dedent(sections)
    )
    (folder / "registrations" / "portal.toml").write_text(
        textwrap.dedent(
            f"""\
            name = "Bench Portal"
            profile = "oidc"
            client_id = "{CLIENT_ID}"
            client_secret = "{CLIENT_SECRET}"
            redirect_uris = ["{REDIRECT_URI}"]
            scopes = ["openid", "profile", "email", "phone", "offline_access"]
            id_token_signed_response_alg = "RS256"
            """
        )
    )
    (folder / "registrations" / f"{ZENDESK_SLUG}.toml").write_text(
        textwrap.dedent(
            f"""\
            name = "Bench Helpdesk"
            profile = "zendesk"
            subdomain = "bench"
            shared_secret = "{ZENDESK_SECRET}"
            """
        )
    )
    return folder


@dataclass
class Bridge:
    proc: subprocess.Popen[bytes]
    port: int
    config: Path
    log: Path
    workers: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def worker_pid(self) -> int:
        return self.proc.pid if self.workers == 1 else worker_pids(self.proc.pid)[0]


def workers_text(workers: int) -> str:
    if workers == 1:
        return "one bridge worker unless stated"
    return f"{workers} bridge workers (S1-S7), S8 as stated"


def bridge_bin() -> str:
    return str(Path(sys.executable).with_name("bridge"))


def start_bridge(children: Children, config: Path, port: int, workers: int) -> Bridge:
    log = config / f"bridge-{workers}w.log"
    proc = children.start(
        [
            bridge_bin(),
            "serve",
            "--config",
            str(config),
            "--port",
            str(port),
            "--workers",
            str(workers),
        ],
        log=log,
    )
    bridge = Bridge(proc, port, config, log, workers)
    wait_ready(f"{bridge.url}/readyz", proc, log)
    if workers > 1:
        # /readyz answers once one worker listens; give the others their start-up too.
        deadline = time.monotonic() + 30
        while len(worker_pids(proc.pid)) < workers and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(2)
    return bridge


def start_simulator(children: Children, folder: Path, port: int, latency_ms: int) -> Any:
    log = folder / f"imis-{latency_ms}ms.log"
    proc = children.start(
        [
            bridge_bin(),
            "imis-simulator",
            "--port",
            str(port),
            "--latency-ms",
            str(latency_ms),
        ],
        log=log,
    )
    wait_ready(f"http://127.0.0.1:{port}/_sim/stats", proc, log)
    return proc


_HIDDEN = re.compile(r'<input[^>]*type="hidden"[^>]*name="([^"]+)"[^>]*value="([^"]*)"')


def sign_in(url: str) -> httpx.Client:
    """A browser signed in through the real form (CSRF cookie and field); keeps its cookies."""
    import html

    browser = httpx.Client(base_url=url, follow_redirects=False, timeout=30, verify=False)
    page = browser.get("/login")
    page.raise_for_status()
    fields = {k: html.unescape(v) for k, v in _HIDDEN.findall(page.text)}
    if "csrf_token" not in fields:
        raise RuntimeError("the sign-in page has no csrf_token field")
    reply = browser.post("/login", data={**fields, "username": USERNAME, "password": PASSWORD})
    if reply.status_code != 303:
        raise RuntimeError(f"sign-in failed: {reply.status_code} {reply.text[:300]}")
    return browser


def timed_sign_in(url: str) -> float:
    """Seconds one sign-in POST takes on an otherwise idle bridge."""
    import html

    with httpx.Client(base_url=url, follow_redirects=False, timeout=30) as browser:
        page = browser.get("/login")
        fields = {k: html.unescape(v) for k, v in _HIDDEN.findall(page.text)}
        started = time.perf_counter()
        reply = browser.post("/login", data={**fields, "username": USERNAME, "password": PASSWORD})
        took = time.perf_counter() - started
    if reply.status_code != 303:
        raise RuntimeError(f"sign-in failed: {reply.status_code} {reply.text[:300]}")
    return took


def _pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def code_flow_tokens(browser: httpx.Client, scope: str) -> dict[str, Any]:
    """One code flow with the browser's session; the token response."""
    verifier, challenge = _pkce()
    state = secrets.token_urlsafe(8)
    reply = browser.get(
        "/authorize",
        params={
            "response_type": "code",
            "client_id": CLIENT_ID,
            "redirect_uri": REDIRECT_URI,
            "scope": scope,
            "state": state,
            "nonce": secrets.token_urlsafe(8),
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        },
    )
    location = reply.headers.get("location", "")
    query = parse_qs(urlsplit(location).query)
    if reply.status_code not in (302, 303) or "code" not in query:
        raise RuntimeError(f"authorize: {reply.status_code} {location} {reply.text[:300]}")
    token = httpx.post(
        f"{str(browser.base_url).rstrip('/')}/token",
        data={
            "grant_type": "authorization_code",
            "code": query["code"][0],
            "redirect_uri": REDIRECT_URI,
            "code_verifier": verifier,
        },
        auth=(CLIENT_ID, CLIENT_SECRET),
        timeout=30,
    )
    if token.status_code != 200:
        raise RuntimeError(f"token: {token.status_code} {token.text[:300]}")
    body: dict[str, Any] = token.json()
    return body


def prepare_bridge(bridge: Bridge, refresh_chains: int) -> tuple[Target, httpx.Client]:
    browser = sign_in(bridge.url)
    cookie = "; ".join(f"{c.name}={c.value}" for c in browser.cookies.jar)
    refresh = tuple(
        code_flow_tokens(browser, FLOW_SCOPE + " offline_access")["refresh_token"]
        for _ in range(refresh_chains)
    )
    access = code_flow_tokens(browser, FLOW_SCOPE)["access_token"]
    url = bridge.url
    target = Target(
        name="imis-bridge",
        pid=bridge.proc.pid,
        base_url=url,
        authorize_url=f"{url}/authorize",
        token_url=f"{url}/token",
        userinfo_url=f"{url}/userinfo",
        introspection_url=f"{url}/introspect",
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        redirect_uri=REDIRECT_URI,
        scope=FLOW_SCOPE,
        session_cookie=cookie,
        refresh_tokens=refresh,
        access_token=access,
        storage="",
    )
    return target, browser


# --- one load run -----------------------------------------------------------------------------


@dataclass
class Options:
    duration: float
    connections: int
    warmup: float
    profile: str | None
    folder: Path


def run_load(opts: Options, spec: dict[str, Any], *, scenario: str, profile_pid: int) -> Any:
    """Run :mod:`bench.load` in its own process; its JSON result (with the py-spy files)."""
    spec = {
        "connections": opts.connections,
        "warmup": opts.warmup,
        "duration": opts.duration,
        **spec,
    }
    spec_file = opts.folder / f"spec-{scenario}-{time.monotonic_ns()}.json"
    spec_file.write_text(json.dumps(spec))
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.load", str(spec_file)],
        stdout=subprocess.PIPE,
        cwd=ROOT,
        start_new_session=True,
        preexec_fn=_raise_nofile,
    )
    spies: list[subprocess.Popen[bytes]] = []
    files: list[str] = []
    try:
        if opts.profile == scenario:
            spies, files = start_profile(scenario, profile_pid, spec)
        out, _ = proc.communicate(timeout=spec["duration"] + spec["warmup"] + 600)
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        for spy in spies:
            try:
                spy.wait(30)
            except subprocess.TimeoutExpired:
                spy.kill()
    if proc.returncode != 0:
        raise RuntimeError(f"load generator failed for {scenario} ({proc.returncode})")
    result = json.loads(out)
    if files:
        result["profiles"] = files
    return result


def start_profile(
    scenario: str, pid: int, spec: dict[str, Any]
) -> tuple[list[subprocess.Popen[bytes]], list[str]]:
    """py-spy on the worker for the window: a flame graph (SVG) and speedscope JSON."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        progress("py-spy is not installed (pip install '.[bench]'): no profile")
        return [], []
    folder = RESULTS / "profiles"
    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    seconds = max(1, int(spec["duration"]))
    time.sleep(spec["warmup"])
    spies, files = [], []
    for fmt, suffix in (("flamegraph", "svg"), ("speedscope", "speedscope.json")):
        path = folder / f"{scenario}-{stamp}.{suffix}"
        spies.append(
            subprocess.Popen(
                [
                    spy,
                    "record",
                    "--pid",
                    str(pid),
                    "--duration",
                    str(seconds),
                    "--rate",
                    "100",
                    "--nonblocking",
                    "--format",
                    fmt,
                    "--output",
                    str(path),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        )
        files.append(str(path.relative_to(ROOT)))
    progress(f"profiling {scenario} (pid {pid}) into {', '.join(files)}")
    return spies, files


# --- rows ---------------------------------------------------------------------------------


@dataclass
class Row:
    scenario: str
    server: str
    unit: str
    result: dict[str, Any]
    units_per_request: float = 1.0
    notes: list[str] = field(default_factory=list)
    target: str = ""
    passed: bool | None = None
    vs_s0: float | None = None
    vs_peer: float | None = None
    floor_share: float | None = None

    @property
    def throughput(self) -> float:
        seconds = self.result.get("seconds") or 0
        return self.result["units"] / seconds if seconds else 0.0

    @property
    def per_core_second(self) -> float | None:
        cpu = self.result.get("cpu_seconds") or 0
        return self.result["units"] / cpu if cpu else None

    @property
    def requests_per_core_second(self) -> float | None:
        cpu = self.result.get("cpu_seconds") or 0
        return self.result.get("requests", self.result["units"]) / cpu if cpu else None

    @property
    def cpu_per_unit(self) -> float | None:
        per = self.per_core_second
        return 1 / per if per else None


def load_spec(kind: str, target: Target | None, cpu_pid: int, **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"kind": kind, "cpu_pid": cpu_pid, **extra}
    if target is not None:
        spec["target"] = asdict(target)
    return spec


def max_units(opts: Options, per_second: int) -> int:
    return int(per_second * (opts.duration + 1))


# --- the floor ------------------------------------------------------------------------------


def floor_costs(folder: Path) -> dict[str, float]:
    """Microseconds of one RS256 signature, one HS256 JWT (pyjwt) and KeyStore.sign_jwt."""
    import jwt
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    claims = {
        "iss": "http://127.0.0.1:8000",
        "sub": "23210",
        "aud": CLIENT_ID,
        "iat": 1_700_000_000,
        "exp": 1_700_000_600,
        "nonce": "abcdefgh",
        "name": "Jane Doe",
        "email": "jane.doe@example.org",
    }
    secret = ZENDESK_SECRET

    def best(fn: Callable[[], object], number: int) -> float:
        return min(timeit.repeat(fn, number=number, repeat=5)) / number * 1e6

    out = {
        "rs256_pyjwt_us": best(lambda: jwt.encode(claims, key, algorithm="RS256"), 100),
        "hs256_pyjwt_us": best(lambda: jwt.encode(claims, secret, algorithm="HS256"), 2000),
    }
    try:
        from bridge.keys import KeyStore

        store = KeyStore.load_or_create(folder / "floor-keys")
        out["rs256_keystore_us"] = best(lambda: store.sign_jwt(dict(claims), "RS256"), 100)
    except Exception as exc:  # an API change must not stop the benchmark
        progress(f"KeyStore.sign_jwt not measured: {exc}")
    return out


# --- machine --------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    node = "absent"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        node = subprocess.run(
            ["node", "--version"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "node": node,
        "kernel": platform.release(),
        "load_average": os.getloadavg(),
    }


# --- PostgreSQL -----------------------------------------------------------------------------


def reset_pg_database() -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {PG_BENCH_DB} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {PG_BENCH_DB}")


def drop_pg_database() -> None:
    import psycopg

    with (
        contextlib.suppress(Exception),
        psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn,
    ):
        conn.execute(f"DROP DATABASE IF EXISTS {PG_BENCH_DB} WITH (FORCE)")


def db_upgrade(config: Path) -> None:
    subprocess.run(
        [bridge_bin(), "db", "upgrade", "--config", str(config)],
        check=True,
        capture_output=True,
        cwd=ROOT,
    )


# --- the run --------------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace, folder: Path, children: Children) -> None:
        self.args = args
        self.folder = folder
        self.children = children
        self.opts = Options(
            duration=args.duration,
            connections=args.connections,
            warmup=args.warmup,
            profile=args.profile,
            folder=folder,
        )
        self.rows: list[Row] = []
        self.extra: dict[str, Any] = {}
        self.peer: Any = None
        self.peer_target: Target | None = None
        self.peer_proc: subprocess.Popen[Any] | None = None
        self.imis_port = free_port()
        self.simulator: Any = None
        self.bridge: Bridge | None = None
        self.target: Target | None = None
        self.browser: httpx.Client | None = None
        self.config = Path()
        self.port = 0
        self.storage = "SQLite" if args.database == "sqlite" else "PostgreSQL"

    # set-up
    def start_main(self) -> None:
        self.simulator = start_simulator(self.children, self.folder, self.imis_port, 0)
        port = free_port()
        if self.args.database == "postgresql":
            reset_pg_database()
            database_url = PG_BENCH_URL
        else:
            database_url = "sqlite:///bridge.db"
        config = write_config(
            self.folder / "config",
            port=port,
            imis_port=self.imis_port,
            database_url=database_url,
            log_level=self.args.log_level,
        )
        if self.args.database == "postgresql":
            db_upgrade(config)
        progress(f"bridge on :{port} ({self.storage}), iMIS simulator on :{self.imis_port}")
        self.config, self.port = config, port
        self.start_bridge()

    def start_bridge(self) -> None:
        if self.bridge is not None:
            self.children.stop(self.bridge.proc)
        if self.browser is not None:
            self.browser.close()
        self.bridge = start_bridge(self.children, self.config, self.port, self.args.workers)
        target, self.browser = prepare_bridge(self.bridge, self.args.connections)
        self.target = Target(**{**asdict(target), "storage": self.storage})

    def restart_simulator(self, latency_ms: int) -> None:
        if self.simulator is not None:
            self.children.stop(self.simulator)
        self.simulator = start_simulator(self.children, self.folder, self.imis_port, latency_ms)

    def fresh_access_token(self) -> None:
        assert self.browser is not None
        assert self.target is not None
        access = code_flow_tokens(self.browser, FLOW_SCOPE)["access_token"]
        self.target = Target(**{**asdict(self.target), "access_token": access})

    def start_peer(self) -> bool:
        if self.args.no_peer:
            return False
        if self.peer_target is not None:
            return True
        try:
            from bench import peer
        except ImportError as exc:
            progress(f"bench.peer is not available ({exc}): peer skipped")
            self.args.no_peer = True
            return False
        progress("installing and starting the peer (oidc-provider)")
        try:
            peer.install()
            port = free_port()
            proc = peer.start(port, REDIRECT_URI)
            self.children.adopt(proc)
            self.peer_proc = proc
            target = peer.prepare(proc, port, REDIRECT_URI, self.args.connections)
            self.peer_target = target
            self.peer = peer
            self.extra["peer_version"] = peer.installed_version()
        except Exception as exc:
            progress(f"the peer could not be started: {exc}")
            self.args.no_peer = True
            return False
        return True

    # scenarios
    def run(self, scenarios: list[str]) -> None:
        if any(s != "S0" and s != "S8" for s in scenarios):
            self.start_main()
        for scenario in scenarios:
            progress(f"{scenario} ...")
            getattr(self, f"s{scenario[1:]}")()
            for row in self.rows:
                if row.scenario == scenario and "shown" not in row.notes:
                    row.notes.append("shown")
                    progress(f"  {row.server}: {describe(row)}")

    def _measure(
        self,
        scenario: str,
        server: str,
        unit: str,
        spec: dict[str, Any],
        *,
        profile_pid: int,
        units_per_request: float = 1.0,
    ) -> Row:
        result = run_load(self.opts, spec, scenario=scenario, profile_pid=profile_pid)
        row = Row(scenario, server, unit, result, units_per_request)
        self.rows.append(row)
        return row

    def s0(self) -> None:
        port = free_port()
        log = self.folder / "hello.log"
        proc = self.children.start(
            [sys.executable, "-m", "bench.hello", "--port", str(port)], log=log
        )
        try:
            wait_ready(f"http://127.0.0.1:{port}/readyz", proc, log)
            spec = load_spec(
                "get",
                None,
                proc.pid,
                url=f"http://127.0.0.1:{port}/",
                contains="Hello",
                max_units=max_units(self.opts, 100_000),
            )
            self._measure("S0", "hello world", "req", spec, profile_pid=proc.pid)
        finally:
            self.children.stop(proc)

    def _s1_spec(self, bridge: Bridge, target: Target) -> dict[str, Any]:
        return load_spec(
            "get",
            None,
            bridge.proc.pid,
            url=f"{bridge.url}/zendesk/{ZENDESK_SLUG}",
            headers={"Cookie": target.session_cookie},
            contains='name="jwt"',
            max_units=max_units(self.opts, 50_000),
        )

    def s1(self) -> None:
        assert self.bridge is not None
        assert self.target is not None
        spec = self._s1_spec(self.bridge, self.target)
        self._measure("S1", "imis-bridge", "req", spec, profile_pid=self.bridge.worker_pid)

    def _peer_row(self, scenario: str, kind: str, unit: str, per_second: int) -> None:
        if not self.start_peer():
            return
        assert self.peer_target is not None
        spec = load_spec(
            kind,
            self.peer_target,
            self.peer_target.pid,
            max_units=max_units(self.opts, per_second),
        )
        result = run_load(self.opts, spec, scenario=f"{scenario}-peer", profile_pid=0)
        self.rows.append(Row(scenario, "oidc-provider", unit, result))

    def _side_by_side(self, scenario: str, kind: str, unit: str, budget: int) -> None:
        """The bridge, then the peer, on the same load."""
        assert self.bridge is not None
        assert self.target is not None
        spec = load_spec(
            kind, self.target, self.bridge.proc.pid, max_units=max_units(self.opts, budget)
        )
        self._measure(scenario, "imis-bridge", unit, spec, profile_pid=self.bridge.worker_pid)
        self._peer_row(scenario, kind, unit, budget)

    def s2(self) -> None:
        self._side_by_side("S2", "code_flow", "flow", 20_000)

    def s3(self) -> None:
        self._side_by_side("S3", "refresh", "req", 50_000)

    def s4(self) -> None:
        assert self.bridge is not None
        spec = load_spec(
            "login",
            None,
            self.bridge.proc.pid,
            login_url=f"{self.bridge.url}/login",
            username=USERNAME,
            password=PASSWORD,
            max_units=max_units(self.opts, 20_000),
        )
        self._measure(
            "S4",
            "imis-bridge",
            "sign-in",
            spec,
            profile_pid=self.bridge.worker_pid,
            units_per_request=0.5,
        )

    def s5(self) -> None:
        assert self.bridge is not None
        latency_ms = 300
        self.restart_simulator(latency_ms)
        # Warm the bridge's iMIS connections to the new simulator (not measured).
        warm = load_spec(
            "login",
            None,
            self.bridge.proc.pid,
            login_url=f"{self.bridge.url}/login",
            username=USERNAME,
            password=PASSWORD,
        )
        try:
            run_load(
                Options(2.0, 64, 0.0, None, self.folder), warm, scenario="S5-warm", profile_pid=0
            )
            # The chain of sequential iMIS calls: one sign-in alone, three times, the fastest.
            alone = min(timed_sign_in(self.bridge.url) for _ in range(3))
            before = httpx.get(f"http://127.0.0.1:{self.imis_port}/_sim/stats").json()
            spec = load_spec(
                "browsers",
                None,
                self.bridge.proc.pid,
                login_url=f"{self.bridge.url}/login",
                username=USERNAME,
                password=PASSWORD,
                browsers=self.args.s5_browsers,
                timeout=300,
            )
            result = run_load(self.opts, spec, scenario="S5", profile_pid=self.bridge.worker_pid)
            after = httpx.get(f"http://127.0.0.1:{self.imis_port}/_sim/stats").json()
        finally:
            self.restart_simulator(0)
            # Cycle the bridge's iMIS connections to the new simulator (not measured).
            run_load(
                Options(1.0, 64, 0.0, None, self.folder), warm, scenario="S5-rewarm", profile_pid=0
            )
        row = Row("S5", "imis-bridge", "sign-in", result)
        self.rows.append(row)
        done = result["units"]
        calls = (after["token_requests"] - before["token_requests"]) + (
            after["api_requests"] - before["api_requests"]
        )
        sequential = math.floor(alone / (latency_ms / 1000) + 0.05)
        chain = sequential * latency_ms / 1000
        # The server's cost: the CPU it used during the burst (POSTs only).
        cost = result["cpu_seconds"]
        ideal = chain + cost
        completion = result.get("completion_seconds") or result["seconds"]
        waited_bound = chain + result["cpu_seconds"] + 0.25
        worst = result.get("unit_max") or 0.0
        result.update(
            {
                "imis_latency_ms": latency_ms,
                "imis_calls": calls,
                "imis_calls_per_sign_in": calls / done if done else None,
                "sequential_imis_calls": sequential,
                "ideal_seconds": ideal,
                "ideal_cost_seconds": cost,
                "single_sign_in_seconds": alone,
                "lower_bound_seconds": max(chain, cost),
                "theoretical_rate": self.args.s5_browsers / chain if chain else None,
                "ideal_rate": done / ideal if ideal else None,
                "achieved_rate": done / completion if completion else None,
                "of_ideal": ideal / completion if completion else None,
                "waited_on_another": worst > waited_bound,
                "waited_bound_seconds": waited_bound,
            }
        )
        result["seconds"] = completion

    def s6(self) -> None:
        self.fresh_access_token()
        self._side_by_side("S6", "introspect", "req", 100_000)

    def s7(self) -> None:
        # A fresh worker: the memory of 100,000 flows, not the high-water mark S5's
        # 1,000 simultaneous browsers left behind (CPython keeps what it once used).
        self.start_bridge()
        assert self.bridge is not None
        assert self.target is not None
        flows = self.args.s7_flows
        spec = load_spec(
            "mixed",
            self.target,
            self.bridge.proc.pid,
            s1_url=f"{self.bridge.url}/zendesk/{ZENDESK_SLUG}",
            max_units=flows,
            rss_pid=self.bridge.worker_pid,
            rss_every=2.0,
        )
        # Bounded by the flow count; the time limit is only a safety net.
        opts = Options(
            duration=max(60.0, flows / 100),
            connections=self.opts.connections,
            warmup=0.0,
            profile=self.opts.profile,
            folder=self.folder,
        )
        progress(f"  S7: {flows} S1+S2 flows (RSS sampled every 2 s)")
        result = run_load(opts, spec, scenario="S7", profile_pid=self.bridge.worker_pid)
        samples = result.pop("rss", [])
        rss = [s[2] for s in samples]
        half_units = result["units"] / 2
        last_half = [s for s in samples if s[1] >= half_units]
        growth = (last_half[-1][2] - last_half[0][2]) if len(last_half) >= 2 else None
        result.update(
            {
                "rss_max_mb": max(rss) / MB if rss else None,
                "rss_start_mb": rss[0] / MB if rss else None,
                "rss_end_mb": rss[-1] / MB if rss else None,
                "rss_growth_last_half_mb": growth / MB if growth is not None else None,
                "rss_samples": [(round(t, 1), u, round(b / MB, 1)) for t, u, b in samples],
            }
        )
        self.rows.append(Row("S7", "imis-bridge", "flow", result))

    def s8(self) -> None:
        """S1 and S2 on PostgreSQL with one worker, then two."""
        if self.bridge is not None and self.args.database == "postgresql":
            # The main bridge holds the same database: stop it first.
            self.children.stop(self.bridge.proc)
            self.bridge = None
        if self.simulator is None:
            self.simulator = start_simulator(self.children, self.folder, self.imis_port, 0)
        port = free_port()
        config = write_config(
            self.folder / "config-pg",
            port=port,
            imis_port=self.imis_port,
            database_url=PG_BENCH_URL,
            log_level=self.args.log_level,
        )
        try:
            reset_pg_database()
            db_upgrade(config)
            for workers in (1, 2):
                bridge = start_bridge(self.children, config, port, workers)
                try:
                    target, _ = prepare_bridge(bridge, 1)
                    target = Target(**{**asdict(target), "storage": "PostgreSQL"})
                    s1 = {**self._s1_spec(bridge, target), "cpu_beside": ["postgres"]}
                    self.rows.append(
                        Row(
                            "S8",
                            f"S1, {workers} worker{'s' if workers > 1 else ''}",
                            "req",
                            run_load(self.opts, s1, scenario=f"S8-S1-{workers}w", profile_pid=0),
                        )
                    )
                    s2 = load_spec(
                        "code_flow", target, bridge.proc.pid, max_units=max_units(self.opts, 20_000)
                    )
                    s2["cpu_beside"] = ["postgres"]
                    self.rows.append(
                        Row(
                            "S8",
                            f"S2, {workers} worker{'s' if workers > 1 else ''}",
                            "flow",
                            run_load(self.opts, s2, scenario=f"S8-S2-{workers}w", profile_pid=0),
                        )
                    )
                finally:
                    self.children.stop(bridge.proc)
        finally:
            drop_pg_database()


# --- judging and the table ------------------------------------------------------------------


def judge(rows: list[Row], floor: dict[str, float]) -> None:
    s0 = next((r for r in rows if r.scenario == "S0"), None)
    s0_pcs = s0.per_core_second if s0 else None
    peers = {r.scenario: r for r in rows if r.server == "oidc-provider"}
    rs256 = floor.get("rs256_keystore_us") or floor.get("rs256_pyjwt_us")
    hs256 = floor.get("hs256_pyjwt_us")
    for row in rows:
        pcs = row.per_core_second
        rpcs = row.requests_per_core_second
        if s0_pcs and rpcs and row.scenario not in ("S0", "S5"):
            # HTTP requests per core-second against the ceiling's (a flow is 3 requests).
            row.vs_s0 = rpcs / s0_pcs
        peer = peers.get(row.scenario)
        if peer is not None and row is not peer and pcs and peer.per_core_second:
            row.vs_peer = pcs / peer.per_core_second
        cpu = row.cpu_per_unit
        if cpu and row.server == "imis-bridge":
            crypto_us = {"S1": hs256, "S2": rs256}.get(row.scenario)
            if crypto_us:
                row.floor_share = crypto_us / 1e6 / cpu
        errors_ok = row.result.get("errors", 0) == 0
        if row.server == "oidc-provider":
            continue
        match row.scenario:
            case "S1":
                row.target = "≥ 30% of S0 per core-s"
                row.passed = row.vs_s0 is not None and row.vs_s0 >= 0.30 and errors_ok
            case "S2":
                row.target = "≥ 1.0× peer per core-s"
                row.passed = row.vs_peer >= 1.0 and errors_ok if row.vs_peer is not None else None
            case "S3":
                row.target = "≥ 1,200/s; ≥ 1.0× peer per core-s"
                ok = row.throughput >= 1200 and errors_ok
                row.passed = ok and (row.vs_peer is None or row.vs_peer >= 1.0)
            case "S4":
                row.target = "≥ 300 sign-ins/s"
                row.passed = row.throughput >= 300 and errors_ok
            case "S5":
                of_ideal = row.result.get("of_ideal")
                row.target = "≥ 80% of ideal rate; no waiting"
                row.passed = (
                    of_ideal is not None
                    and of_ideal >= 0.8
                    and not row.result.get("waited_on_another")
                    and errors_ok
                )
            case "S6":
                row.target = "≥ 5,000/s; ≥ 1.0× peer per core-s"
                ok = row.throughput >= 5000 and errors_ok
                row.passed = ok and (row.vs_peer is None or row.vs_peer >= 1.0)
            case "S7":
                row.target = "RSS ≤ 120 MB; no growth (last half)"
                peak = row.result.get("rss_max_mb")
                growth = row.result.get("rss_growth_last_half_mb")
                row.passed = (
                    peak is not None
                    and peak <= 120
                    and growth is not None
                    and growth <= 2.0
                    and errors_ok
                )
    for which in ("S1", "S2"):
        one = next(
            (r for r in rows if r.scenario == "S8" and r.server == f"{which}, 1 worker"), None
        )
        two = next(
            (r for r in rows if r.scenario == "S8" and r.server == f"{which}, 2 workers"), None
        )
        if one and two and one.throughput:
            ratio = two.throughput / one.throughput
            two.result["scale_out"] = ratio
            # On a small machine the workers share the cores with PostgreSQL and the
            # load generator: say what each used, so the ceiling is visible.
            used = [
                f"{r.server.split(', ')[1]}: bridge {r.result.get('cpu_seconds', 0):.1f} s, "
                f"PostgreSQL {r.result.get('cpu_beside_seconds', {}).get('postgres', 0):.1f} s, "
                f"load generator {r.result.get('driver_cpu_seconds', 0):.1f} s of CPU"
                for r in (one, two)
            ]
            two.target = f"≥ 1.7× 1 worker ({'; '.join(used)})"
            two.passed = ratio >= 1.7 and two.result.get("errors", 0) == 0


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    return f"{seconds * 1000:.1f} ms" if seconds < 10 else f"{seconds:.1f} s"


def _x(value: float | None, percent: bool = False) -> str:
    if value is None:
        return "–"
    if percent:
        return f"{value * 100:.1f}%" if value < 0.1 else f"{value * 100:.0f}%"
    return f"{value:.2f}×"


def describe(row: Row) -> str:
    r = row.result
    rate = f"{row.throughput:,.0f} {row.unit}/s"
    if row.unit != "req" and r.get("requests") and r.get("seconds"):
        rate += f" ({r['requests'] / r['seconds']:,.0f} req/s)"
    pcs = row.per_core_second
    text = f"{rate}, server CPU {r.get('cpu_seconds', 0):.2f} s"
    if pcs:
        text += f", {pcs:,.0f} {row.unit}/core-s"
    if r.get("errors"):
        text += f", {r['errors']} errors (e.g. {r['error_samples'][:1]})"
    return text


def table(rows: list[Row]) -> str:
    head = (
        "| scenario | server | throughput | p50 | p99 | server CPU | per core-s "
        "| vs S0 | vs peer | crypto floor | target | pass |"
    )
    lines = [head, "|" + "---|" * 12]
    for row in rows:
        r = row.result
        rate = f"{row.throughput:,.0f} {row.unit}/s"
        if row.unit != "req" and r.get("requests") and r.get("seconds"):
            rate += f" ({r['requests'] / r['seconds']:,.0f} req/s)"
        if r.get("errors"):
            rate += f", **{r['errors']} errors**"
        pcs = row.per_core_second
        target = row.target
        if row.scenario == "S5":
            target += (
                f" — {_x(r.get('of_ideal'), True)} of ideal "
                f"({r.get('sequential_imis_calls')} sequential iMIS calls × "
                f"{r.get('imis_latency_ms')} ms + {r.get('ideal_cost_seconds', 0):.2f} s server "
                f"= {r.get('ideal_seconds', 0):.2f} s; took {r.get('seconds', 0):.2f} s; "
                f"{_x(r.get('achieved_rate', 0) / (r.get('theoretical_rate') or 1), True)} of "
                f"browsers/latency = {r.get('theoretical_rate') or 0:,.0f}/s); "
                f"waited on another's iMIS call: {'yes' if r.get('waited_on_another') else 'no'}"
            )
        if row.scenario == "S7":
            target += (
                f" — max {r.get('rss_max_mb') or 0:.1f} MB, last-half growth "
                f"{r.get('rss_growth_last_half_mb') or 0:+.1f} MB over {r.get('units')} flows"
            )
        if "scale_out" in r:
            target += f" — {r['scale_out']:.2f}×"
        passed = {True: "pass", False: "**fail**", None: "–"}[row.passed]
        lines.append(
            f"| {row.scenario} | {row.server} | {rate} | {_ms(r.get('unit_p50'))} "
            f"| {_ms(r.get('unit_p99'))} | {r.get('cpu_seconds', 0):.2f} s "
            f"| {f'{pcs:,.0f} {row.unit}' if pcs else '–'} | {_x(row.vs_s0, True)} "
            f"| {_x(row.vs_peer)} | {_x(row.floor_share, True)} | {target} | {passed} |"
        )
    return "\n".join(lines)


# --- main -----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--scenarios", default=",".join(ALL), help="e.g. S0,S1,S2 (default all)")
    parser.add_argument("--duration", type=float, default=6, help="seconds per measured window")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--warmup", type=float, default=1, help="seconds before each window")
    parser.add_argument("--no-peer", action="store_true", help="skip oidc-provider")
    parser.add_argument("--s7-flows", type=int, default=100_000)
    parser.add_argument("--s5-browsers", type=int, default=1000)
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument(
        "--log-level",
        choices=("warning", "info"),
        default="warning",
        help="the bridge's log level: info adds one access line per request (the peer logs none)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes of the main bridge (S1-S7; PERFORMANCE.md measures 1)",
    )
    parser.add_argument("--out", help="JSON result file (default bench/results/<stamp>.json)")
    parser.add_argument("--profile", metavar="SCENARIO", help="py-spy the worker in its window")
    args = parser.parse_args(argv)
    wanted = [s.strip().upper() for s in args.scenarios.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in ALL]
    if unknown:
        parser.error(f"unknown scenarios {unknown}; known: {', '.join(ALL)}")
    args.scenarios = [s for s in ALL if s in wanted]
    if args.profile:
        args.profile = args.profile.upper()
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    _raise_nofile()
    children = Children()
    folder = Path(tempfile.mkdtemp(prefix="imis-bench-"))
    started = time.time()
    bench = Bench(args, folder, children)

    def on_signal(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    try:
        progress(f"floor micro-benchmarks (in-process); work folder {folder}")
        floor = floor_costs(folder)
        bench.run(args.scenarios)
    except KeyboardInterrupt:
        progress("interrupted: stopping every child")
        return 130
    finally:
        if bench.browser is not None:
            bench.browser.close()
        children.stop_all()
        if any(row.result.get("errors") for row in bench.rows):
            # Keep the servers' logs of a run with errors, to see why.
            logs = RESULTS / f"logs-{time.strftime('%Y%m%d-%H%M%S')}"
            for log in folder.rglob("*.log"):
                logs.mkdir(parents=True, exist_ok=True)
                shutil.copy(log, logs / f"{log.parent.name}-{log.name}")
            progress(f"errors: the servers' logs are in {logs}")
        if "S8" in args.scenarios or args.database == "postgresql":
            drop_pg_database()
        shutil.rmtree(folder, ignore_errors=True)
    judge(bench.rows, floor)
    info = machine_info()
    info["oidc_provider"] = bench.extra.get("peer_version", "not run")
    info["storage"] = {
        "imis-bridge": bench.storage + (" (S8: PostgreSQL)" if "S8" in args.scenarios else ""),
        "oidc-provider": "memory (Map adapter)",
        "hello world": "none",
    }
    text = table(bench.rows)
    floor_line = ", ".join(f"{k.removesuffix('_us')} {v:,.0f} µs" for k, v in floor.items())
    print(
        f"\n{text}\n\nMachine: {info['cpu']}, {info['cores']} cores; Python {info['python']}; "
        f"Node {info['node']}; oidc-provider {info['oidc_provider']}; load average "
        f"{info['load_average'][0]:.2f}. Storage: imis-bridge "
        f"{info['storage']['imis-bridge']}, oidc-provider {info['storage']['oidc-provider']}. "
        f"{args.connections} connections, {args.duration:g} s windows after {args.warmup:g} s "
        f"warm-up; {workers_text(args.workers)}; bridge log level {args.log_level}"
        f"{' (no access lines)' if args.log_level == 'warning' else ''}.\n"
        f"Floor (in-process, one call): {floor_line}. "
        "'crypto floor' = the unavoidable signature's share of the server CPU per unit "
        "(S1: one HS256 JWT, S2: one RS256 ID token); 'vs S0' compares HTTP requests per "
        "core-second (a flow is 3 requests, a sign-in 2)."
    )
    out = Path(args.out) if args.out else RESULTS / f"{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "started": started,
                "seconds": time.time() - started,
                "args": dict(vars(args).items()),
                "machine": info,
                "floor_us": floor,
                "rows": [
                    {
                        "scenario": r.scenario,
                        "server": r.server,
                        "unit": r.unit,
                        "throughput": r.throughput,
                        "per_core_second": r.per_core_second,
                        "vs_s0": r.vs_s0,
                        "vs_peer": r.vs_peer,
                        "crypto_floor_share": r.floor_share,
                        "target": r.target,
                        "passed": r.passed,
                        **r.result,
                    }
                    for r in bench.rows
                ],
                "table": text,
            },
            indent=1,
        )
    )
    progress(f"wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
