"""Fixtures of the end-to-end suites: a raw loopback HTTP client and a browser.

Each module starts its own ``bridge`` (module-scoped ``running_bridge``); these
fixtures ride on whichever one the module defines.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.oauth.rp import http_client, new_browser
from tests.support.bridge import Harness


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    """One plain client for the RP's back-channel calls (token, userinfo, introspection)."""
    with http_client() as client:
        yield client


@pytest.fixture
def browser(bridge: Harness) -> Iterator[httpx.Client]:
    """A fresh browser (its own cookie jar) on the module's bridge."""
    with new_browser(bridge) as client:
        yield client
