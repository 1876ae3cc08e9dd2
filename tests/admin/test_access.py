"""Who gets into /admin, for how long, and what needs a fresh password: over real HTTP.

SECURITY F1 (only admins get in), F5 (step-up for secrets and deletions) and
D1 (every admin form is CSRF-protected), plus the 30-minute admin idle-out.
"""

from __future__ import annotations

import httpx
import pytest

from bridge.admin.auth import IDLE_SECONDS, STEP_UP_SECONDS, cookie_name, safe_next
from tests.admin.conftest import (
    Clock,
    admin_browser,
    csrf_of,
    follow_sign_in,
    post_form,
    text_of,
)
from tests.support.bridge import Harness, hidden_fields, sign_in

ZENDESK_SECRET = "zendesk-secret-for-access-tests-0123456789"
NEW_SECRET = "a-new-zendesk-secret-after-reset-9876543210"


def add_zendesk(browser: httpx.Client, slug: str) -> None:
    response = post_form(
        browser,
        "/admin/registrations/new?profile=zendesk",
        {
            "profile": "zendesk",
            "name": f"Desk {slug}",
            "slug": slug,
            "subdomain": slug,
            "shared_secret": ZENDESK_SECRET,
            "enabled": "true",
        },
    )
    assert response.status_code == 303, text_of(response.text)


def secret_of(bridge: Harness, slug: str) -> str:
    reg = bridge.services.registry.get(slug)
    return str(reg.options.shared_secret)


# --- F1: who gets in ------------------------------------------------------------------


def test_f1_without_a_session_the_admin_sends_to_sign_in_and_back(bridge: Harness) -> None:
    with bridge.client() as browser:
        first = browser.get("/admin/audit?action=registration.add")
        assert first.status_code == 303
        assert first.headers["location"].startswith("/login?request=")
        form = browser.get(first.headers["location"])
        assert form.status_code == 200
        assert 'name="password"' in form.text
        fields = hidden_fields(form.text)
        done = browser.post(
            "/login", data={**fields, "username": "manager", "password": "password1"}
        )
        assert done.status_code == 303
        assert done.headers["location"].startswith("/admin/continue?request=")
        back = browser.get(done.headers["location"])
        assert back.status_code == 303
        assert back.headers["location"] == "/admin/audit?action=registration.add"
        page = browser.get(back.headers["location"])
        assert page.status_code == 200
        assert "<h1>Audit log</h1>" in page.text
        assert 'value="registration.add"' in page.text  # the filter survived the detour


def test_f1_usernames_in_admin_users_get_in_whatever_their_case(bridge: Harness) -> None:
    # [admin] users lists "MANAGER"; iMIS calls the account "manager".
    with admin_browser(bridge) as browser:
        page = browser.get("/admin/registrations")
        assert page.status_code == 200
        assert "Signed in as <strong>manager</strong>" in page.text


def test_f1_anyone_else_gets_403_on_every_admin_page(bridge: Harness) -> None:
    with bridge.client() as browser:
        refused = sign_in(browser, "/admin", "jdoe")
        assert refused.status_code == 403
        assert "Administrators only" in refused.text
        assert "jdoe" in refused.text
        for path in ("/admin", "/admin/registrations", "/admin/endpoints", "/admin/keys"):
            assert browser.get(path).status_code == 403, path
        token = hidden_fields(refused.text)["csrf_token"]  # the page's sign-out form
        added = browser.post(
            "/admin/registrations/new",
            data={"csrf_token": token, "profile": "zendesk", "slug": "by-jdoe", "name": "x"},
        )
        assert added.status_code == 403
        assert bridge.services.registry.get("by-jdoe") is None


def test_f1_a_bridge_session_alone_asks_for_the_password_again(bridge: Harness) -> None:
    with bridge.client() as browser:
        login = hidden_fields(browser.get("/login").text)
        signed_in = browser.post(
            "/login", data={**login, "username": "manager", "password": "password1"}
        )
        assert signed_in.status_code == 303  # to "You are signed in": no admin yet
        asked = browser.get("/admin/keys")
        assert asked.status_code == 303
        form = browser.get(asked.headers["location"])
        assert 'name="password"' in form.text
        assert 'value="manager"' in form.text  # the username is filled in
        assert follow_sign_in(browser, asked).status_code == 200


def test_f1_a_forged_or_foreign_admin_grant_is_refused(bridge: Harness) -> None:
    name = cookie_name(bridge.settings)
    with admin_browser(bridge) as first, admin_browser(bridge) as second:
        assert first.get("/admin/keys").status_code == 200
        # Another browser's grant belongs to another session: it opens nothing here.
        second.cookies.set(name, first.cookies[name])
        assert second.get("/admin/keys").status_code == 303
        second.cookies.set(name, "not-a-grant")
        assert second.get("/admin/keys").status_code == 303


def test_f1_signing_out_ends_the_admin(bridge: Harness) -> None:
    with admin_browser(bridge) as browser:
        token = csrf_of(browser, "/admin/registrations")
        assert browser.post("/logout", data={"csrf_token": token}).status_code == 200
        assert browser.get("/admin/registrations").status_code == 303


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/admin/keys", "/admin/keys"),
        ("/admin/audit?page=2", "/admin/audit?page=2"),
        ("https://evil.example/admin", "/admin"),
        ("//evil.example/admin", "/admin"),
        ("/administrator", "/admin"),
        ("/admin/\\evil", "/admin"),
        ("/admin/\r\nx", "/admin"),
        (None, "/admin"),
    ],
)
def test_f1_after_sign_in_only_admin_pages_are_returned_to(
    value: str | None, expected: str
) -> None:
    assert safe_next(value) == expected


# --- idle-out ---------------------------------------------------------------------------


def test_admin_idles_out_after_30_minutes_without_an_admin_request(
    bridge: Harness, clock: Clock
) -> None:
    with admin_browser(bridge) as browser:
        # Activity keeps it open: two gaps of 29 minutes are fine.
        for _ in range(2):
            clock.advance(IDLE_SECONDS - 60)
            assert browser.get("/admin/registrations").status_code == 200
        clock.advance(IDLE_SECONDS + 1)
        idle = browser.get("/admin/endpoints")
        assert idle.status_code == 303
        assert idle.headers["location"].startswith("/login?request=")
        back = follow_sign_in(browser, idle)
        assert back.status_code == 200
        assert "<h1>Endpoint Info</h1>" in back.text
        # The bridge session itself lives on (its own idle limit is 2 hours).
        assert bridge.services.settings.sessions.idle_seconds > IDLE_SECONDS


# --- F5: step-up ----------------------------------------------------------------------------


def test_f5_deleting_needs_a_sign_in_within_15_minutes(bridge: Harness, clock: Clock) -> None:
    with admin_browser(bridge) as browser:
        add_zendesk(browser, "step-up-delete")
        token = csrf_of(browser, "/admin/registrations/step-up-delete/delete")
        clock.advance(STEP_UP_SECONDS + 5)
        refused = browser.post(
            "/admin/registrations/step-up-delete/delete", data={"csrf_token": token}
        )
        assert refused.status_code == 303
        assert refused.headers["location"].startswith("/login?request=")
        assert bridge.services.registry.get("step-up-delete") is not None
        assert browser.get("/admin/registrations/step-up-delete/delete").status_code == 303
        confirm = follow_sign_in(browser, refused)
        assert confirm.status_code == 200
        assert "Delete Desk step-up-delete?" in confirm.text
        fields = hidden_fields(confirm.text)
        done = browser.post("/admin/registrations/step-up-delete/delete", data=fields)
        assert done.status_code == 303
        assert bridge.services.registry.get("step-up-delete") is None


def test_f5_rotating_a_client_secret_needs_a_recent_sign_in(bridge: Harness, clock: Clock) -> None:
    with admin_browser(bridge) as browser:
        created = post_form(
            browser,
            "/admin/registrations/new?profile=oidc",
            {
                "profile": "oidc",
                "name": "Step-up App",
                "slug": "step-up-app",
                "client_id": "step-up-app",
                "redirect_uris": "https://app.example.org/cb",
                "enabled": "true",
            },
        )
        assert created.status_code == 200
        before = bridge.services.registry.get("step-up-app").options.client_secret_hash
        clock.advance(STEP_UP_SECONDS + 5)
        asked = browser.get("/admin/registrations/step-up-app/rotate-secret")
        assert asked.status_code == 303
        token = csrf_of(browser, "/admin/registrations")
        refused = browser.post(
            "/admin/registrations/step-up-app/rotate-secret", data={"csrf_token": token}
        )
        assert refused.status_code == 303
        assert bridge.services.registry.get("step-up-app").options.client_secret_hash == before
        page = follow_sign_in(browser, refused)
        assert page.status_code == 200
        rotated = browser.post(
            "/admin/registrations/step-up-app/rotate-secret", data=hidden_fields(page.text)
        )
        assert rotated.status_code == 200
        assert "shown only this once" in rotated.text
        assert bridge.services.registry.get("step-up-app").options.client_secret_hash != before


def test_f5_a_new_zendesk_secret_needs_a_recent_sign_in(bridge: Harness, clock: Clock) -> None:
    with admin_browser(bridge) as browser:
        add_zendesk(browser, "step-up-secret")
        edit = "/admin/registrations/step-up-secret/edit"
        fields = {
            "name": "Renamed Desk",
            "subdomain": "step-up-secret",
            "shared_secret": NEW_SECRET,
            "enabled": "true",
        }
        clock.advance(STEP_UP_SECONDS + 5)
        refused = post_form(browser, edit, fields)
        assert refused.status_code == 403
        assert "Changing the secret needs a recent sign-in" in refused.text
        assert 'value="Renamed Desk"' in refused.text  # what was entered is kept
        assert NEW_SECRET not in refused.text
        assert secret_of(bridge, "step-up-secret") == ZENDESK_SECRET
        assert "/admin/reauth?next=%2Fadmin%2Fregistrations%2Fstep-up-secret%2Fedit" in refused.text
        reauth = browser.get("/admin/reauth?next=/admin/registrations/step-up-secret/edit")
        back = follow_sign_in(browser, reauth)
        assert back.status_code == 200
        saved = post_form(browser, edit, fields)
        assert saved.status_code == 303
        assert secret_of(bridge, "step-up-secret") == NEW_SECRET
        # Without a secret, an edit needs no fresh sign-in.
        clock.advance(STEP_UP_SECONDS + 5)
        renamed = post_form(browser, edit, {**fields, "shared_secret": "", "name": "Desk 2"})
        assert renamed.status_code == 303
        assert bridge.services.registry.get("step-up-secret").name == "Desk 2"


def test_f5_rotating_the_signing_keys_needs_a_recent_sign_in(bridge: Harness, clock: Clock) -> None:
    with admin_browser(bridge) as browser:
        token = csrf_of(browser, "/admin/keys/rotate")
        keys = len(bridge.services.keys.list_keys())
        clock.advance(STEP_UP_SECONDS + 5)
        refused = browser.post("/admin/keys/rotate", data={"csrf_token": token, "alg": "ES256"})
        assert refused.status_code == 303
        assert len(bridge.services.keys.list_keys()) == keys


# --- D1: CSRF ----------------------------------------------------------------------------------


def test_d1_admin_forms_refuse_a_missing_or_wrong_csrf_token(bridge: Harness) -> None:
    data = {
        "profile": "zendesk",
        "name": "Forged",
        "slug": "forged-desk",
        "subdomain": "forged",
        "shared_secret": ZENDESK_SECRET,
    }
    with admin_browser(bridge) as browser:
        missing = browser.post("/admin/registrations/new", data=data)
        assert missing.status_code == 400
        wrong = browser.post("/admin/registrations/new", data={**data, "csrf_token": "x" * 43})
        assert wrong.status_code == 400
        assert "form was sent twice" in wrong.text
        assert bridge.services.registry.get("forged-desk") is None
        for path in (
            "/admin/registrations/portal/enabled",
            "/admin/registrations/portal/delete",
            "/admin/keys/rotate",
        ):
            assert browser.post(path, data={"enabled": "false"}).status_code == 400, path


def test_admin_pages_have_their_own_policy_and_are_not_cached(bridge: Harness) -> None:
    with admin_browser(bridge) as browser:
        for path in ("/admin/registrations", "/admin/endpoints", "/admin/audit", "/admin/keys"):
            page = browser.get(path)
            policy = page.headers["content-security-policy"]
            assert "script-src 'self';" in policy
            assert "form-action 'self';" in policy
            assert "unsafe-inline" not in policy
            assert page.headers["cache-control"] == "no-store"
            assert "<script>" not in page.text  # only the script file
