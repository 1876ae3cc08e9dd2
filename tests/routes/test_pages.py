"""What a member sees when something is wrong, over real HTTP.

A page that is not there leads back to the sign-in page and to the support
address; no page a member sees carries an administrator's command (``bridge
registrations ...``, ``bridge keys ...``): those go to the log, where the
operator looks.
"""

from __future__ import annotations

import argparse
import logging
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from bridge.cli import build_parser
from bridge.keys import KeyStore
from tests.support.bridge import Harness, running_bridge

HELPDESK = """
name = "Contoso Helpdesk"
profile = "zendesk"
subdomain = "contoso"
shared_secret = "helpdesk-shared-secret-0123456789abcdef"
"""
UI = """\
[ui]
support_email = "help@example.org"
"""


def _commands() -> list[str]:
    parser = build_parser()
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return sorted(actions[0].choices)


#: ``bridge <command>`` for every command the CLI has, as an operator would type it.
CLI_COMMAND = re.compile(rf"\bbridge (?:{'|'.join(map(re.escape, _commands()))})\b")


@pytest.fixture(scope="module")
def bridge(tmp_path_factory: pytest.TempPathFactory, database_factory: Any) -> Iterator[Harness]:
    with running_bridge(
        tmp_path_factory.mktemp("pages"),
        database_factory.migrated_url(),
        registrations={"helpdesk": HELPDESK},
        extra=UI,
    ) as harness:
        yield harness


def test_the_cli_pattern_knows_the_commands() -> None:
    assert CLI_COMMAND.search("run `bridge registrations rotate-secret x --secret-stdin`")
    assert CLI_COMMAND.search("bridge keys rotate")
    assert not CLI_COMMAND.search("the clock of the bridge server")


@pytest.mark.parametrize("path", ["/no-such-page", "/zendesk/no-such-desk"])
def test_not_found_page_leads_to_sign_in_and_support(bridge: Harness, path: str) -> None:
    with bridge.client() as client:
        response = client.get(path)
    assert response.status_code == 404
    assert 'href="/login"' in response.text
    assert "Go to the sign-in page" in response.text
    assert 'href="mailto:help@example.org"' in response.text
    assert not CLI_COMMAND.search(response.text)


def test_zendesk_bad_signature_page_has_no_cli_command_and_the_log_has_it(
    bridge: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    query = urlencode({"kind": "error", "message": "Invalid JWT signature"})
    with caplog.at_level(logging.WARNING, logger="bridge.zendesk"), bridge.client() as client:
        response = client.get(f"/zendesk/helpdesk/logout?{query}")
    assert response.status_code == 200
    assert "shared secret no longer matches" in response.text
    assert not CLI_COMMAND.search(response.text)
    assert "bridge registrations rotate-secret helpdesk --secret-stdin" in caplog.text


def test_unreadable_stored_registration_page_has_no_cli_command_and_the_log_has_it(
    bridge: Harness, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A stored secret the keyring cannot decrypt (keys folder lost or not shared)."""
    services = bridge.services
    services.registry.add(
        "lost-desk",
        {**tomllib.loads(HELPDESK), "name": "Lost Desk", "subdomain": "lost"},
        actor="test",
    )
    row = services.store.get_registration("lost-desk")
    row.secret_encrypted = KeyStore.load_or_create(tmp_path / "other").encrypt_secret("s" * 40)
    assert services.store.update_registration(row)

    with caplog.at_level(logging.WARNING, logger="bridge.http"), bridge.client() as client:
        response = client.get("/zendesk/lost-desk")
    assert response.status_code == 500
    assert "not set up correctly" in response.text
    assert "cannot be decrypted" not in response.text
    assert not CLI_COMMAND.search(response.text)
    assert "bridge registrations rotate-secret lost-desk --secret-stdin" in caplog.text
