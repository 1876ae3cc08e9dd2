"""The whole Zendesk loop in Chromium, on the real ``bridge demo`` configuration.

Open the demo Help Center, get sent to the bridge, sign in, land back signed in
— with JavaScript (the form posts itself, with no CSP violation) and without
(the person clicks the ``<noscript>`` button). Then the pages a person may see
instead: each refusal, Zendesk's error report, the fallback pages, signing out;
and the demo's OIDC client. axe-core checks each page; screenshots go to
``screenshots/`` for people to look at.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page

from bridge.app import create_app
from bridge.demo.run import DEMO_ZENDESK_SLUG, DEMO_ZENDESK_SUBDOMAIN, write_demo_config
from bridge.settings import load_settings
from tests.support.accessibility import assert_accessible, non_text_contrast
from tests.support.servers import free_port, serve

pytestmark = pytest.mark.browser

STAFF_SECRET = "staff-desk-shared-secret-0123456789abcdef"


@dataclass
class Demo:
    url: str

    @property
    def help_center(self) -> str:
        return f"{self.url}/_demo/zendesk/{DEMO_ZENDESK_SUBDOMAIN}/hc"

    @property
    def remote_login(self) -> str:
        return f"{self.url}/zendesk/{DEMO_ZENDESK_SLUG}"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    port = free_port()
    folder = write_demo_config(tmp_path_factory.mktemp("demo"), port)
    settings = load_settings(folder, env={}, allow_demo=True)
    app = create_app(settings)
    with serve(app, port=port) as url:
        app.state.services.registry.add(
            "staff-desk",
            {
                "name": "Staff Desk",
                "profile": "zendesk",
                "subdomain": "staff",
                "shared_secret": STAFF_SECRET,
                "access": {
                    "member_types": ["STAFF"],
                    "message": "The Staff Desk is for association staff only.",
                },
            },
            actor="test",
        )
        yield Demo(url=url)


@pytest.fixture
def page_js(browser: Browser) -> Iterator[Page]:
    context = browser.new_context()
    yield context.new_page()
    context.close()


@pytest.fixture
def page_nojs(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(java_script_enabled=False)
    yield context.new_page()
    context.close()


def sign_in(page: Page, username: str) -> None:
    page.fill("#username", username)
    page.fill("#password", "password1")
    page.click("button[type=submit]")


def test_the_loop_with_javascript(demo: Demo, page_js: Page, screenshots: Path) -> None:
    problems: list[str] = []

    def watch(message: ConsoleMessage) -> None:
        if message.type == "error":
            problems.append(message.text)

    page_js.on("console", watch)
    page_js.goto(demo.help_center)
    assert page_js.url.startswith(f"{demo.url}/login?request=")
    assert "Demo Helpdesk" in page_js.inner_text("h1")
    sign_in(page_js, "jdoe")
    page_js.wait_for_url(demo.help_center)
    assert "Signed in as Jane Doe" in page_js.inner_text(".zd-account")
    assert "23210" in page_js.inner_text("table.claims")
    page_js.screenshot(path=str(screenshots / "zendesk-demo-receiver.png"), full_page=True)
    assert_accessible(page_js)
    assert problems == []  # no CSP violation: the script file ran, the form was allowed

    # A returning visitor (signed out of the demo Zendesk only) sees no login page.
    page_js.context.clear_cookies(name=f"demo-zendesk-{DEMO_ZENDESK_SUBDOMAIN}")
    page_js.goto(demo.help_center)
    page_js.wait_for_url(demo.help_center)
    assert "Signed in as Jane Doe" in page_js.inner_text(".zd-account")


def test_the_loop_without_javascript(demo: Demo, page_nojs: Page, screenshots: Path) -> None:
    page_nojs.goto(demo.help_center)
    sign_in(page_nojs, "bsmith")
    button = page_nojs.get_by_role("button", name="Continue to Demo Helpdesk")
    button.wait_for()
    assert page_nojs.url.startswith(demo.remote_login)
    page_nojs.screenshot(path=str(screenshots / "zendesk-autopost-noscript.png"), full_page=True)
    assert_accessible(page_nojs)
    button.click()
    page_nojs.wait_for_url(demo.help_center)
    assert "Signed in as Bob Smith" in page_nojs.inner_text(".zd-account")


@pytest.mark.parametrize(
    ("username", "start", "status", "expected", "shot"),
    [
        ("noemail", DEMO_ZENDESK_SLUG, 403, "no primary email", "no-email"),
        ("sam", DEMO_ZENDESK_SLUG, 403, "is also the email address", "shared-email"),
        ("jdoe", "staff-desk", 403, "for association staff only", "access-rule"),
        ("contoso", DEMO_ZENDESK_SLUG, 403, "organization", "organization"),
    ],
)
def test_refusal_pages(
    demo: Demo,
    page_nojs: Page,
    screenshots: Path,
    username: str,
    start: str,
    status: int,
    expected: str,
    shot: str,
) -> None:
    page_nojs.goto(f"{demo.url}/zendesk/{start}")
    with page_nojs.expect_navigation() as navigation:
        sign_in(page_nojs, username)
    response = navigation.value
    assert response is not None
    assert response.status == status
    assert expected in page_nojs.inner_text("main")
    page_nojs.screenshot(path=str(screenshots / f"zendesk-refused-{shot}.png"), full_page=True)
    assert_accessible(page_nojs)


def test_zendesk_error_page(demo: Demo, page_nojs: Page, screenshots: Path) -> None:
    page_nojs.goto(
        f"{demo.remote_login}/logout?kind=error&message="
        "Invalid%20JWT%20signature%20%3Cscript%3Ealert(1)%3C%2Fscript%3E"
    )
    main = page_nojs.inner_text("main")
    assert "Invalid JWT signature <script>alert(1)</script>" in main
    assert "shared secret" in main
    assert page_nojs.get_by_role("link", name="Sign in with your Zendesk password").is_visible()
    page_nojs.screenshot(path=str(screenshots / "zendesk-error.png"), full_page=True)
    assert_accessible(page_nojs)


def test_demo_fallback_page(demo: Demo, page_nojs: Page, screenshots: Path) -> None:
    page_nojs.goto(f"{demo.url}/_demo/zendesk/{DEMO_ZENDESK_SUBDOMAIN}/access/sso_bypass")
    assert "Not the real Zendesk" in page_nojs.inner_text("body")
    page_nojs.screenshot(path=str(screenshots / "zendesk-demo-sso-bypass.png"), full_page=True)
    assert_accessible(page_nojs)
    ring = non_text_contrast(page_nojs, ".zd-top a")["outline"]  # WCAG 1.4.11 on the dark bar
    assert ring >= 3, ring


def test_imis_unavailable_page(demo: Demo, page_nojs: Page, screenshots: Path) -> None:
    page_nojs.goto(f"{demo.url}/login")
    with page_nojs.expect_navigation():
        sign_in(page_nojs, "zoe")
    faults = f"{demo.url}/_demo/imis/_sim/faults"
    httpx.post(faults, json={"status": 503, "retry_after": 30}).raise_for_status()
    try:
        response = page_nojs.goto(demo.remote_login)
    finally:
        httpx.delete(faults).raise_for_status()
    assert response is not None
    assert response.status == 503
    assert response.headers["retry-after"] == "30"
    assert "try again" in page_nojs.inner_text("main")
    page_nojs.screenshot(path=str(screenshots / "zendesk-imis-unavailable.png"), full_page=True)
    assert_accessible(page_nojs)


def test_zendesk_signed_out_page(demo: Demo, page_nojs: Page, screenshots: Path) -> None:
    page_nojs.goto(f"{demo.remote_login}/logout")
    assert page_nojs.inner_text("h1") == "You are signed out"
    assert page_nojs.get_by_role("link", name="Sign in to Demo Helpdesk again").is_visible()
    page_nojs.screenshot(path=str(screenshots / "zendesk-signed-out.png"), full_page=True)
    assert_accessible(page_nojs)
