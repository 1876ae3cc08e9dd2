"""DiscourseConnect over real HTTP: the bridge, the iMIS simulator and the demo forum.

The demo forum runs on its own loopback port (another origin than the bridge, as a
real forum is), signs its requests and checks the bridge's answers as Discourse
does. Browsers are httpx clients with their own cookie jars. Covers SECURITY E7
(only a genuine request, for a return URL on the forum, gets a signed answer), E8
(no staff powers, no unverified email trusted), the refusals, returning sessions,
``prompt=none`` and the logout URL.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import io
import logging
import re
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, parse_qsl, quote, urlencode, urlsplit

import httpx
import pytest

from bridge import cli
from bridge.demo.discourse import MOUNT_PATH, DemoForumSettings, mount_demo_forum
from tests.support.bridge import Harness, hidden_fields, running_bridge, write_config
from tests.support.servers import free_port, serve

SECRET = "forum-connect-secret-0123456789abcdef-0123"
OTHER_SECRET = "open-forum-connect-secret-9876543210-abcd"
#: How soon the bridge sees a change the CLI (another process) made.
CACHE_SECONDS = 0.2


def _forum(slug: str, secret: str, extra: str = "") -> str:
    """A discourse registration for the demo forum ``slug`` (``{forum}`` filled in later)."""
    return f"""
name = "{slug.replace("-", " ").title()}"
profile = "discourse"
discourse_url = "{{forum}}/{slug}"
connect_secret = "{secret}"
{extra}"""


REGISTRATIONS = {
    "forum": _forum("forum", SECRET),
    "open-forum": _forum("open-forum", OTHER_SECRET, "refuse_shared_email = false\n"),
    "staff-forum": _forum(
        "staff-forum",
        SECRET,
        '[access]\nmember_types = ["STAFF"]\nmessage = "The staff forum is for staff only."\n',
    ),
    "mapped-forum": _forum(
        "mapped-forum",
        SECRET,
        '[claims]\nusername = "username"\ngroups = "member_type"\n'
        'custom.chapter = "Chapter"\ntitle = "title"\n',
    ),
    "portal": """
name = "Member Portal"
profile = "oidc"
client_id = "forum-portal"
redirect_uris = ["https://portal.example.org/callback"]
scopes = ["openid"]
""",
}


@dataclass
class Setup:
    bridge: Harness
    forum: str  # the demo forum's base URL: forum {slug} lives at {forum}/{slug}
    forums: dict[str, DemoForumSettings] = field(default_factory=dict)

    def browser(self) -> httpx.Client:
        return self.bridge.client()

    def settings_of(self, slug: str, secret: str) -> DemoForumSettings:
        connect = f"{self.bridge.url}/discourse/{slug}"
        return DemoForumSettings(connect, secret, logout_redirect=f"{connect}/logout")

    def secret(self, slug: str) -> str:
        return self.forums[slug].secret


@contextmanager
def bridge_and_forum(tmp: Path, database_url: str, extra: str = "") -> Iterator[Setup]:
    forum_port = free_port()
    forum = f"http://127.0.0.1:{forum_port}{MOUNT_PATH}"
    registrations = {slug: text.replace("{forum}", forum) for slug, text in REGISTRATIONS.items()}
    extra = f"registry_cache_seconds = {CACHE_SECONDS}\n{extra}"
    with running_bridge(tmp, database_url, registrations=registrations, extra=extra) as bridge:
        setup = Setup(bridge=bridge, forum=forum)
        for slug in ("forum", "staff-forum", "mapped-forum"):
            setup.forums[slug] = setup.settings_of(slug, SECRET)
        setup.forums["open-forum"] = setup.settings_of("open-forum", OTHER_SECRET)
        # The forum's settings are what its admin typed: a dict the tests may change.
        with serve(mount_demo_forum(lambda slug: setup.forums.get(slug)), port=forum_port):
            yield setup


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, database_url: str) -> Iterator[Setup]:
    with bridge_and_forum(tmp_path_factory.mktemp("discourse"), database_url) as found:
        yield found


def login(browser: httpx.Client, username: str, request_id: str | None = None) -> httpx.Response:
    """Submit the bridge's sign-in form like a person (for ``request_id``, or plain /login)."""
    page = browser.get("/login", params={"request": request_id} if request_id else None)
    fields = hidden_fields(page.text)
    return browser.post("/login", data={**fields, "username": username, "password": "password1"})


@pytest.fixture(scope="module")
def jane(setup: Setup) -> Iterator[httpx.Client]:
    """A browser signed in to the bridge as Jane Doe (regular member, organization)."""
    with setup.browser() as browser:
        assert login(browser, "jdoe").status_code == 303
        yield browser


def text(response: httpx.Response) -> str:
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", response.text)))


def signed(fields: dict[str, str] | list[tuple[str, str]], secret: str = SECRET) -> dict[str, str]:
    """``sso`` and ``sig`` as a forum signs ``fields``."""
    sso = base64.b64encode(urlencode(fields).encode()).decode()
    return {"sso": sso, "sig": hmac.new(secret.encode(), sso.encode(), hashlib.sha256).hexdigest()}


def request_for(setup: Setup, slug: str = "forum", **extra: str) -> dict[str, str]:
    """A genuine request of forum ``slug``, as the forum would sign it."""
    back = f"{setup.forum}/{slug}/session/sso_login"
    return signed(
        {"nonce": secrets.token_hex(16), "return_sso_url": back, **extra}, setup.secret(slug)
    )


@dataclass
class Answer:
    """The bridge's 302 to the forum, and the payload it carries."""

    response: httpx.Response
    location: str
    fields: dict[str, str]

    @property
    def target(self) -> str:
        parts = urlsplit(self.location)
        return f"{parts.scheme}://{parts.netloc}{parts.path}"


def answer_of(response: httpx.Response, secret: str = SECRET) -> Answer:
    """Check the bridge's answer as Discourse would, and decode it."""
    assert response.status_code == 302, response.text
    assert response.headers["cache-control"] == "no-store"
    location = response.headers["location"]
    query = parse_qs(urlsplit(location).query)
    sso, sig = query["sso"][0], query["sig"][0]
    assert re.fullmatch(r"[A-Za-z0-9+/]+={0,2}", sso)  # strict Base64: no line breaks
    assert hmac.compare_digest(
        sig, hmac.new(secret.encode(), sso.encode(), hashlib.sha256).hexdigest()
    )
    fields = dict(parse_qsl(base64.b64decode(sso, validate=True).decode(), keep_blank_values=True))
    assert "admin" not in fields  # E8, in every answer
    assert "moderator" not in fields
    return Answer(response=response, location=location, fields=fields)


def walk(
    browser: httpx.Client, url: str, username: str | None = None, *, stop_at: str | None = None
) -> list[httpx.Response]:
    """Follow redirects like a browser across the forum and the bridge, signing in to the
    bridge as ``username`` when asked; stops after a response whose URL starts with
    ``stop_at`` (or at the first one that is not a redirect). Returns every response."""
    seen = [browser.get(url)]
    for _ in range(12):
        last = seen[-1]
        if stop_at and str(last.request.url).startswith(stop_at):
            return seen
        location = last.headers.get("location")
        if last.status_code not in (302, 303) or not location:
            return seen
        target = str(last.request.url.join(location))
        if urlsplit(target).path == "/login":
            assert username is not None, "the bridge asked for a sign-in"
            request_id = parse_qs(urlsplit(target).query)["request"][0]
            seen.append(login(browser, username, request_id))
        else:
            seen.append(browser.get(target))
    raise AssertionError("too many redirects")


def bridge_answer(setup: Setup, responses: list[httpx.Response]) -> httpx.Response:
    """The bridge's last response in a walk (its answer to the forum, or a page)."""
    return [r for r in responses if str(r.request.url).startswith(setup.bridge.url)][-1]


def forum_sign_in(
    setup: Setup, browser: httpx.Client, slug: str = "forum", username: str | None = None
) -> tuple[Answer, httpx.Response]:
    """Log In on demo forum ``slug`` through the bridge: the answer and the forum's page."""
    responses = walk(browser, f"{setup.forum}/{slug}/session/sso?return_path=/", username)
    return answer_of(bridge_answer(setup, responses), setup.secret(slug)), responses[-1]


# --- the round trip ---------------------------------------------------------------------------


def test_new_person_signs_in_and_the_forum_accepts_the_answer(setup: Setup) -> None:
    with setup.browser() as browser:
        first = browser.get(f"{setup.forum}/forum/session/sso?return_path=/")
        assert first.status_code == 302
        connect = urlsplit(first.headers["location"])
        assert f"{connect.scheme}://{connect.netloc}{connect.path}" == (
            f"{setup.bridge.url}/discourse/forum"
        )
        to_login = browser.get(first.headers["location"])
        assert to_login.status_code == 303
        assert to_login.headers["location"].startswith("/login?request=")
        answer, page = forum_sign_in(setup, browser, username="clocal")
    assert answer.target == f"{setup.forum}/forum/session/sso_login"
    assert answer.fields["external_id"] == "23212"
    assert answer.fields["email"] == "carla.lopez@example.org"
    assert answer.fields["name"] == "Carla Lopez"
    assert answer.fields["require_activation"] == "true"  # E8: emails not known verified
    assert page.status_code == 200
    assert "Welcome, Carla Lopez" in text(page)  # the forum checked signature and nonce


def test_the_answer_echoes_the_nonce_and_nothing_more(jane: httpx.Client, setup: Setup) -> None:
    nonce = secrets.token_hex(16)
    sent = signed({"nonce": nonce, "return_sso_url": f"{setup.forum}/forum/session/sso_login"})
    answer = answer_of(jane.get("/discourse/forum", params=sent))
    assert list(answer.fields) == ["nonce", "external_id", "email", "name", "require_activation"]
    assert answer.fields["nonce"] == nonce
    assert answer.fields["external_id"] == "23210"
    assert answer.fields["name"] == "Jane Doe"


def test_returning_session_gets_the_answer_without_the_login_page(
    jane: httpx.Client, setup: Setup
) -> None:
    responses = walk(jane, f"{setup.forum}/forum/session/sso?return_path=/")
    assert not any(urlsplit(str(r.request.url)).path == "/login" for r in responses)
    answer = answer_of(bridge_answer(setup, responses))
    assert answer.fields["email"] == "jane.doe@example.org"
    assert "Welcome, Jane Doe" in text(responses[-1])


def test_sign_in_at_the_forum_also_signs_in_to_oidc_apps(setup: Setup) -> None:
    with setup.browser() as browser:
        forum_sign_in(setup, browser, username="zoe")
        page = browser.get("/login")
    assert page.status_code == 200
    assert "You are signed in" in page.text


def test_the_signed_request_survives_the_sign_in_page(setup: Setup) -> None:
    """Ruby's Base64 wraps lines; the signature is over the value as sent, line breaks
    included, and must still verify when the bridge sends the person back after sign-in."""
    fields = {
        "nonce": "a+b/c=d " + secrets.token_hex(8),
        "return_sso_url": f"{setup.forum}/forum/session/sso_login?x=1&y=%2B",
    }
    plain = base64.b64encode(urlencode(fields).encode()).decode()
    wrapped = "".join(plain[i : i + 60] + "\n" for i in range(0, len(plain), 60))
    sig = hmac.new(SECRET.encode(), wrapped.encode(), hashlib.sha256).hexdigest()
    with setup.browser() as browser:
        url = f"{setup.bridge.url}/discourse/forum?sso={quote(wrapped, safe='')}&sig={sig}"
        responses = walk(browser, url, "bsmith", stop_at=setup.forum)
    answer = answer_of(bridge_answer(setup, responses))
    assert answer.fields["nonce"] == fields["nonce"]
    assert answer.fields["external_id"] == "23211"
    assert answer.location.startswith(f"{setup.forum}/forum/session/sso_login?x=1&y=%2B&sso=")


def test_prompt_none_without_a_session_answers_failed_without_a_page(setup: Setup) -> None:
    with setup.browser() as browser:
        sent = request_for(setup, prompt="none")
        response = browser.get("/discourse/forum", params=sent)
        answer = answer_of(response)
        assert set(answer.fields) == {"nonce", "failed"}
        assert answer.fields["failed"] == "true"
        assert (
            answer.fields["nonce"] == parse_qs(base64.b64decode(sent["sso"]).decode())["nonce"][0]
        )
        assert "set-cookie" not in response.headers  # no pending sign-in, no page
        # Through the demo forum: it is told nobody is signed in.
        responses = walk(browser, f"{setup.forum}/forum/session/sso?prompt=none&return_path=/")
    assert str(responses[-1].request.url) == f"{setup.forum}/forum/?sso=failed"
    assert "failed=true" in text(responses[-1])


def test_prompt_none_with_a_session_answers_for_the_person(
    jane: httpx.Client, setup: Setup
) -> None:
    answer = answer_of(jane.get("/discourse/forum", params=request_for(setup, prompt="none")))
    assert answer.fields["external_id"] == "23210"
    assert "failed" not in answer.fields


# --- the request (SECURITY E7) ---------------------------------------------------------------


def _refused(response: httpx.Response) -> None:
    assert response.status_code == 400, response.text
    assert "location" not in response.headers
    assert "cannot accept" in text(response)
    assert "sso=" not in response.text


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("wrong_secret", "bad_signature"),
        ("upper_hex_sig", "bad_sig_format"),
        ("short_sig", "bad_sig_format"),
        ("sig_over_decoded_payload", "bad_signature"),
        ("plus_became_space", "not_base64"),
        ("urlsafe_alphabet", "not_base64"),
        ("no_sso", "no_sso"),
        ("no_sig", "bad_sig_format"),
        ("no_nonce", "no_nonce"),
        ("no_return_url", "no_return_url"),
        ("repeated_field", "duplicate_field"),
        ("tampered_payload", "bad_signature"),
    ],
)
def test_e7_a_request_that_is_not_genuine_gets_no_answer(
    jane: httpx.Client, setup: Setup, case: str, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    back = f"{setup.forum}/forum/session/sso_login"
    good = request_for(setup)
    payload = base64.b64decode(good["sso"]).decode()
    params: dict[str, str] = {
        "wrong_secret": signed({"nonce": "n1", "return_sso_url": back}, OTHER_SECRET),
        "upper_hex_sig": {**good, "sig": good["sig"].upper()},
        "short_sig": {**good, "sig": good["sig"][:40]},
        "sig_over_decoded_payload": {
            **good,
            "sig": hmac.new(SECRET.encode(), payload.encode(), hashlib.sha256).hexdigest(),
        },
        "plus_became_space": _with_a_plus(back),
        "urlsafe_alphabet": {**good, "sso": good["sso"].rstrip("=") + "-_"},
        "no_sso": {"sig": good["sig"]},
        "no_sig": {"sso": good["sso"]},
        "no_nonce": signed({"return_sso_url": back}),
        "no_return_url": signed({"nonce": "n2"}),
        "repeated_field": signed([("nonce", "n3"), ("return_sso_url", back), ("nonce", "n4")]),
        "tampered_payload": {
            **good,
            "sso": base64.b64encode(payload.replace("sso_login", "elsewhere").encode()).decode(),
        },
    }[case]
    assert params != good
    if case == "plus_became_space":  # a link rewriter turned '+' into ' '
        params = {**params, "sso": params["sso"].replace("+", " ")}
    with caplog.at_level(logging.WARNING, logger="bridge.discourse"):
        response = jane.get("/discourse/forum", params=params)
    _refused(response)
    assert f"registration=forum {reason}:" in caplog.text
    assert SECRET not in caplog.text


def _with_a_plus(back: str) -> dict[str, str]:
    """A genuine request whose Base64 holds a '+': only bytes beyond ASCII give one, so
    the nonce goes as raw UTF-8 here ("nonce=ûï¾" encodes to "bm9uY2U9w7vDr8K+")."""
    raw = f"nonce=\u00fb\u00ef\u00be&return_sso_url={quote(back, safe='')}"
    sso = base64.b64encode(raw.encode()).decode()
    assert "+" in sso
    return {"sso": sso, "sig": hmac.new(SECRET.encode(), sso.encode(), hashlib.sha256).hexdigest()}


RETURN_URL_ATTACKS = [
    "https://evil.example/session/sso_login",
    "{origin}.evil.example/_demo/discourse/forum/session/sso_login",
    "http://127.0.0.1.evil.example{path}/session/sso_login",
    "http://127.0.0.1:{port}@evil.example{path}/session/sso_login",
    "http://evil.example@127.0.0.1:{port}{path}/session/sso_login",
    "https://127.0.0.1:{port}{path}/session/sso_login",
    "http://127.0.0.1:{other_port}{path}/session/sso_login",
    "http://localhost:{port}{path}/session/sso_login",
    "{origin}/_demo/discourse/other/session/sso_login",
    "{origin}{path}/../../evil/session/sso_login",
    "{origin}{path}/%2e%2e/%2e%2e/evil",
    "{origin}//evil.example{path}/session/sso_login",
    "{origin}{path}\\..\\evil",
    "{origin}{path}/session/sso_login#@evil.example",
    "{origin}{path}/session/sso_login\r\nLocation: https://evil.example/",
    "{origin}{path}/session/sso_login%0d%0aLocation:%20https://evil.example/",
    "javascript:alert(document.cookie)//{origin}{path}",
    "//evil.example{path}/session/sso_login",
    "{path}/session/sso_login",
]


@pytest.mark.parametrize("attack", RETURN_URL_ATTACKS)
def test_e7_a_return_url_off_the_forum_gets_no_answer(
    jane: httpx.Client, setup: Setup, attack: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Signed with the right secret, for a signed-in person: still nothing is sent."""
    parts = urlsplit(setup.forum)
    url = attack.format(
        origin=f"{parts.scheme}://{parts.netloc}",
        port=parts.port,
        other_port=(parts.port or 0) + 1,
        path=f"{parts.path}/forum",
    )
    with caplog.at_level(logging.WARNING, logger="bridge.discourse"):
        response = jane.get(
            "/discourse/forum", params=signed({"nonce": "n", "return_sso_url": url})
        )
    _refused(response)
    assert "registration=forum return_url:" in caplog.text


def test_e7_a_request_signed_for_another_forum_is_refused(jane: httpx.Client, setup: Setup) -> None:
    """open-forum's secret and return URL sent to forum's connect URL: refused."""
    _refused(jane.get("/discourse/forum", params=request_for(setup, "open-forum")))


def test_e7_a_replayed_answer_is_refused_by_the_forum(setup: Setup) -> None:
    """The nonce works once, in the browser that asked (as Discourse checks it)."""
    with setup.browser() as browser:
        answer, page = forum_sign_in(setup, browser, username="zoe")
        assert page.status_code == 200
        again = browser.get(answer.location)
        assert again.status_code == 400
        assert "Nonce has already been used" in text(again)
    with setup.browser() as elsewhere:  # a fresh nonce, answered into another browser
        with setup.browser() as victim:
            asked = victim.get(f"{setup.forum}/forum/session/sso")
            assert login(elsewhere, "zoe").status_code == 303
            stolen = answer_of(elsewhere.get(asked.headers["location"]))
        refused = elsewhere.get(stolen.location)
    assert refused.status_code == 400
    assert "different browser session" in text(refused)


# --- what the forum receives (SECURITY E8) -----------------------------------------------------


def test_e8_mapped_fields_are_sent_and_staff_flags_never(jane: httpx.Client, setup: Setup) -> None:
    answer = answer_of(
        jane.get("/discourse/mapped-forum", params=request_for(setup, "mapped-forum"))
    )
    assert answer.fields["username"] == "jdoe"
    assert answer.fields["groups"] == "REG"
    assert answer.fields["custom.chapter"] == "Capital"
    assert answer.fields["title"] == "Director"
    assert answer.fields["require_activation"] == "true"
    # answer_of checks admin and moderator are absent; nothing OIDC-only leaks either.
    assert not {"sub", "given_name", "family_name", "email_verified", "phone_number"} & set(
        answer.fields
    )


@pytest.mark.parametrize("staff", ["admin", "moderator"])
def test_e8_a_registration_mapping_a_staff_flag_is_refused_at_config_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], staff: str
) -> None:
    folder = write_config(
        tmp_path / "config",
        issuer="http://127.0.0.1:9",
        database_url=f"sqlite:///{tmp_path / 'bridge.db'}",
        imis_url="http://127.0.0.1:9",
        registrations={
            "escalate": _forum("escalate", SECRET, f'[claims]\n{staff} = "member_type"\n').replace(
                "{forum}", "https://forum.contoso.org"
            ),
        },
    )
    assert cli.main(["check-config", "--config", str(folder)]) != 0
    err = capsys.readouterr().err
    assert f"claims.{staff}" in err
    assert "staff powers" in err


def test_e8_no_require_activation_when_imis_emails_are_verified(
    tmp_path: Path, database_url: str
) -> None:
    verified = "[imis]\nemails_verified = true\n"
    with (
        bridge_and_forum(tmp_path, database_url, extra=verified) as setup,
        setup.browser() as browser,
    ):
        answer, page = forum_sign_in(setup, browser, username="jdoe")
    assert "require_activation" not in answer.fields
    assert answer.fields["email"] == "jane.doe@example.org"
    assert page.status_code == 200


# --- refusals ---------------------------------------------------------------------------------


def _refusal_page(setup: Setup, responses: list[httpx.Response]) -> httpx.Response:
    response = bridge_answer(setup, responses)
    assert response.status_code == 403, response.text
    assert "location" not in response.headers
    assert not any(str(r.request.url).startswith(setup.forum) for r in responses)
    # The same page as Zendesk's refusals: a way out with another account.
    assert "Sign out to use another account" in response.text
    return response


def test_no_primary_email_is_refused_with_a_clear_page(
    setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    with setup.browser() as browser, caplog.at_level(logging.INFO, logger="bridge.discourse"):
        responses = walk(browser, f"/discourse/forum?{urlencode(request_for(setup))}", "noemail")
    page = _refusal_page(setup, responses)
    assert "no primary email address" in text(page)
    assert "imis_id=23219 has no primary email" in caplog.text


def test_organization_record_cannot_sign_in(setup: Setup) -> None:
    with setup.browser() as browser:
        responses = walk(browser, f"/discourse/forum?{urlencode(request_for(setup))}", "contoso")
    response = responses[-1]
    assert response.status_code == 403
    assert "organization" in text(response).lower()
    assert not any(str(r.request.url).startswith(setup.forum) for r in responses)


def test_shared_primary_email_is_refused_and_the_admin_is_told_both_ids(
    setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    with setup.browser() as browser, caplog.at_level(logging.INFO, logger="bridge.discourse"):
        responses = walk(browser, f"/discourse/forum?{urlencode(request_for(setup))}", "sam")
    page = text(_refusal_page(setup, responses))
    assert "Your email address is shared" in page
    assert "archers@example.org" in page
    assert "23217" not in page  # the other person's id is for the admin only
    refusal = [r.getMessage() for r in caplog.records if "shares primary email" in r.getMessage()]
    assert refusal
    assert "registration=forum imis_id=23216" in refusal[0]
    assert "23217" in refusal[0]
    assert "23218" not in refusal[0]  # Robin cannot sign in, so is no risk


def test_shared_primary_email_is_allowed_when_switched_off(setup: Setup) -> None:
    with setup.browser() as browser:
        answer, page = forum_sign_in(setup, browser, "open-forum", username="alex")
    assert answer.fields["email"] == "archers@example.org"
    assert answer.fields["external_id"] == "23217"
    assert page.status_code == 200


def test_access_rule_refuses_with_its_message(jane: httpx.Client, setup: Setup) -> None:
    responses = [jane.get("/discourse/staff-forum", params=request_for(setup, "staff-forum"))]
    page = _refusal_page(setup, responses)
    assert "The staff forum is for staff only." in text(page)


def test_access_rule_lets_staff_in(setup: Setup) -> None:
    with setup.browser() as browser:
        answer, _ = forum_sign_in(setup, browser, "staff-forum", username="manager")
    assert answer.fields["external_id"] == "10001"


def test_imis_unavailable_is_a_503_with_retry_after(setup: Setup) -> None:
    with setup.browser() as browser:
        assert login(browser, "inactive").status_code == 303
        setup.bridge.set_faults(status=503, retry_after=7)
        try:
            response = browser.get("/discourse/forum", params=request_for(setup))
        finally:
            setup.bridge.clear_faults()
    assert response.status_code == 503
    assert int(response.headers["retry-after"]) >= 1
    assert "try again" in text(response).lower()
    assert "location" not in response.headers


@pytest.mark.parametrize("slug", ["nope", "portal", "UPPER", "a" * 200])
def test_unknown_or_non_discourse_registration_is_a_404(setup: Setup, slug: str) -> None:
    response = httpx.get(f"{setup.bridge.url}/discourse/{slug}", params=request_for(setup))
    assert response.status_code == 404
    assert "no Discourse sign-in at this address" in text(response)


def test_continue_with_an_unknown_request_is_refused(setup: Setup) -> None:
    response = httpx.get(f"{setup.bridge.url}/discourse/continue", params={"request": "forged"})
    assert response.status_code == 400
    assert "log in again" in text(response)


# --- logout -----------------------------------------------------------------------------------


def test_logout_url_ends_the_session_and_shows_the_signed_out_page(setup: Setup) -> None:
    with setup.browser() as browser:
        forum_sign_in(setup, browser, username="zoe")
        cookies = dict(browser.cookies)
        # The forum's Log out goes to its logout_redirect: the bridge's logout URL.
        responses = walk(browser, f"{setup.forum}/forum/session/logout")
        page = responses[-1]
        assert str(page.request.url) == f"{setup.bridge.url}/discourse/forum/logout"
        assert page.status_code == 200
        assert page.headers["cache-control"] == "no-store"
        assert "You are signed out" in text(page)
        assert "and of Contoso Association sign-in" in text(page)
        assert f'href="{setup.forum}/forum/"' in page.text
        again = browser.get("/discourse/forum", params=request_for(setup))
        assert again.headers["location"].startswith("/login")
    with setup.bridge.client(cookies=cookies) as replay:  # the old cookie is dead server-side
        stale = replay.get("/discourse/forum", params=request_for(setup))
        assert stale.headers["location"].startswith("/login")


def test_logout_url_without_a_session_still_says_signed_out(setup: Setup) -> None:
    response = httpx.get(f"{setup.bridge.url}/discourse/forum/logout")
    assert response.status_code == 200
    assert "You have signed out of Forum on this browser." in text(response)


def test_logout_url_of_an_unknown_registration_is_a_404(setup: Setup) -> None:
    response = httpx.get(f"{setup.bridge.url}/discourse/portal/logout")
    assert response.status_code == 404


# --- the connect secret ------------------------------------------------------------------------


def _cli(monkeypatch: pytest.MonkeyPatch, config: Path, *args: str, secret: str) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(secret + "\n"))
    assert cli.main(["registrations", *args, "--config", str(config), "--secret-stdin"]) == 0


def test_a_stored_registration_publishes_its_urls_and_a_new_secret_applies_within_seconds(
    setup: Setup,
    jane: httpx.Client,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Added with the CLI (the secret on stdin, kept encrypted), rotated while the bridge
    runs: the CLI is another process, so the bridge uses the new secret from the next
    request after ``registry_cache_seconds``."""
    slug = f"stored-{secrets.token_hex(3)}"
    first, second = secrets.token_hex(32), secrets.token_hex(32)
    config = setup.bridge.config_dir
    url = f"{setup.forum}/{slug}"
    _cli(monkeypatch, config, "add", slug, "--set", "profile=discourse",
         "--set", "name=Stored Forum", "--set", f"discourse_url={url}", secret=first)  # fmt: skip
    try:
        capsys.readouterr()
        assert cli.main(["registrations", "show", slug, "--config", str(config)]) == 0
        shown = capsys.readouterr().out
        assert f"{setup.bridge.url}/discourse/{slug}" in shown
        assert f"{setup.bridge.url}/discourse/{slug}/logout" in shown
        assert first not in shown
        setup.forums[slug] = setup.settings_of(slug, first)
        before = request_for(setup, slug)
        assert answer_of(jane.get(f"/discourse/{slug}", params=before), first)

        _cli(monkeypatch, config, "rotate-secret", slug, secret=second)
        time.sleep(CACHE_SECONDS + 0.05)

        _refused(jane.get(f"/discourse/{slug}", params=request_for(setup, slug)))
        setup.forums[slug] = setup.settings_of(slug, second)  # the forum admin pastes it too
        answer, page = forum_sign_in(setup, jane, slug)
        assert answer.fields["external_id"] == "23210"
        assert page.status_code == 200
    finally:
        setup.forums.pop(slug, None)
        assert cli.main(["registrations", "remove", slug, "--config", str(config)]) == 0


# --- odd input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/discourse/forum",
        "/discourse/forum?sso=%ff%fe&sig=%00",
        "/discourse/forum?sso=" + "A" * 10000 + "&sig=" + "0" * 64,
        "/discourse/forum?sso=AAAA&sso=BBBB&sig=" + "0" * 64,
        "/discourse/forum?sso=%0A%0A&sig=" + "0" * 64,
        "/discourse/%ff%fe?sso=x&sig=y",
        "/discourse/continue?request=%00",
        "/discourse/continue?request=" + "x" * 500,
        "/discourse/forum/logout?sso=%ff",
        "/discourse/%ff/logout",
    ],
)
def test_odd_input_is_never_a_server_error(jane: httpx.Client, path: str) -> None:
    response = jane.get(path)
    assert response.status_code < 500, response.text
    assert "sso=" not in response.headers.get("location", "")
