"""Schemathesis against ``/admin/api/openapi.json`` on a real bridge over loopback.

Every operation of the document gets generated requests, valid and invalid
(wrong types, missing and unknown fields, odd strings), with a valid admin
token; Schemathesis checks that none is answered with a 5xx, that every answer's
status, content type, headers and body are the ones the document declares, that
data the document forbids is refused, that an undocumented method gets 405 and
that leaving the token out gets 401 (SECURITY F4). Bounded: a few dozen
examples per operation, about half a minute in all (a hundred took a minute).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from bridge.admin.openapi import PREFIX, document
from bridge.plugin import load_profiles
from tests.e2e.test_admin_api import create_token
from tests.support.bridge import Harness, running_bridge

ZENDESK = """
name = "Fuzzed Helpdesk"
profile = "zendesk"
subdomain = "fuzzed"
shared_secret = "fuzzed-zendesk-shared-secret-0123456789"
"""
PLACEHOLDER_ISSUER = "http://bridge.invalid"
#: Examples per operation (each is one request; most are answered in a few ms).
EXAMPLES = 50


@pytest.fixture(scope="module")
def bridge(tmp_path_factory: pytest.TempPathFactory, database_url: str) -> Iterator[Harness]:
    with running_bridge(
        tmp_path_factory.mktemp("admin-api-fuzz"),
        database_url,
        registrations={"fuzzed-desk": ZENDESK},
    ) as harness:
        yield harness


#: The token of the running bridge, for the auth provider below.
TOKEN: dict[str, str] = {}
PENDING = "token-not-made-yet"


@pytest.fixture(scope="module")
def token(bridge: Harness) -> Iterator[str]:
    TOKEN["value"] = create_token(bridge, "fuzz")
    yield TOKEN["value"]
    TOKEN.clear()


#: The document as the bridge serves it (the installed profiles'), built when the module is
#: collected: Schemathesis's fixture-loaded schemas rely on a pytest internal that
#: pytest 9 no longer has. test_the_fuzzed_document_is_the_served_one checks it is the same.
DOCUMENT = document(load_profiles(), PLACEHOLDER_ISSUER)
schema = schemathesis.openapi.from_dict(DOCUMENT)


@schema.auth()
class AdminToken:
    """The bearer token on every generated request, except those Schemathesis sends
    without it on purpose (it then expects 401: "missing required header", "ignored auth")."""

    def get(self, case: Any, context: Any) -> str:
        # Some cases are made when the module is collected, before the bridge runs:
        # they carry a stand-in the test swaps for the token.
        return TOKEN.get("value", PENDING)

    def set(self, case: Any, data: str, context: Any) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


def test_the_fuzzed_document_is_the_served_one(bridge: Harness) -> None:
    served = httpx.get(f"{bridge.url}{PREFIX}/openapi.json", timeout=10).json()
    assert served == document(load_profiles(), bridge.url)
    assert served["paths"] == DOCUMENT["paths"]
    assert served["components"] == DOCUMENT["components"]


@pytest.mark.slow
@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
def test_the_admin_api_never_answers_5xx_and_keeps_to_its_document(
    case: Any, bridge: Harness, token: str
) -> None:
    """All built-in checks but "positive data is accepted": the document says a
    redirect URI is a string, the profile refuses most strings (400)."""
    if (case.headers or {}).get("Authorization") == f"Bearer {PENDING}":
        case.headers["Authorization"] = f"Bearer {token}"
    case.call_and_validate(
        base_url=f"{bridge.url}{PREFIX}",
        excluded_checks=[positive_data_acceptance],
        timeout=10,
    )
