"""The admin pages in Chromium, on the real ``bridge demo`` configuration.

An administrator signs in, adds a Zendesk registration as docs/zendesk.md's
set-up steps describe, opens Endpoint Info and presses the copy button next to
the Zendesk Endpoint: the clipboard then holds the remote login URL, and a
member who opens it signs in to the demo Zendesk end to end. Every admin page
is checked with axe-core and photographed at 1280 and 390 px wide
(``screenshots/admin-*.png``) for people to look at.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page

from bridge.app import create_app
from bridge.demo.run import DEMO_ZENDESK_SLUG, write_demo_config
from bridge.settings import load_settings
from tests.support.accessibility import assert_accessible
from tests.support.servers import free_port, serve

pytestmark = pytest.mark.browser

#: What Zendesk shows once in its JWT configuration (step 2), pasted into the bridge (step 3).
ZENDESK_SECRET = "zendesk-shows-this-once-0123456789abcdefABCDEF"
SLUG = "contoso-helpdesk"
SUBDOMAIN = "contoso"
WIDTHS = {"wide": 1280, "narrow": 390}


@dataclass
class Demo:
    url: str

    def help_center(self, subdomain: str) -> str:
        return f"{self.url}/_demo/zendesk/{subdomain}/hc"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    port = free_port()
    folder = write_demo_config(tmp_path_factory.mktemp("admin-demo"), port)
    app = create_app(load_settings(folder, env={}, allow_demo=True))
    with serve(app, port=port) as url:
        yield Demo(url=url)


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    context = browser.new_context(permissions=["clipboard-read", "clipboard-write"])
    yield context
    context.close()


def sign_in(page: Page, username: str) -> None:
    page.fill("#username", username)
    page.fill("#password", "password1")
    page.click("button[type=submit]")


def admin_page(context: BrowserContext, demo: Demo, path: str = "/admin") -> Page:
    page = context.new_page()
    page.goto(f"{demo.url}{path}")
    assert page.url.startswith(f"{demo.url}/login?request=")
    sign_in(page, "manager")
    page.wait_for_url(f"{demo.url}/admin/**")
    return page


def test_an_admin_adds_zendesk_copies_its_endpoint_and_it_works(
    demo: Demo, context: BrowserContext, browser: Browser
) -> None:
    problems: list[str] = []

    def watch(message: ConsoleMessage) -> None:
        if message.type == "error":
            problems.append(message.text)

    page = admin_page(context, demo)
    page.on("console", watch)
    assert page.inner_text("h1") == "App Registrations"

    # Step 3 of "Set up Zendesk": give the bridge the shared secret, as a stored registration.
    page.get_by_role("link", name="Add App Registration").click()
    page.get_by_label("Zendesk Profile").check()
    page.get_by_role("button", name="Continue").click()
    page.get_by_label("Name (required)").fill("Contoso Helpdesk")
    page.get_by_label("Slug").fill(SLUG)
    page.get_by_label("Zendesk Subdomain").fill(f"{SUBDOMAIN}.zendesk.com")
    page.get_by_label("Zendesk JWT Shared Secret").fill(ZENDESK_SECRET)
    page.get_by_role("button", name="Save App Registration").click()
    page.wait_for_url(f"{demo.url}/admin/registrations/{SLUG}?done=added")
    assert "The App Registration was saved." in page.inner_text("main")
    assert ZENDESK_SECRET not in page.content()

    # The URLs Zendesk needs (step 1), from Endpoint Info.
    page.get_by_role("navigation", name="Administration").get_by_role(
        "link", name="Endpoint Info"
    ).click()
    group = page.get_by_role("region", name="Contoso Helpdesk")
    assert "Update of external IDs?" in group.inner_text()
    assert "/access/sso_bypass" in group.inner_text()
    button = group.get_by_role("button", name="Copy Zendesk Endpoint (Remote login URL)")
    button.click()
    assert button.inner_text() == "Copied"
    copied = page.evaluate("navigator.clipboard.readText()")
    assert copied == f"{demo.url}/zendesk/{SLUG}"
    # The button is to the left of the address it copies.
    value = group.locator("code", has_text=copied).first
    box, target = button.bounding_box(), value.bounding_box()
    assert box is not None
    assert target is not None
    assert box["x"] + box["width"] <= target["x"]
    assert problems == []  # no CSP violation: the copy script is a file of our own

    # The copied URL works end to end: a member opens it and lands in the demo Zendesk.
    member = browser.new_context()
    try:
        visit = member.new_page()
        visit.goto(copied)
        assert visit.url.startswith(f"{demo.url}/login?request=")
        assert "Contoso Helpdesk" in visit.inner_text("h1")
        sign_in(visit, "jdoe")
        visit.wait_for_url(f"{demo.url}/_demo/zendesk/{SUBDOMAIN}/**")
        assert "Signed in as Jane Doe" in visit.inner_text(".zd-account")
    finally:
        member.close()


def _pages(demo: Demo) -> list[tuple[str, str]]:
    one = f"/admin/registrations/{DEMO_ZENDESK_SLUG}"
    return [
        ("registrations", "/admin/registrations"),
        ("choose-profile", "/admin/registrations/new"),
        ("add-oidc", "/admin/registrations/new?profile=oidc"),
        ("add-zendesk", "/admin/registrations/new?profile=zendesk"),
        ("registration-file", one),
        ("test-sign-in", f"{one}/test"),
        ("endpoint-info", "/admin/endpoints"),
        ("audit", "/admin/audit"),
        ("statistics", "/admin/statistics"),
        ("keys", "/admin/keys"),
        ("rotate-keys", "/admin/keys/rotate"),
    ]


def test_every_admin_page_is_accessible_and_photographed(
    demo: Demo, context: BrowserContext, screenshots: Path
) -> None:
    page = admin_page(context, demo)
    # A stored registration, for the pages only stored ones have.
    page.goto(f"{demo.url}/admin/registrations/new?profile=zendesk")
    page.get_by_label("Name (required)").fill("Staff Desk")
    page.get_by_label("Slug").fill("staff-desk")
    page.get_by_label("Zendesk Subdomain").fill("staff")
    page.get_by_label("Zendesk JWT Shared Secret").fill(ZENDESK_SECRET)
    page.get_by_label("Access rule").fill('member_types = ["STAFF"]')
    page.get_by_role("button", name="Save App Registration").click()
    page.wait_for_url("**/admin/registrations/staff-desk?done=added")
    # An OpenID Connect app: its generated client secret, shown once.
    page.goto(f"{demo.url}/admin/registrations/new?profile=oidc")
    page.get_by_label("Name (required)").fill("Member App")
    page.get_by_label("Slug").fill("member-app")
    page.get_by_label("Client ID").fill("member-app")
    page.get_by_label("Redirect URIs (required)").fill("https://app.example.org/callback")
    page.get_by_role("button", name="Save App Registration").click()
    page.get_by_role("button", name="Copy Client secret").wait_for()
    for width_name, width in WIDTHS.items():
        page.set_viewport_size({"width": width, "height": 900})
        page.screenshot(
            path=str(screenshots / f"admin-secret-once-{width_name}.png"), full_page=True
        )
        assert_accessible(page)
    stored = "/admin/registrations/staff-desk"
    pages = [
        *_pages(demo),
        ("registration", stored),
        ("edit", f"{stored}/edit"),
        ("disable", f"{stored}/enabled"),
        ("change-secret", f"{stored}/rotate-secret"),
        ("delete", f"{stored}/delete"),
        ("rotate-client-secret", "/admin/registrations/member-app/rotate-secret"),
    ]
    for name, path in pages:
        for width_name, width in WIDTHS.items():
            page.set_viewport_size({"width": width, "height": 900})
            response = page.goto(f"{demo.url}{path}")
            assert response is not None, path
            assert response.status == 200, path
            page.screenshot(
                path=str(screenshots / f"admin-{name}-{width_name}.png"), full_page=True
            )
            assert_accessible(page)

    # A refused form: the problems next to the fields, what was entered kept.
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto(f"{demo.url}/admin/registrations/new?profile=oidc")
    page.get_by_label("Name (required)").fill("Broken App")
    page.get_by_label("Slug").fill("broken-app")
    page.get_by_label("Client ID").fill("broken")
    page.get_by_label("Redirect URIs (required)").fill("http://app.example.org/cb#x")
    with page.expect_navigation() as navigation:
        page.get_by_role("button", name="Save App Registration").click()
    assert navigation.value is not None
    assert navigation.value.status == 400
    assert "must not contain a fragment" in page.inner_text("main")
    assert page.get_by_label("Client ID").input_value() == "broken"
    page.screenshot(path=str(screenshots / "admin-form-refused-wide.png"), full_page=True)
    assert_accessible(page)


def test_a_member_who_is_not_an_admin_gets_the_403_page(
    demo: Demo, browser: Browser, screenshots: Path
) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 800})
    try:
        page = context.new_page()
        page.goto(f"{demo.url}/admin")
        with page.expect_navigation(url="**/admin/**"):
            sign_in(page, "jdoe")
        assert page.inner_text("h1") == "Administrators only"
        page.screenshot(path=str(screenshots / "admin-forbidden-narrow.png"), full_page=True)
        assert_accessible(page)
    finally:
        context.close()
