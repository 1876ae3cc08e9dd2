"""Sign-in and sign-out in Chromium with the app on another origin (SECURITY D7).

The relying party runs on ``http://localhost:PORT1`` and the bridge on
``http://127.0.0.1:PORT2``, as in every real deployment. Chromium applies the
page's CSP ``form-action`` to the redirects that follow a form submission, so
a sign-in page that allowed only ``'self'`` kept members on it after a correct
password. Each flow must land on the app's page with no CSP error in the
console. Also: a browser-based public client calls ``/token`` and
``/userinfo`` with ``fetch()`` from its listed origin, and an unlisted origin is
blocked by CORS.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, expect

from tests.support.accessibility import assert_accessible
from tests.support.bridge import Harness, running_bridge
from tests.support.relying_party import (
    RelyingParty,
    new_relying_party,
    running_relying_party,
)

pytestmark = pytest.mark.browser

#: Long enough for a loaded machine, short enough that a blocked flow fails soon.
LANDING_MS = 15_000


@pytest.fixture(scope="module")
def app_and_bridge(
    tmp_path_factory: pytest.TempPathFactory, database_url: str
) -> Iterator[tuple[RelyingParty, Harness]]:
    rp = new_relying_party()
    registrations = {
        "cross-origin-app": rp.web_registration,
        "cross-origin-spa": rp.spa_registration(),
    }
    tmp: Path = tmp_path_factory.mktemp("cross-origin")
    with (
        running_bridge(tmp, database_url, registrations=registrations) as bridge,
        running_relying_party(bridge.url, rp),
    ):
        yield rp, bridge


@pytest.fixture
def rp(app_and_bridge: tuple[RelyingParty, Harness]) -> RelyingParty:
    return app_and_bridge[0]


@pytest.fixture
def bridge(app_and_bridge: tuple[RelyingParty, Harness]) -> Harness:
    return app_and_bridge[1]


class Watched:
    """A page, plus every console error and every URL its main frame visited."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.errors: list[str] = []
        self.visited: list[str] = []
        page.on("console", self._console)
        page.on("framenavigated", self._navigated)

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(message.text)

    def _navigated(self, frame: Any) -> None:
        if frame == self.page.main_frame:
            self.visited.append(frame.url)

    def csp_errors(self) -> list[str]:
        return [e for e in self.errors if "Content Security Policy" in e]


@pytest.fixture
def member(browser: Browser) -> Iterator[Watched]:
    context = browser.new_context()
    yield Watched(context.new_page())
    context.close()


def login_page(bridge: Harness) -> re.Pattern[str]:
    return re.compile(rf"^{re.escape(bridge.url)}/login\?request=")


def sign_in_with_password(member: Watched, bridge: Harness, start: str) -> None:
    page = member.page
    page.goto(start)
    expect(page).to_have_url(login_page(bridge))
    assert_accessible(page)
    page.fill("#username", "jdoe")
    page.fill("#password", "password1")
    page.click("button[type=submit]")


def expect_signed_in_at_rp(member: Watched, rp: RelyingParty) -> None:
    expect(member.page).to_have_url(f"{rp.url}/", timeout=LANDING_MS)
    expect(member.page.locator("#status")).to_have_text("Signed in as Jane Doe")


def test_first_sign_in_with_a_password_lands_on_the_app(
    rp: RelyingParty, bridge: Harness, member: Watched, screenshots: Path
) -> None:
    sign_in_with_password(member, bridge, f"{rp.url}/login")
    expect_signed_in_at_rp(member, rp)
    assert member.csp_errors() == []
    member.page.screenshot(path=screenshots / "cross-origin-signed-in.png")


def test_returning_session_skips_the_sign_in_page(
    rp: RelyingParty, bridge: Harness, member: Watched
) -> None:
    sign_in_with_password(member, bridge, f"{rp.url}/login")
    expect_signed_in_at_rp(member, rp)
    member.page.context.clear_cookies(name="rp-session")  # signed out of the app only
    member.visited.clear()

    member.page.goto(f"{rp.url}/login")
    expect_signed_in_at_rp(member, rp)
    assert not [u for u in member.visited if u.startswith(f"{bridge.url}/login")]
    assert member.csp_errors() == []


def test_prompt_login_asks_for_the_password_again_and_lands_on_the_app(
    rp: RelyingParty, bridge: Harness, member: Watched
) -> None:
    sign_in_with_password(member, bridge, f"{rp.url}/login")
    expect_signed_in_at_rp(member, rp)

    sign_in_with_password(member, bridge, f"{rp.url}/login?prompt=login")
    expect_signed_in_at_rp(member, rp)
    assert member.csp_errors() == []


def test_rp_initiated_logout_with_confirmation_lands_on_the_app(
    rp: RelyingParty, bridge: Harness, member: Watched, screenshots: Path
) -> None:
    sign_in_with_password(member, bridge, f"{rp.url}/login")
    expect_signed_in_at_rp(member, rp)

    # Without an ID token the bridge cannot tell who asked, so it asks the person.
    member.page.goto(f"{rp.url}/logout?hint=no")
    expect(member.page.get_by_role("heading", level=1)).to_have_text("Sign out?")
    assert member.page.url.startswith(f"{bridge.url}/end_session?")
    member.page.screenshot(path=screenshots / "cross-origin-logout-confirm.png")
    assert_accessible(member.page)
    member.page.get_by_role("button", name="Sign out").click()
    expect(member.page).to_have_url(f"{rp.url}/signed-out?state=bye", timeout=LANDING_MS)
    assert member.csp_errors() == []

    # Signed out at the bridge too: the next sign-in asks for the password.
    member.page.goto(f"{rp.url}/login")
    expect(member.page).to_have_url(login_page(bridge))


def test_rp_initiated_logout_with_id_token_hint_needs_no_confirmation(
    rp: RelyingParty, bridge: Harness, member: Watched
) -> None:
    sign_in_with_password(member, bridge, f"{rp.url}/login")
    expect_signed_in_at_rp(member, rp)
    member.page.goto(f"{rp.url}/logout")
    expect(member.page).to_have_url(f"{rp.url}/signed-out?state=bye", timeout=LANDING_MS)
    assert member.csp_errors() == []


def test_browser_app_calls_token_and_userinfo_from_its_listed_origin(
    rp: RelyingParty, bridge: Harness, member: Watched
) -> None:
    """A public client in the page: PKCE in script, the code redeemed with fetch() (CORS)."""
    sign_in_with_password(member, bridge, f"{rp.url}/spa/")
    status = member.page.locator("#status")
    expect(status).to_have_text("signed in as Jane Doe", timeout=LANDING_MS)
    assert member.page.url.startswith(f"{rp.url}/spa/?code=")
    assert member.errors == []

    # The same page on an origin the registration does not list is blocked.
    token = member.page.evaluate("window.accessToken")
    unlisted = rp.url.replace("localhost", "127.0.0.1")
    member.page.goto(f"{unlisted}/spa/call?token={token}")
    expect(member.page.locator("#userinfo")).to_have_text(
        "blocked: TypeError: Failed to fetch", timeout=LANDING_MS
    )
    expect(member.page.locator("#token")).to_have_text("blocked: TypeError: Failed to fetch")
    assert any("CORS policy" in e for e in member.errors)

    # From the listed origin the same calls are read.
    member.page.goto(f"{rp.url}/spa/call?token={token}")
    expect(member.page.locator("#userinfo")).to_have_text("read: Jane Doe", timeout=LANDING_MS)
    # A refused refresh, but its error is readable by the page.
    expect(member.page.locator("#token")).to_have_text(re.compile(r"^read: [a-z_]+$"))
