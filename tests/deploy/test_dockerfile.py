"""The Dockerfile's image: non-root, no build tools, and nothing written outside /data and /tmp.

There is no Docker engine here, so the image is not built. Its final stage is read
instead, and what it promises is checked on the real command: ``bridge serve
--workers 2`` runs with the image's environment (``/data`` and ``/tmp`` mapped to
two folders of the test) in a mount namespace whose root filesystem is read-only
but for those two folders, as ``read_only: true`` with a /data volume and a /tmp
tmpfs makes it. It must start, create its keys and SQLite database under /data,
sign a member in and answer a metrics scrape (multiprocess files under /tmp).
"""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bridge.demo.simulator import create_simulator
from tests.support.bridge import hidden_fields, write_config
from tests.support.process import bridge_process
from tests.support.servers import free_port, serve

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "password1"  # the simulator's demo people
#: Bind /data and /tmp's stand-ins onto themselves (their own mounts), make the root
#: mount read-only, then become the bridge (exec: the pid stays the bridge's).
READ_ONLY_ROOT = (
    'mount --bind "$1" "$1" && mount --bind "$2" "$2" && mount -o remount,bind,ro / '
    '&& shift 2 && exec "$@"'
)


def final_stage() -> list[tuple[str, str]]:
    """The instructions after the last FROM, as (INSTRUCTION, arguments); continuations joined."""
    text = (ROOT / "Dockerfile").read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = "\n".join(lines).replace("\\\n", " ")
    instructions = [
        (parts[0].upper(), parts[1] if len(parts) > 1 else "")
        for line in joined.splitlines()
        if (parts := line.strip().split(None, 1))
    ]
    last_from = max(i for i, (word, _) in enumerate(instructions) if word == "FROM")
    return instructions[last_from:]


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for word, args in final_stage():
        if word == "ENV":
            for item in shlex.split(args):
                name, _, value = item.partition("=")
                env[name] = value
    return env


def test_the_image_runs_as_a_non_root_user() -> None:
    [user] = [args for word, args in final_stage() if word == "USER"]
    uid = user.split(":")[0]
    assert uid.isdigit(), "a numeric uid: Kubernetes' runAsNonRoot can check it"
    assert int(uid) != 0


def test_the_image_keeps_no_build_tools_and_writes_no_bytecode() -> None:
    runs = " ".join(args for word, args in final_stage() if word == "RUN")
    assert "apt-get install" not in runs
    assert "pip uninstall --yes pip setuptools wheel" in runs
    assert "compileall" in runs
    env = image_env()
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["BRIDGE_KEYS_DIR"].startswith("/data/")
    assert env["TMPDIR"] == "/tmp"
    assert env["HOME"] == "/nonexistent"
    [copy] = [args for word, args in final_stage() if word == "COPY"]
    assert copy.startswith("--from=build"), "only the built environment is copied in"


def mapped(value: str, folders: dict[str, Path]) -> str:
    """``value`` with a leading image folder replaced by the test's stand-in for it."""
    for folder, stand_in in folders.items():
        if value == folder or value.startswith(f"{folder}/"):
            return str(stand_in) + value.removeprefix(folder)
    return value


@pytest.fixture
def imis_url() -> Iterator[str]:
    with serve(create_simulator()) as url:
        yield url


def can_make_a_read_only_root() -> bool:
    try:
        probe = subprocess.run(
            [
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                "mount -o remount,bind,ro / && ! touch /.read-only-probe 2>/dev/null",
            ],
            capture_output=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


@pytest.mark.slow
def test_bridge_serve_runs_on_a_read_only_root_with_the_images_environment(
    tmp_path: Path, imis_url: str
) -> None:
    if not can_make_a_read_only_root():
        pytest.skip("cannot make a read-only root here (unshare --mount needs CAP_SYS_ADMIN)")
    data, tmp = tmp_path / "data", tmp_path / "tmp"
    data.mkdir()
    tmp.mkdir()
    port = free_port()
    config = write_config(
        tmp_path / "config",
        issuer=f"http://127.0.0.1:{port}",
        database_url=f"sqlite:///{data / 'bridge.db'}",  # the image's advice: under /data
        imis_url=imis_url,
    )
    env = {
        name: mapped(value, {"/data": data, "/tmp": tmp})
        for name, value in image_env().items()
        if name != "PATH"  # the image's venv is this test's interpreter
    }
    wrapper = ["unshare", "--mount", "--propagation", "private", "sh", "-c", READ_ONLY_ROOT]
    args = ("serve", "--config", str(config), "--port", str(port), "--workers", "2")
    logs = tmp_path / "logs"
    logs.mkdir()
    with bridge_process(
        logs, port, *args, env=env, ready_count=2, wrapper=[*wrapper, "sh", str(data), str(tmp)]
    ) as running:
        with httpx.Client(base_url=running.url, timeout=30) as browser:
            form = hidden_fields(browser.get("/login").text)
            signed = {**form, "username": "jdoe", "password": PASSWORD}
            welcome = browser.post("/login", data=signed)
            assert welcome.status_code == 303, welcome.text
            scrape = browser.get("/metrics")
            assert scrape.status_code == 200
            assert "bridge_imis_request_duration_seconds_count" in scrape.text
        # The workers' metrics files: in a private folder under TMPDIR (removed at exit).
        assert [p.name for p in tmp.iterdir() if p.name.startswith("bridge-metrics-")]
        log = running.log()
    assert "Read-only file system" not in log, log
    assert "Traceback" not in log, log
    assert (data / "keys").is_dir()
    assert (data / "bridge.db").is_file()
