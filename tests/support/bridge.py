"""A real bridge on a loopback port, with the iMIS simulator as its own server.

``running_bridge(...)`` writes a configuration folder (bridge.toml plus the given
registration files), starts the iMIS simulator and the bridge each on a free
127.0.0.1 port, and yields a :class:`Harness` to drive them over HTTP. The
simulator's fault controls are reached over HTTP too (``/_sim/...``), so tests
need no monkeypatching.
"""

from __future__ import annotations

import json
import re
import textwrap
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bridge.app import create_app
from bridge.demo.simulator import create_simulator
from bridge.settings import Settings, load_settings
from tests.support.leaks import register, register_response
from tests.support.process import BridgeProcess, bridge_process
from tests.support.servers import free_port, serve

SERVICE_USER = "bridge-service"
SERVICE_PASSWORD = "service-password1"
register(SERVICE_PASSWORD)


@dataclass
class Harness:
    url: str
    imis_url: str
    config_dir: Path
    settings: Settings
    app: Any

    def client(self, **kwargs: Any) -> httpx.Client:
        kwargs.setdefault("follow_redirects", False)
        kwargs.setdefault("timeout", 30)
        kwargs.setdefault("verify", False)  # plain http on loopback; skips building a TLS context
        # Cookies, codes and tokens it receives: no log line may hold them (SECURITY D6).
        kwargs.setdefault("event_hooks", {"response": [register_response]})
        return httpx.Client(base_url=self.url, **kwargs)

    def set_faults(self, **faults: Any) -> None:
        httpx.post(f"{self.imis_url}/_sim/faults", json=faults, timeout=10).raise_for_status()

    def clear_faults(self) -> None:
        httpx.delete(f"{self.imis_url}/_sim/faults", timeout=10).raise_for_status()

    def imis_stats(self) -> dict[str, Any]:
        response = httpx.get(f"{self.imis_url}/_sim/stats", timeout=10)
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data

    @property
    def services(self) -> Any:
        return self.app.state.services


def portal_registration(
    secret: str,
    callback: str = "https://portal.example.org/callback",
    scopes: Sequence[str] = ("openid", "profile", "email", "offline_access"),
) -> str:
    """The registration file of the member portal (OIDC, client_id ``portal``)."""
    return f"""
        name = "Member Portal"
        profile = "oidc"
        client_id = "portal"
        client_secret = "{secret}"
        redirect_uris = ["{callback}"]
        scopes = {json.dumps(list(scopes))}
    """


def helpdesk_registration(secret: str, subdomain: str = "contoso") -> str:
    """The registration file of a Zendesk help desk (slug usually ``helpdesk``)."""
    return f"""
        name = "Contoso Helpdesk"
        profile = "zendesk"
        subdomain = "{subdomain}"
        shared_secret = "{secret}"
    """


def write_config(
    folder: Path,
    *,
    issuer: str,
    database_url: str,
    imis_url: str,
    registrations: Mapping[str, str] = {},
    extra: str = "",
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "registrations").mkdir(exist_ok=True)
    (folder / "bridge.toml").write_text(
        textwrap.dedent(
            f"""\
            issuer = {json.dumps(issuer)}
            database_url = {json.dumps(database_url)}
            keys_dir = "keys"
            log_level = "info"
            """
        )
        + _section_merge(
            extra,
            {
                "imis": {
                    "base_url": imis_url,
                    "service_username": SERVICE_USER,
                    "service_password": SERVICE_PASSWORD,
                },
                "admin": {"users": ["manager"]},
                "ui": {"organization_name": "Contoso Association"},
            },
        )
    )
    for slug, text in registrations.items():
        (folder / "registrations" / f"{slug}.toml").write_text(textwrap.dedent(text))
    return folder


def _section_merge(extra: str, defaults: Mapping[str, Mapping[str, Any]]) -> str:
    """Append ``extra`` TOML after default sections, letting ``extra`` add keys to them."""
    extra = textwrap.dedent(extra)
    top_lines: list[str] = []
    sections: dict[str, list[str]] = {}
    current: list[str] = top_lines
    for line in extra.splitlines():
        header = re.match(r"^\[([a-z_]+)\]\s*$", line.strip())
        if header:
            current = sections.setdefault(header.group(1), [])
        elif line.strip():
            current.append(line)
    out = top_lines[:]
    for name in sorted(set(defaults) | set(sections)):
        given = sections.get(name, [])
        given_keys = {line.split("=", 1)[0].strip() for line in given}
        out.append(f"[{name}]")
        for key, value in defaults.get(name, {}).items():
            if key not in given_keys:
                out.append(f"{key} = {json.dumps(value)}")
        out.extend(given)
    return "\n".join(out) + "\n"


@contextmanager
def served_bridge(
    logs: Path, config: Path, port: int, imis_url: str, *, env: Mapping[str, str] = {}
) -> Iterator[tuple[Harness, BridgeProcess]]:
    """``bridge serve`` in a process of its own on ``config``, listening on ``port`` (its
    log in ``logs``, ``env`` added to its environment and read by its settings here too)."""
    args = ("serve", "--config", str(config), "--port", str(port))
    with bridge_process(logs, port, *args, env=env) as process:
        settings = load_settings(config, env=env)
        yield Harness(f"http://127.0.0.1:{port}", imis_url, config, settings, None), process


@contextmanager
def running_bridge(
    tmp_path: Path,
    database_url: str,
    *,
    registrations: Mapping[str, str] = {},
    extra: str = "",
    people: Any = None,
    latency_ms: int = 0,
) -> Iterator[Harness]:
    """Start the iMIS simulator and a bridge; yields the harness."""
    with ExitStack() as stack:
        simulator = create_simulator(people, latency_ms=latency_ms)
        imis_url = stack.enter_context(serve(simulator))
        port = free_port()
        issuer = f"http://127.0.0.1:{port}"
        config_dir = write_config(
            tmp_path / "config",
            issuer=issuer,
            database_url=database_url,
            imis_url=imis_url,
            registrations=registrations,
            extra=extra,
        )
        # allow_demo: the Zendesk tests point zendesk_base_url at a demo Zendesk.
        settings = load_settings(config_dir, env={}, allow_demo=True)
        app = create_app(settings)
        url = stack.enter_context(serve(app, port=port))
        yield Harness(url=url, imis_url=imis_url, config_dir=config_dir, settings=settings, app=app)


_HIDDEN = re.compile(r'<input[^>]*type="hidden"[^>]*name="([^"]+)"[^>]*value="([^"]*)"', re.I)


def hidden_fields(html: str) -> dict[str, str]:
    """The hidden inputs of a page (CSRF token, pending request id)."""
    import html as html_lib

    return {name: html_lib.unescape(value) for name, value in _HIDDEN.findall(html)}


def sign_in(
    browser: httpx.Client, start: str, username: str, password: str = "password1"
) -> httpx.Response:
    """Follow ``start`` like a browser through the login form; returns the first response
    that is neither our login page nor a redirect inside the bridge (e.g. the redirect to
    the client with a code, or an error page)."""
    register(password)
    hooks = browser.event_hooks
    if register_response not in hooks["response"]:
        browser.event_hooks = {**hooks, "response": [*hooks["response"], register_response]}
    response = browser.get(start)
    for _ in range(10):
        location = response.headers.get("location", "")
        if response.status_code in (302, 303) and location.startswith(("/", str(browser.base_url))):
            path = location.removeprefix(str(browser.base_url).rstrip("/"))
            if path.startswith("/login"):
                page = browser.get(path)
                fields = hidden_fields(page.text)
                response = browser.post(
                    "/login", data={**fields, "username": username, "password": password}
                )
                continue
            response = browser.get(path)
            continue
        return response
    raise AssertionError("too many redirects inside the bridge")
