"""The scheduled purge loop (SECURITY D8): a failure is logged and the next turn runs anyway.

The purge against a served bridge is tests/e2e/test_housekeeping.py; what it
deletes is pinned by the storage suite.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from bridge.housekeeping import purge_periodically
from bridge.settings import Settings
from bridge.storage import DatabaseUnavailable


class FlakyStore:
    """Fails its first purges (a database outage, then a bug), then works."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.outcomes: list[BaseException | dict[str, int] | None] = [
            DatabaseUnavailable(detail="OperationalError: connection refused"),
            RuntimeError("a bug"),
            None,  # another process is purging
            {"sessions": 2, "pending requests": 0},
        ]

    def purge_expired(self, **kwargs: Any) -> dict[str, int] | None:
        self.calls.append(kwargs)
        outcome = self.outcomes[min(len(self.calls), len(self.outcomes)) - 1]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


class InlineDb:
    async def run(self, fn: Callable[[], Any]) -> Any:
        return fn()


@pytest.mark.anyio
async def test_d8_a_failed_purge_is_logged_and_never_stops_the_schedule(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="bridge.housekeeping")
    store = FlakyStore()
    settings = Settings(issuer="http://127.0.0.1:8000", config_dir=Path("."))
    services = SimpleNamespace(settings=settings, db=InlineDb(), store=store)
    task = asyncio.create_task(purge_periodically(services, 0.01))
    for _ in range(500):
        if len(store.calls) >= 5:
            break
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(store.calls) >= 5
    assert store.calls[0]["session_idle_seconds"] == settings.sessions.idle_seconds
    messages = [
        (r.levelname, r.getMessage()) for r in caplog.records if r.name == "bridge.housekeeping"
    ]
    assert messages[:4] == [
        (
            "WARNING",
            "scheduled purge skipped: database unavailable (OperationalError: connection refused)",
        ),
        ("ERROR", "scheduled purge failed; trying again at the next turn"),
        ("DEBUG", "scheduled purge skipped: another process is purging"),
        ("INFO", "purged expired rows: sessions: 2, pending requests: 0"),
    ]
