"""Debian's nginx in front of bridges, from the configuration the project ships (deploy/nginx.conf).

:func:`render_config` rewrites deploy/nginx.conf for a test: the upstream
servers, the listen ports, the certificate and every path nginx writes become the
test's own; each rewrite must match the file exactly as often as expected, so
the test fails when the shipped file changes shape instead of silently testing
something else. Everything else (timeouts, retries, headers, limits) is tested
as shipped. :func:`nginx_process` runs it in the foreground (not a daemon) with
its own prefix, pid file and logs, and always stops it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

SHIPPED = Path(__file__).resolve().parents[2] / "deploy" / "nginx.conf"
#: Debian's package puts the binary here (not on a non-root PATH).
CANDIDATES = ("/usr/sbin/nginx", "/usr/bin/nginx")


def nginx_binary() -> str | None:
    found = shutil.which("nginx")
    return found or next((c for c in CANDIDATES if os.access(c, os.X_OK)), None)


@dataclass(frozen=True)
class NginxPorts:
    https: int
    http: int


def _replace(text: str, old: str, new: str, count: int = 1) -> str:
    found = text.count(old)
    assert found == count, f"deploy/nginx.conf: {old!r} found {found} time(s), expected {count}"
    return text.replace(old, new)


def render_config(
    prefix: Path,
    *,
    upstreams: tuple[int, int],
    ports: NginxPorts,
    cert: Path,
    key: Path,
    user: str | None,
) -> str:
    """deploy/nginx.conf for ``prefix``: bridges on 127.0.0.1:``upstreams``, TLS on
    127.0.0.1:``ports.https``, the redirect on ``ports.http``; logs in ``prefix``."""
    text = SHIPPED.read_text()
    text = _replace(text, "user nginx;", f"user {user};" if user else "")
    text = _replace(text, "pid /tmp/nginx.pid;", f"pid {prefix / 'nginx.pid'};")
    text = _replace(text, "error_log /dev/stderr warn;", f"error_log {prefix / 'error.log'} info;")
    text = _replace(
        text, "access_log /dev/stdout bridge;", f"access_log {prefix / 'access.log'} bridge;"
    )
    for name, port in zip(("bridge-a", "bridge-b"), upstreams, strict=True):
        text = _replace(text, f"server {name}:8000 ", f"server 127.0.0.1:{port} ")
    text = _replace(text, "listen 80;", f"listen 127.0.0.1:{ports.http};")
    text = _replace(text, "listen 443 ssl;", f"listen 127.0.0.1:{ports.https} ssl;")
    text = _replace(text, "/etc/nginx/tls/fullchain.pem", str(cert))
    text = _replace(text, "/etc/nginx/tls/privkey.pem", str(key))
    # Debian's build writes temporary files under /var/lib/nginx: keep them here.
    temp = "".join(
        f"    {kind}_temp_path {prefix / 'temp' / kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return _replace(text, "http {\n", "http {\n" + temp)


@dataclass
class NginxProcess:
    process: subprocess.Popen[bytes]
    prefix: Path

    @property
    def access_log(self) -> Path:
        return self.prefix / "access.log"

    @property
    def error_log(self) -> Path:
        return self.prefix / "error.log"


def _wait_listening(port: int, process: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            text = log.read_text(errors="replace") if log.exists() else ""
            raise AssertionError(f"nginx did not listen on {port}:\n{text}")
        time.sleep(0.05)


@contextmanager
def nginx_process(
    prefix: Path, config: str, port: int, timeout: float = 20
) -> Iterator[NginxProcess]:
    """Run nginx in the foreground on ``config`` (from :func:`render_config`) until the
    block ends; waits until ``port`` accepts connections."""
    binary = nginx_binary()
    assert binary, "nginx is not installed"
    (prefix / "temp").mkdir(parents=True, exist_ok=True)
    conf = prefix / "nginx.conf"
    conf.write_text(config)
    startup = prefix / "startup.log"
    check = subprocess.run(
        [binary, "-t", "-q", "-p", str(prefix), "-c", str(conf), "-e", str(startup)],
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    assert check.returncode == 0, check.stderr.decode(errors="replace")
    with startup.open("ab") as sink:
        process = subprocess.Popen(
            [binary, "-p", str(prefix), "-c", str(conf), "-e", str(startup), "-g", "daemon off;"],
            stdout=subprocess.DEVNULL,
            stderr=sink,
        )
    try:
        _wait_listening(port, process, startup, timeout)
        yield NginxProcess(process, prefix)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGQUIT)  # graceful: finish requests in flight
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
