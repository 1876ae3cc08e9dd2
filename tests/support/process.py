"""Run the real ``bridge`` command in a child process, as an operator would.

``bridge_process(...)`` starts ``python -m bridge ARGS`` with standard error
written to a file (read it with :meth:`BridgeProcess.log`), waits until the
server answers ``/healthz`` and has logged ``ready`` as often as asked, and
stops it with SIGTERM (then SIGKILL) when the block ends. The child gets the
environment without any ``BRIDGE_*`` variable, plus what the test passes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.support.leaks import add_log_file

READY = "imis-bridge ready at"


@dataclass
class BridgeProcess:
    url: str
    process: subprocess.Popen[bytes]
    stderr: Path

    def log(self) -> str:
        return self.stderr.read_text(errors="replace")

    def wait_for(self, text: str, count: int = 1, timeout: float = 30) -> str:
        """The log, once ``text`` appears ``count`` times in it (else AssertionError)."""
        deadline = time.monotonic() + timeout
        while self.log().count(text) < count:
            if self.process.poll() is not None:
                raise AssertionError(f"bridge exited ({self.process.returncode}):\n{self.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not logged {count} time(s):\n{self.log()}")
            time.sleep(0.05)
        return self.log()


def child_env(extra: Mapping[str, str] = {}) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    env.update(extra)
    return env


@contextmanager
def bridge_process(
    tmp_path: Path,
    port: int,
    *args: str,
    env: Mapping[str, str] = {},
    ready_count: int = 1,
    timeout: float = 90,
    wrapper: Sequence[str] = (),
) -> Iterator[BridgeProcess]:
    """Run ``bridge ARGS`` (a server on 127.0.0.1:``port``) until the block ends.

    ``wrapper``: a command that ends by exec'ing its arguments (so the process stays
    the bridge's), put before ``python -m bridge ARGS``."""
    stderr = tmp_path / f"bridge-{port}.log"
    add_log_file(stderr)  # checked for secrets at the end of the run
    with stderr.open("wb") as sink:
        process = subprocess.Popen(
            [*wrapper, sys.executable, "-m", "bridge", *args],
            stdout=subprocess.DEVNULL,
            stderr=sink,
            env=child_env(env),
        )
    running = BridgeProcess(f"http://127.0.0.1:{port}", process, stderr)
    try:
        running.wait_for(READY, ready_count, timeout=timeout)
        _wait_healthy(running, timeout)
        yield running
    finally:
        _stop(process)


def _wait_healthy(running: BridgeProcess, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{running.url}/healthz", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if running.process.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"bridge did not answer /healthz:\n{running.log()}")
        time.sleep(0.1)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
