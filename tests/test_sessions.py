"""The session cookie over real HTTP (SECURITY D4): it lives as long as the browser does,
and the server alone decides how long a session lasts."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bridge import sessions
from tests.routes.test_login import page, sign_in
from tests.support.bridge import running_bridge

LIFETIME = 2


def test_d4_session_cookie_dies_with_the_browser_and_the_server_enforces_the_lifetime(
    tmp_path: Path, database_factory: Any
) -> None:
    extra = f"[sessions]\nlifetime_seconds = {LIFETIME}\nidle_seconds = {LIFETIME}\n"
    with (
        running_bridge(tmp_path, database_factory.migrated_url(), extra=extra) as bridge,
        bridge.client() as client,
    ):
        response = sign_in(client, "jdoe", "password1")
        assert response.status_code == 303
        name = sessions.cookie_name(bridge.settings)
        [cookie] = [h for h in response.headers.get_list("set-cookie") if h.startswith(f"{name}=")]
        attributes = [part.strip().lower() for part in cookie.split(";")]
        # No Max-Age, no Expires: a browser-session cookie, gone when the browser closes.
        assert not any(a.startswith(("max-age=", "expires=")) for a in attributes)
        assert {"httponly", "samesite=lax", "path=/"} <= set(attributes)
        assert "You are signed in" in client.get("/login").text

        # The browser still sends the cookie, but the session's lifetime is over.
        time.sleep(LIFETIME + 0.5)
        assert name in client.cookies
        shown = page(client.get("/login"))
        assert "You are signed in" not in shown.text
        assert shown.fields["username"]["value"] == ""
