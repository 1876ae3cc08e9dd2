"""deploy/compose.yaml, read as Compose would (there is no Docker engine here to run it).

The file is parsed as YAML (merge keys included) and its structure checked: the
services the deployment promises, bridge containers with a read-only root, a
tmpfs /tmp, a volume at /data and the configuration from secrets, nothing
published but nginx, nginx's upstream names matching the services, the
forwarded-header trust pointing at nginx's fixed address, and no secret written
in the file itself (every secret is a git-ignored file).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
BRIDGES = ("bridge-a", "bridge-b")
#: Environment names that would hold a secret; only a *_FILE pointer to one is allowed.
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|PRIVATE|_KEY$|KEK", re.IGNORECASE)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return data


def test_the_deployment_has_postgres_two_bridges_and_nginx(compose: dict[str, Any]) -> None:
    assert {"postgres", "migrate", *BRIDGES, "nginx"} <= set(compose["services"])


@pytest.mark.parametrize("name", BRIDGES)
def test_bridge_containers_run_read_only_from_the_repositorys_dockerfile(
    compose: dict[str, Any], name: str
) -> None:
    bridge = compose["services"][name]
    assert (DEPLOY / bridge["build"]["context"] / bridge["build"]["dockerfile"]).resolve() == (
        ROOT / "Dockerfile"
    )
    assert bridge["read_only"] is True
    assert any(t.split(":")[0] == "/tmp" for t in bridge["tmpfs"])
    assert any(v.split(":")[1] == "/data" for v in bridge["volumes"])
    assert "ports" not in bridge, "only nginx is published"
    targets = {s["target"] for s in bridge["secrets"]}
    assert "/config/bridge.toml" in targets
    assert any(t.startswith("/config/registrations/") for t in targets)
    assert bridge["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert bridge["cap_drop"] == ["ALL"]


def test_bridges_trust_forwarded_headers_from_nginx_only(compose: dict[str, Any]) -> None:
    nginx_address = compose["services"]["nginx"]["networks"]["edge"]["ipv4_address"]
    for name in BRIDGES:
        command = compose["services"][name]["command"]
        assert command[command.index("--forwarded-allow-ips") + 1] == nginx_address


def test_nginx_runs_the_shipped_configuration_against_the_two_services(
    compose: dict[str, Any],
) -> None:
    nginx = compose["services"]["nginx"]
    [conf] = [c for c in nginx["configs"] if c["target"] == "/etc/nginx/nginx.conf"]
    assert (DEPLOY / compose["configs"][conf["source"]]["file"]).resolve() == (
        DEPLOY / "nginx.conf"
    )
    text = (DEPLOY / "nginx.conf").read_text()
    upstreams = set(re.findall(r"^\s*server\s+([\w.-]+):8000\b", text, re.MULTILINE))
    assert upstreams == set(BRIDGES)
    targets = {s["target"] for s in nginx["secrets"]}
    for path in re.findall(r"ssl_certificate(?:_key)?\s+(\S+);", text):
        assert path in targets, path
    assert nginx["read_only"] is True
    assert {p.split(":")[-1] for p in nginx["ports"]} == {"80", "443"}


def test_no_secret_is_written_in_the_compose_file(compose: dict[str, Any]) -> None:
    for name, secret in compose["secrets"].items():
        assert set(secret) == {"file"}, f"secret {name} must come from a file"
        path = (DEPLOY / secret["file"]).resolve()
        ignored = subprocess.run(
            ["git", "check-ignore", "-q", str(path.relative_to(ROOT))], cwd=ROOT, check=False
        )
        assert ignored.returncode == 0, f"{secret['file']} is not git-ignored"
    for service_name, service in compose["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if SECRET_NAME.search(key):
                assert key.endswith("_FILE"), f"{service_name}: {key} is a secret written inline"
                assert str(value).startswith("/run/secrets/"), f"{service_name}: {key}"
            assert not re.search(r"://[^/@\s]+:[^/@\s]+@", str(value)), f"{service_name}: {key}"
    text = (DEPLOY / "compose.yaml").read_text()
    assert not re.search(r"://[^/@\s]+:[^/@\s]+@", text), "a URL with a password"
