"""``bridge demo`` as a person runs it: the bridge, and the demo client on its own origin."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.support.servers import free_port


def test_bridge_demo_serves_the_client_on_its_own_port_and_stops_on_ctrl_c(
    tmp_path: Path,
) -> None:
    port, client_port = free_port(), free_port()
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "bridge", "demo", "--port", str(port)),
            *("--client-port", str(client_port), "--dir", str(tmp_path / "demo")),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        client = f"http://127.0.0.1:{client_port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                home = httpx.get(f"{client}/", timeout=2)
                discovery = httpx.get(
                    f"http://127.0.0.1:{port}/.well-known/openid-configuration", timeout=2
                )
                break
            except httpx.TransportError:
                assert process.poll() is None, process.communicate()
                assert time.monotonic() < deadline, "bridge demo did not start"
                time.sleep(0.2)
        assert home.status_code == 200
        assert "Demo Member Portal" in home.text
        assert discovery.status_code == 200
        # The client is no longer mounted on the bridge's origin.
        assert httpx.get(f"http://127.0.0.1:{port}/_demo/client/").status_code == 404
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert f"Demo OIDC client      http://localhost:{client_port}/" in out
    assert "Traceback" not in err
