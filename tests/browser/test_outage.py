"""A page script on another origin while the database is down (SECURITY G2, D7).

A browser-based public client (``http://localhost:PORT``) calls ``/token`` and
``/userinfo`` of a real ``bridge serve`` (``http://127.0.0.1:PORT``) with
``fetch()``. Which origins may read those answers is in its registration, in
the database; when the database stops, the bridge answers 503 with Retry-After,
and the page must be able to read that answer (and say "try again later")
rather than get a bare network error ("Failed to fetch") it cannot tell from the
bridge being gone.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.support.leaks import register
from tests.support.outage import Outage, bridge_on_private_postgres
from tests.support.relying_party import RelyingParty, new_relying_party, running_relying_party

pytestmark = [pytest.mark.browser, pytest.mark.slow]

#: Long enough for a loaded machine, short enough that a blocked call fails soon.
LANDING_MS = 15_000


@pytest.fixture(scope="module")
def app_and_outage(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[RelyingParty, Outage]]:
    rp = new_relying_party()
    tmp: Path = tmp_path_factory.mktemp("outage-browser")
    registrations = {"cross-origin-spa": rp.spa_registration()}
    with (
        bridge_on_private_postgres(tmp, registrations) as outage,
        running_relying_party(outage.bridge.url, rp),
    ):
        yield rp, outage


def test_g2_a_page_script_on_another_origin_reads_the_503_while_the_database_is_down(
    app_and_outage: tuple[RelyingParty, Outage], page: Page, screenshots: Path
) -> None:
    rp, outage = app_and_outage
    register("password1")
    page.goto(f"{rp.url}/spa/")
    page.fill("#username", "jdoe")
    page.fill("#password", "password1")
    page.click("button[type=submit]")
    expect(page.locator("#status")).to_have_text("signed in as Jane Doe", timeout=LANDING_MS)
    token = page.evaluate("window.accessToken")
    call = f"{rp.url}/spa/call?token={token}"
    page.goto(call)
    expect(page.locator("#userinfo")).to_have_text("read: Jane Doe", timeout=LANDING_MS)
    expect(page.locator("#token")).to_have_text("read: invalid_grant")

    outage.cluster.stop("fast")
    try:
        page.goto(call)
        unavailable = re.compile(r"^read: temporarily_unavailable \(retry after \d+ s\)$")
        # The code is looked up in the database. A form POST has no preflight: the 503
        # itself says who may read it.
        expect(page.locator("#token")).to_have_text(unavailable, timeout=LANDING_MS)
        # userinfo sends a bearer token, so it needs a preflight, which the browser kept
        # from the call before the outage (a preflight is good for 10 minutes).
        expect(page.locator("#userinfo")).to_have_text(unavailable, timeout=LANDING_MS)
        page.screenshot(path=screenshots / "outage-page-script.png")
    finally:
        outage.cluster.start()
