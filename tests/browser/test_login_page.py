"""The sign-in page in a real Chromium: filled in and sent with the keyboard only.

Focus rings and input borders are checked for 3:1 contrast (WCAG 1.4.11), and
every page for axe-core's serious and critical rules. Also writes screenshots
(desktop, phone, an error) to ``screenshots/`` so a person can look at what
members see.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, expect

from tests.routes.test_login import PORTAL, UI, create_pending
from tests.support.accessibility import assert_accessible, non_text_contrast
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
    assert_accessible(page)

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
    assert_accessible(page)

    phone = browser.new_context(viewport=PHONE, is_mobile=True, device_scale_factor=2)
    small = phone.new_page()
    small.goto(f"{bridge.url}/login?request={create_pending(bridge, login_hint='jdoe').raw_id}")
    expect(small.get_by_label("Username")).to_have_value("jdoe")
    small.screenshot(path=screenshots / "login-phone.png", full_page=True)
    assert_accessible(small)
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
    assert_accessible(page)

    page.get_by_role("button", name="Sign out").focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", level=1)).to_have_text("You are signed out")
    page.screenshot(path=screenshots / "signed-out.png", full_page=True)
    assert_accessible(page)
    context.close()


def test_focus_ring_and_input_borders_reach_3_to_1(bridge: Harness, browser: Browser) -> None:
    """WCAG 1.4.11 non-text contrast: a person must see where the fields are and
    which one has the focus, against the card they sit on."""
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    page.goto(f"{bridge.url}/login?request={create_pending(bridge).raw_id}")
    for selector in ("#username", "#password"):
        measured = non_text_contrast(page, selector)
        assert measured["border"] >= 3, (selector, measured)
        assert measured["outline"] >= 3, (selector, measured)
    for selector in ("button[type=submit]", "a[href*=reset-password]"):
        measured = non_text_contrast(page, selector)
        assert measured["outline"] >= 3, (selector, measured)

    page.fill("#username", "jdoe")
    page.fill("#password", "not-my-password")
    page.click("button[type=submit]")
    page.get_by_role("alert").wait_for()
    measured = non_text_contrast(page, "#username")  # aria-invalid: the danger border
    assert measured["border"] >= 3, measured
    context.close()


@pytest.mark.parametrize(("viewport", "size"), [(DESKTOP, "desktop"), (PHONE, "phone")])
def test_error_pages_lead_somewhere(
    bridge: Harness, browser: Browser, screenshots: Path, viewport: Any, size: str
) -> None:
    context = browser.new_context(viewport=viewport)
    page = context.new_page()

    response = page.goto(f"{bridge.url}/no-such-page")
    assert response is not None
    assert response.status == 404
    expect(page.get_by_role("heading", level=1)).to_have_text("Page not found")
    expect(page.get_by_role("link", name="help@example.org")).to_be_visible()
    page.screenshot(path=screenshots / f"not-found-{size}.png", full_page=True)
    assert_accessible(page)
    page.get_by_role("link", name="Go to the sign-in page").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Sign in")
    expect(page.get_by_label("Username")).to_be_visible()

    response = page.goto(f"{bridge.url}/login?request=no-such-request")
    assert response is not None
    assert response.status == 400
    expect(page.get_by_role("heading", level=1)).to_have_text("This sign-in link has expired")
    page.screenshot(path=screenshots / f"error-{size}.png", full_page=True)
    assert_accessible(page)
    context.close()


def test_sign_out_confirmation(bridge: Harness, browser: Browser, screenshots: Path) -> None:
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    page.goto(f"{bridge.url}/login")
    page.fill("#username", "jdoe")
    page.fill("#password", "password1")
    page.click("button[type=submit]")
    expect(page.get_by_role("heading", level=1)).to_have_text("Hello, Jane")

    page.goto(f"{bridge.url}/end_session?client_id=member-portal")
    expect(page.get_by_role("heading", level=1)).to_have_text("Sign out?")
    expect(page.get_by_text("Member Portal asked to sign you out.")).to_be_visible()
    page.screenshot(path=screenshots / "sign-out-confirm.png", full_page=True)
    assert_accessible(page)
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("You are signed out")
    context.close()
