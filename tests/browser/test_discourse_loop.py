"""The whole DiscourseConnect loop in Chromium, on the real ``bridge demo`` app and configuration.

Open the demo forum, press Log In, get sent to the bridge with a signed request,
sign in, land back on the forum signed in (it checked the signature and the
nonce); come back with a session and skip the sign-in page; ask with
``prompt=none`` and be told nobody is signed in; log out of the forum and so of
the bridge. Then the pages a person may see instead: each refusal and the page
for a request the bridge cannot accept. axe-core checks each page; screenshots
go to ``screenshots/`` for people to look at.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import ConsoleMessage, Page

from bridge.app import create_app
from bridge.demo.run import DEMO_FORUM_SLUG, demo_app, write_demo_config
from bridge.settings import load_settings
from tests.support.accessibility import assert_accessible
from tests.support.servers import free_port, serve

pytestmark = pytest.mark.browser

STAFF_SECRET = "staff-forum-connect-secret-0123456789abcdef"


@dataclass
class Demo:
    url: str

    def forum(self, slug: str = DEMO_FORUM_SLUG) -> str:
        return f"{self.url}/_demo/discourse/{slug}/"

    @property
    def connect_url(self) -> str:
        return f"{self.url}/discourse/{DEMO_FORUM_SLUG}"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    port = free_port()
    folder = write_demo_config(tmp_path_factory.mktemp("demo"), port)
    settings = load_settings(folder, env={}, allow_demo=True)
    app = demo_app(settings, create_app)  # what `bridge demo` serves
    with serve(app, port=port) as url:
        app.state.services.registry.add(
            "staff-forum",
            {
                "name": "Staff Forum",
                "profile": "discourse",
                "discourse_url": f"{url}/_demo/discourse/staff-forum",
                "connect_secret": STAFF_SECRET,
                "access": {
                    "member_types": ["STAFF"],
                    "message": "The Staff Forum is for association staff only.",
                },
            },
            actor="test",
        )
        yield Demo(url=url)


def sign_in(page: Page, username: str) -> None:
    page.fill("#username", username)
    page.fill("#password", "password1")
    page.click("button[type=submit]")


def test_the_loop(demo: Demo, page: Page, screenshots: Path) -> None:
    problems: list[str] = []

    def watch(message: ConsoleMessage) -> None:
        if message.type == "error":
            problems.append(message.text)

    page.on("console", watch)
    page.goto(demo.forum())
    assert page.inner_text("h1") == "Member Forum"
    page.screenshot(path=str(screenshots / "discourse-demo-forum.png"), full_page=True)
    assert_accessible(page)

    page.get_by_role("link", name="Log In", exact=True).click()
    page.wait_for_url(f"{demo.url}/login?request=*")
    assert "Demo Forum" in page.inner_text("h1")
    page.screenshot(path=str(screenshots / "discourse-sign-in.png"), full_page=True)
    sign_in(page, "jdoe")
    page.wait_for_url(demo.forum())
    assert page.inner_text("h1") == "Welcome, Jane Doe"
    fields = page.inner_text("table.claims")
    assert "23210" in fields
    assert "jane.doe@example.org" in fields
    assert "require_activation" in fields
    assert "admin" not in fields
    page.screenshot(path=str(screenshots / "discourse-demo-signed-in.png"), full_page=True)
    assert_accessible(page)

    # A returning visitor (logged out of the forum only) sees no sign-in page.
    page.context.clear_cookies(name=f"demo-discourse-{DEMO_FORUM_SLUG}-session")
    page.goto(demo.forum())
    page.get_by_role("link", name="Log In", exact=True).click()
    page.wait_for_url(demo.forum())
    assert page.inner_text("h1") == "Welcome, Jane Doe"

    # Log out of the forum: its logout_redirect is the bridge's logout URL.
    page.get_by_role("link", name="Log out").click()
    page.wait_for_url(f"{demo.connect_url}/logout")
    assert page.inner_text("h1") == "You are signed out"
    assert "Demo Forum and of Contoso Association (demo) sign-in" in page.inner_text("main")
    page.screenshot(path=str(screenshots / "discourse-signed-out.png"), full_page=True)
    assert_accessible(page)
    page.get_by_role("link", name="Back to Demo Forum").click()
    page.wait_for_url(demo.forum())

    # Nobody is signed in to the bridge now: prompt=none answers failed=true, no page.
    page.get_by_role("link", name="Check for a sign-in without a page (prompt=none)").click()
    page.wait_for_url(f"{demo.forum()}?sso=failed")
    assert "failed=true" in page.inner_text("main")
    page.screenshot(path=str(screenshots / "discourse-prompt-none.png"), full_page=True)
    assert_accessible(page)
    assert problems == []


@pytest.mark.parametrize(
    ("username", "slug", "expected", "shot"),
    [
        ("noemail", DEMO_FORUM_SLUG, "no primary email", "no-email"),
        ("sam", DEMO_FORUM_SLUG, "is also the email address", "shared-email"),
        ("jdoe", "staff-forum", "for association staff only", "access-rule"),
        ("contoso", DEMO_FORUM_SLUG, "organization", "organization"),
    ],
)
def test_refusal_pages(
    demo: Demo, page: Page, screenshots: Path, username: str, slug: str, expected: str, shot: str
) -> None:
    page.goto(demo.forum(slug))
    page.get_by_role("link", name="Log In", exact=True).click()
    page.wait_for_url(f"{demo.url}/login?request=*")
    with page.expect_navigation() as navigation:
        sign_in(page, username)
    response = navigation.value
    assert response is not None
    assert response.status == 403
    assert page.url.startswith(demo.url + "/")  # still on the bridge: nothing went to the forum
    assert expected in page.inner_text("main")
    page.screenshot(path=str(screenshots / f"discourse-refused-{shot}.png"), full_page=True)
    assert_accessible(page)


def test_a_request_the_bridge_cannot_accept(demo: Demo, page: Page, screenshots: Path) -> None:
    response = page.goto(f"{demo.connect_url}?sso=bm9uY2U9MQ%3D%3D&sig={'0' * 64}")
    assert response is not None
    assert response.status == 400
    assert "Go back to the forum and sign in again" in page.inner_text("main")
    page.screenshot(path=str(screenshots / "discourse-cannot-accept.png"), full_page=True)
    assert_accessible(page)
