"""Fixtures of the admin tests: a bridge with a file registration, signed-in browsers, a clock.

The bridge runs on a loopback port (``running_bridge``) with its own migrated
database, so the audit trail and the stored registrations are this module's
alone. ``[admin] users`` lists ``MANAGER``: the simulator's ``manager`` gets in
(usernames compare without regard to case), ``jdoe`` does not. The admin's
clock (``bridge.admin.auth.clock``) is replaced by :class:`Clock`, which the
idle and step-up tests move forward.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from html import unescape
from pathlib import Path

import httpx
import pytest

from bridge.admin import auth
from tests.conftest import DatabaseFactory
from tests.support.bridge import Harness, hidden_fields, running_bridge, sign_in

PORTAL = """
name = "Member Portal"
profile = "oidc"
client_id = "portal"
client_secret = "portal-file-secret-0123456789"
redirect_uris = ["https://portal.example.org/callback"]
"""
ADMIN_CONFIG = """
[admin]
users = ["MANAGER"]
"""


class Clock:
    """The admin's clock: real time plus an offset the test moves."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@pytest.fixture(scope="module")
def bridge(
    tmp_path_factory: pytest.TempPathFactory, database_factory: DatabaseFactory
) -> Iterator[Harness]:
    tmp: Path = tmp_path_factory.mktemp("admin")
    with running_bridge(
        tmp,
        database_factory.migrated_url(),
        registrations={"portal": PORTAL},
        extra=ADMIN_CONFIG,
    ) as harness:
        yield harness


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(auth, "clock", fake)
    return fake


@contextmanager
def admin_browser(bridge: Harness, username: str = "manager") -> Iterator[httpx.Client]:
    """A browser signed in to the admin (through the bridge's sign-in page)."""
    with bridge.client() as browser:
        response = sign_in(browser, "/admin", username)
        assert response.status_code == 200, response.text
        yield browser


@pytest.fixture
def admin(bridge: Harness) -> Iterator[httpx.Client]:
    with admin_browser(bridge) as browser:
        yield browser


def csrf_of(browser: httpx.Client, path: str) -> str:
    """The CSRF token of the form on ``path`` (a GET that must answer 200)."""
    page = browser.get(path)
    assert page.status_code == 200, (path, page.status_code, page.text[:500])
    return hidden_fields(page.text)["csrf_token"]


def post_form(browser: httpx.Client, path: str, data: dict[str, str]) -> httpx.Response:
    """Send the form on ``path`` as a browser would: its CSRF token with ``data``."""
    return browser.post(path, data={"csrf_token": csrf_of(browser, path), **data})


def follow_sign_in(
    browser: httpx.Client, response: httpx.Response, username: str = "manager"
) -> httpx.Response:
    """From a redirect to the sign-in page: enter the password, follow back to the admin."""
    assert response.status_code == 303, (response.status_code, response.text[:300])
    location = response.headers["location"]
    assert location.startswith("/login?request="), location
    form = browser.get(location)
    assert 'name="password"' in form.text  # asked for the password, even with a session
    done = browser.post(
        "/login",
        data={**hidden_fields(form.text), "username": username, "password": "password1"},
    )
    return sign_in(browser, done.headers["location"], username)


def text_of(html: str) -> str:
    """The page's text, tags removed (for assertions on what a person reads)."""
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", html)))
