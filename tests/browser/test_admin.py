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
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Locator, Page, expect

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
#: The secret made in step 2 of docs/discourse.md's "Set up the forum" (openssl rand -hex 32).
FORUM_SECRET = "4f1c0e9a7b3d2e6f8a5c1b0d9e7f6a3c2b1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f"
FORUM_SLUG = "contoso-forum"
WIDTHS = {"wide": 1280, "narrow": 390}


@dataclass
class Demo:
    url: str

    def help_center(self, subdomain: str) -> str:
        return f"{self.url}/_demo/zendesk/{subdomain}/hc"

    def forum(self, slug: str) -> str:
        return f"{self.url}/_demo/discourse/{slug}"


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


def press_copy(page: Page, group: Locator, name: str) -> str:
    """Press a copy button in ``group``; the clipboard's text, once the button checked
    it sits to the left of the address it copied."""
    button = group.get_by_role("button", name=name)
    button.click()
    expect(button).to_have_text("Copied")  # once the clipboard write has resolved
    copied: str = page.evaluate("navigator.clipboard.readText()")
    value = group.locator("code", has_text=copied).first
    box, target = button.bounding_box(), value.bounding_box()
    assert box is not None
    assert target is not None
    assert box["x"] + box["width"] <= target["x"]
    return copied


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
    copied = press_copy(page, group, "Copy Zendesk Endpoint (Remote login URL)")
    assert copied == f"{demo.url}/zendesk/{SLUG}"
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


def test_an_admin_adds_discourse_copies_its_connect_url_and_it_works(
    demo: Demo, context: BrowserContext, browser: Browser, screenshots: Path
) -> None:
    """docs/discourse.md's set-up in the admin pages, then the copied Connect URL end to end."""
    problems: list[str] = []

    def watch(message: ConsoleMessage) -> None:
        if message.type == "error":
            problems.append(message.text)

    page = admin_page(context, demo)
    page.on("console", watch)
    assert page.inner_text("h1") == "App Registrations"
    assert_accessible(page)

    # Step 3 of "Set up the forum": give the bridge the registration, stored, with the
    # slug of step 1 and the secret of step 2.
    page.get_by_role("link", name="Add App Registration").click()
    page.get_by_label("Discourse Profile").check()
    page.get_by_role("button", name="Continue").click()
    page.wait_for_url(f"{demo.url}/admin/registrations/new?profile=discourse")
    page.get_by_label("Name (required)").fill("Contoso Forum")
    page.get_by_label("Slug").fill(FORUM_SLUG)
    # The forum's address as its members reach it (here the demo forum, which plays it).
    page.get_by_label("Forum URL").fill(demo.forum(FORUM_SLUG))
    page.get_by_label("Discourse Connect Secret").fill(FORUM_SECRET)
    # The claim mapping of the doc's registration file, which the form shows as its example:
    # a Discourse admin who copies the example gets a mapping Discourse's profile accepts.
    mapping = page.get_by_label("Claim mapping")
    claims = page.locator(".field", has=mapping).locator("pre.example").inner_text()
    assert claims.strip() == 'username = "username"\ngroups = "member_type"'
    mapping.fill(claims)
    page.screenshot(path=str(screenshots / "admin-add-discourse-filled-wide.png"), full_page=True)
    assert_accessible(page)
    page.get_by_role("button", name="Save App Registration").click()
    page.wait_for_url(f"{demo.url}/admin/registrations/{FORUM_SLUG}?done=added")
    assert "The App Registration was saved." in page.inner_text("main")
    assert FORUM_SECRET not in page.content()
    page.screenshot(path=str(screenshots / "admin-discourse-saved-wide.png"), full_page=True)
    assert_accessible(page)

    # The URLs Discourse needs (steps 1, 4 and 5), from Endpoint Info.
    page.get_by_role("navigation", name="Administration").get_by_role(
        "link", name="Endpoint Info"
    ).click()
    group = page.get_by_role("region", name="Contoso Forum")
    page.screenshot(
        path=str(screenshots / "admin-endpoint-info-discourse-wide.png"), full_page=True
    )
    # What goes where in Discourse (steps 4 and 5), and its own way in for admins (step 6).
    assert "“discourse connect url”" in group.inner_text()
    assert "“logout redirect”" in group.inner_text()
    assert f"{demo.forum(FORUM_SLUG)}/u/admin-login" in group.inner_text()
    assert_accessible(page)
    copied = press_copy(page, group, "Copy Connect URL")
    assert copied == f"{demo.url}/discourse/{FORUM_SLUG}"
    assert FORUM_SECRET not in page.content()
    assert problems == []  # no CSP violation: the copy script is a file of our own

    # The copied URL works end to end: a member presses Log In on the demo forum, is
    # sent to it with a signed request, signs in, and is back on the forum signed in.
    member = browser.new_context()
    try:
        visit = member.new_page()
        visit.on("console", watch)
        visit.goto(f"{demo.forum(FORUM_SLUG)}/")
        assert visit.inner_text("h1") == "Member Forum"
        with visit.expect_request(lambda request: request.url.startswith(f"{copied}?sso=")):
            visit.get_by_role("link", name="Log In", exact=True).click()
        visit.wait_for_url(f"{demo.url}/login?request=*")
        assert "Contoso Forum" in visit.inner_text("h1")
        sign_in(visit, "jdoe")
        visit.wait_for_url(f"{demo.forum(FORUM_SLUG)}/")
        assert visit.inner_text("h1") == "Welcome, Jane Doe"
        fields = visit.inner_text("table.claims")
        assert "23210" in fields
        assert "jane.doe@example.org" in fields
        assert "groups" in fields  # the claim mapping saved through the form was used
        visit.screenshot(path=str(screenshots / "admin-discourse-member-signed-in.png"))
    finally:
        member.close()
    assert problems == []


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
