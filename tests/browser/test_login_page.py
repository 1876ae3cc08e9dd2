"""The sign-in page in a real Chromium: filled in and sent with the keyboard only.

Also writes screenshots (desktop, phone, an error) to ``screenshots/`` so a
person can look at what members see.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, expect

from tests.routes.test_login import PORTAL, UI, create_pending
from tests.support.bridge import Harness, running_bridge

pytestmark = pytest.mark.browser

DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


@pytest.fixture
def bridge(tmp_path: Path, database_factory: Any) -> Iterator[Harness]:
    url = database_factory.migrated_url()
    with running_bridge(tmp_path, url, registrations={"member-portal": PORTAL}, extra=UI) as h:
        yield h


def test_member_signs_in_with_the_keyboard(
    bridge: Harness, browser: Browser, screenshots: Path
) -> None:
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()

    pending = create_pending(bridge)
    page.goto(f"{bridge.url}/login?request={pending.raw_id}")
    expect(page.get_by_role("heading", level=1)).to_have_text("Sign in to Member Portal")
    expect(page.get_by_label("Username")).to_be_focused()
    page.screenshot(path=screenshots / "login-desktop.png", full_page=True)

    page.keyboard.type("jdoe")
    page.keyboard.press("Tab")
    expect(page.get_by_label("Password")).to_be_focused()
    page.keyboard.type("not-my-password")
    page.keyboard.press("Enter")
    expect(page.get_by_role("alert")).to_have_text("The username or password is incorrect.")
    expect(page.get_by_label("Username")).to_have_value("jdoe")
    expect(page.get_by_label("Password")).to_have_value("")
    expect(page.get_by_label("Password")).to_be_focused()
    page.screenshot(path=screenshots / "login-error.png", full_page=True)

    phone = browser.new_context(viewport=PHONE, is_mobile=True, device_scale_factor=2)
    small = phone.new_page()
    small.goto(f"{bridge.url}/login?request={create_pending(bridge, login_hint='jdoe').raw_id}")
    expect(small.get_by_label("Username")).to_have_value("jdoe")
    small.screenshot(path=screenshots / "login-phone.png", full_page=True)
    phone.close()

    # The bridge's own sign-in: no app, so it ends on the signed-in page.
    page.goto(f"{bridge.url}/login")
    # autofocus lands a moment after "load": typing before it would go nowhere
    expect(page.get_by_label("Username")).to_be_focused()
    page.keyboard.type("jdoe")
    page.keyboard.press("Tab")
    expect(page.get_by_label("Password")).to_be_focused()
    page.keyboard.type("password1")
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", level=1)).to_have_text("Hello, Jane")
    expect(page.get_by_text("You are signed in as Jane Doe")).to_be_visible()
    page.screenshot(path=screenshots / "signed-in.png", full_page=True)

    page.get_by_role("button", name="Sign out").focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", level=1)).to_have_text("You are signed out")
    page.screenshot(path=screenshots / "signed-out.png", full_page=True)
    context.close()
