"""The check that no log line of the suite holds a secret (tests/support/leaks.py, SECURITY D6)
can fail: a secret, a handed-out token or a tell-tale pattern in a line is caught."""

from __future__ import annotations

import logging

import httpx

from tests.support.leaks import CapturingHandler, leaks, register_response


def captured(message: str, *args: object) -> list[str]:
    handler = CapturingHandler()
    logger = logging.getLogger("bridge.test.leaks")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning(message, *args)
    finally:
        logger.removeHandler(handler)
    return handler.lines


def test_a_logged_registered_secret_is_caught_in_both_formats() -> None:
    lines = captured("signing in with %s", "hunter2-secret")
    found = leaks(lines, {"hunter2-secret"}, set())
    assert len(found) == 2  # the text line and the JSON line
    assert all("holds: hunter2-secret" in line for line in found)


def test_a_token_handed_out_in_a_response_is_caught_when_logged() -> None:
    handed_out: set[str] = set()
    response = httpx.Response(
        303,
        headers=[
            ("set-cookie", "bridge_session=Zk3-session-value_0123; HttpOnly; Path=/"),
            ("location", "https://app.example.org/cb?code=code-abcdef123&state=s"),
        ],
    )
    register_response(response)
    from tests.support import leaks as module

    handed_out = module._handed_out
    assert {"Zk3-session-value_0123", "code-abcdef123"} <= handed_out
    found = leaks(captured("redirect to /cb?code=%s", "code-abcdef123"), set(), handed_out)
    assert len(found) == 2


def test_bearer_and_password_fields_are_caught_whatever_their_value() -> None:
    lines = [*captured("Authorization: Bearer abc"), *captured("body: user=a&password=b")]
    assert len(leaks(lines, set(), set())) == 4


def test_a_clean_line_passes() -> None:
    assert leaks(captured("sign-in ok: username=%r", "jdoe"), {"password1"}, {"tok-123456"}) == []
