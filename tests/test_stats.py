"""How an answer becomes a counted outcome (:mod:`bridge.stats`), and that counting never breaks
a sign-in. The counting over real HTTP is tests/e2e/test_sign_in_stats.py."""

from __future__ import annotations

import logging
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
from starlette.requests import Request
from starlette.responses import Response

from bridge import stats
from bridge.access import IMISUnavailable
from bridge.connectors import AccountDisabled, OrganizationAccount, Unavailable, WrongCredentials
from bridge.errors import Forbidden
from bridge.identity import Identity
from bridge.metrics import Metrics
from bridge.storage import DatabaseUnavailable
from bridge.storage.stats import Outcome

pytestmark = pytest.mark.anyio


class FakeStore:
    def __init__(self, error: Exception | None = None) -> None:
        self.counted: list[tuple[str, Outcome]] = []
        self.error = error

    def count_sign_in(self, registration: str, outcome: Outcome, *, now: int) -> None:
        if self.error is not None:
            raise self.error
        self.counted.append((registration, outcome))


class FakeDb:
    async def run(self, fn: Callable[[], Any]) -> Any:
        return fn()


def request_with(store: FakeStore) -> Request:
    services = SimpleNamespace(store=store, db=FakeDb(), metrics=Metrics())
    app = SimpleNamespace(state=SimpleNamespace(services=services))
    return Request({"type": "http", "method": "GET", "path": "/", "headers": [], "app": app})


async def answer(status: int, noted: Outcome | None = None, request: Request | None = None) -> Any:
    if noted is not None and request is not None:
        stats.note(request, noted)
    return Response(status_code=status)


async def test_an_answer_is_a_success_unless_it_is_an_error() -> None:
    store = FakeStore()
    request = request_with(store)
    await stats.counted(request, "portal", answer(303))
    await stats.counted(request, "desk", answer(200))
    await stats.counted(request, "desk", answer(403))
    assert store.counted == [
        ("portal", Outcome.SUCCESS),
        ("desk", Outcome.SUCCESS),
        ("desk", Outcome.OTHER),
    ]


async def test_a_sign_in_is_counted_in_the_metrics_even_when_the_database_fails() -> None:
    request = request_with(FakeStore(error=DatabaseUnavailable("down")))
    await stats.counted(request, "desk", answer(200))
    metrics: Metrics = request.app.state.services.metrics
    sample = metrics.registry.get_sample_value(
        "bridge_sign_ins_total", {"registration": "desk", "outcome": "success"}
    )
    assert sample == 1


async def test_a_noted_refusal_is_counted_once_with_its_reason() -> None:
    store = FakeStore()
    request = request_with(store)
    # prompt=none access_denied is a redirect (303), still a refusal.
    response = await stats.counted(request, "portal", answer(303, Outcome.ACCESS_RULE, request))
    assert response.status_code == 303
    await stats.counted(request, "desk", answer(403, Outcome.NO_EMAIL, request))
    await stats.counted(request, "desk", answer(200))  # the note was used up
    assert store.counted == [
        ("portal", Outcome.ACCESS_RULE),
        ("desk", Outcome.NO_EMAIL),
        ("desk", Outcome.SUCCESS),
    ]


async def test_imis_failing_meanwhile_is_counted_and_raised() -> None:
    store = FakeStore()
    request = request_with(store)

    async def failing() -> Response:
        raise IMISUnavailable("iMIS is down", retry_after=3)

    with pytest.raises(IMISUnavailable):
        await stats.counted(request, "desk", failing())
    assert store.counted == [("desk", Outcome.IMIS_UNAVAILABLE)]


@pytest.mark.parametrize(
    "error", [DatabaseUnavailable(), Forbidden("no"), RuntimeError("a bug")], ids=repr
)
async def test_other_errors_pass_uncounted(error: Exception) -> None:
    """The database failing is not iMIS failing; an error is not a sign-in outcome."""
    store = FakeStore()

    async def failing() -> Response:
        raise error

    with pytest.raises(type(error)):
        await stats.counted(request_with(store), "desk", failing())
    assert store.counted == []


async def test_the_sign_in_page_counts_its_refusals_not_its_successes() -> None:
    store = FakeStore()
    request = request_with(store)
    person = Identity(imis_id="1", username="jdoe", full_name="Jane Doe")
    for outcome in (
        WrongCredentials(),
        AccountDisabled(),
        OrganizationAccount(imis_id="2"),
        Unavailable(retry_after=1, detail="down"),
        person,
    ):
        await stats.count_login(request, "desk", outcome)
    await stats.count_login(request, None, WrongCredentials())
    assert store.counted == [
        ("desk", Outcome.WRONG_PASSWORD),
        ("desk", Outcome.ACCOUNT_DISABLED),
        ("desk", Outcome.ORGANIZATION),
        ("desk", Outcome.IMIS_UNAVAILABLE),
        ("-", Outcome.WRONG_PASSWORD),
    ]


@pytest.mark.parametrize("error", [DatabaseUnavailable(), RuntimeError("a bug")], ids=repr)
async def test_a_failure_to_count_is_logged_and_swallowed(
    error: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    """G2: the database failing to count a sign-in does not fail the sign-in."""
    store = FakeStore(error)
    request = request_with(store)
    with caplog.at_level(logging.WARNING, logger="bridge.stats"):
        response = await stats.counted(request, "desk", answer(200))
        await stats.count_login(request, "desk", WrongCredentials())
    assert response.status_code == 200
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "sign-in not counted: registration=desk outcome=success",
        "sign-in not counted: registration=desk outcome=wrong_password",
    ]
