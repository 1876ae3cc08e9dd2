"""The admin's sign-in statistics page: counts per app and reason, drawn on the server."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import httpx

from tests.admin.conftest import text_of
from tests.support.bridge import Harness, hidden_fields

SVG = "{http://www.w3.org/2000/svg}"


def wrong_password_at_the_sign_in_page(bridge: Harness) -> None:
    with bridge.client() as browser:
        page = browser.get("/login")
        answer = browser.post(
            "/login",
            data={**hidden_fields(page.text), "username": "jdoe", "password": "not-it"},
        )
        assert answer.status_code == 401


def test_statistics_show_the_sign_in_pages_refusals_as_a_chart_and_a_table(
    bridge: Harness, admin: httpx.Client
) -> None:
    wrong_password_at_the_sign_in_page(bridge)
    page = admin.get("/admin/statistics", params={"registration": "-"})
    assert page.status_code == 200
    text = text_of(page.text)
    assert "Sign-in statistics" in text
    assert "The last 24 hours" in text or "24 hours" in text
    assert "wrong password" in text
    svgs = [
        ET.fromstring(chunk[: chunk.index("</svg>") + 6])
        for chunk in ("<svg" + part for part in page.text.split("<svg")[1:])
    ]
    assert len(svgs) == 2  # the last 24 hours and the last 30 days
    for svg in svgs:
        assert svg.find(f"{SVG}title") is not None
        counted = [
            int(bar.get("data-count", "0"))
            for bar in svg.iter(f"{SVG}rect")
            if bar.get("data-outcome") == "wrong_password"
        ]
        assert sum(counted) >= 1


def test_statistics_of_every_app_and_of_one(bridge: Harness, admin: httpx.Client) -> None:
    everything = admin.get("/admin/statistics")
    assert everything.status_code == 200
    assert 'value="" selected' in everything.text
    portal = admin.get("/admin/statistics", params={"registration": "portal"})
    assert portal.status_code == 200
    assert 'value="portal" selected' in portal.text


def test_statistics_of_an_unknown_app_is_a_404_not_a_500(admin: httpx.Client) -> None:
    for name in ("no-such-app", "<script>", "x" * 500):
        response = admin.get("/admin/statistics", params={"registration": name})
        assert response.status_code == 404
        assert "<script>" not in response.text


def test_f1_statistics_are_for_admins_only(bridge: Harness) -> None:
    with bridge.client() as anonymous:
        response = anonymous.get("/admin/statistics")
    assert response.status_code in (302, 303)
    assert "/login" in response.headers["location"]
