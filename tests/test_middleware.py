"""The request id and the access line (bridge.middleware.RequestLogMiddleware)."""

from __future__ import annotations

import json
import logging

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route

from bridge.logs import note_outcome, request_id
from bridge.middleware import RequestLogMiddleware, error_handlers
from tests.support.leaks import CapturingHandler

pytestmark = pytest.mark.anyio


async def hello(request: Request) -> Response:
    if request.query_params.get("outcome"):
        note_outcome(request.scope, request.query_params["outcome"])
    return PlainTextResponse(request_id.get())


def app() -> Starlette:
    routes = [
        Route("/healthz", hello),
        Mount("/zendesk", routes=[Route("/{slug}", hello)]),
    ]
    return Starlette(routes=routes, middleware=[Middleware(RequestLogMiddleware)])


async def get(path: str, **kwargs: object) -> httpx.Response:
    transport = httpx.ASGITransport(app=app())
    async with httpx.AsyncClient(transport=transport, base_url="http://bridge") as client:
        return await client.get(path, **kwargs)  # type: ignore[arg-type]


def access_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "bridge.access"]


async def test_a_good_request_id_is_kept_and_returned(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    response = await get("/zendesk/helpdesk?secret=x", headers={"X-Request-ID": "lb:42.a_b-c"})
    assert response.headers["x-request-id"] == "lb:42.a_b-c"
    assert response.text == "lb:42.a_b-c"  # the handler sees it
    [line] = access_lines(caplog)
    assert line.__dict__["route"] == "/zendesk/{slug}"
    assert line.__dict__["registration"] == "helpdesk"
    assert line.__dict__["status"] == 200
    assert "secret" not in line.getMessage()


@pytest.mark.parametrize("given", ["", "a b", "x" * 129, "ü", "<script>"])
async def test_a_bad_request_id_is_replaced(given: str) -> None:
    response = await get("/zendesk/helpdesk", headers={"X-Request-ID": given.encode()})
    made = response.headers["x-request-id"]
    assert made != given
    assert len(made) == 16


async def test_the_outcome_a_handler_noted_is_on_the_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    await get("/zendesk/helpdesk?outcome=wrong_password")
    [line] = access_lines(caplog)
    assert line.__dict__["outcome"] == "wrong_password"


async def test_no_matched_route_is_a_dash(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    assert (await get("/nowhere/at/all")).status_code == 404
    assert (await get("/zendesk/a/b")).status_code == 404
    assert [r.__dict__["route"] for r in access_lines(caplog)] == ["-", "-"]


async def test_probes_are_logged_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    await get("/healthz")
    [line] = access_lines(caplog)
    assert line.levelno == logging.DEBUG


async def test_the_request_id_is_unset_once_answered() -> None:
    response = await get("/zendesk/helpdesk")
    assert response.text == response.headers["x-request-id"]
    assert request_id.get() == ""


async def test_an_unexpected_error_is_logged_with_the_request_id_and_a_500_line() -> None:
    async def broken(request: Request) -> Response:
        raise RuntimeError("boom")

    failing = Starlette(
        routes=[Route("/broken", broken)],
        middleware=[Middleware(RequestLogMiddleware)],
        exception_handlers=error_handlers(),
    )
    handler = CapturingHandler()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        transport = httpx.ASGITransport(app=failing, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://bridge") as client:
            response = await client.get(
                "/broken", headers={"X-Request-ID": "boom-1", "Accept": "application/json"}
            )
    finally:
        root.removeHandler(handler)
    assert response.status_code == 500
    lines = [json.loads(line) for line in handler.lines if line.startswith("{")]
    [error] = [line for line in lines if line["logger"] == "bridge.http"]
    [access] = [line for line in lines if line["logger"] == "bridge.access"]
    assert error["request_id"] == access["request_id"] == "boom-1"
    assert "RuntimeError: boom" in error["exc"]
    assert (access["route"], access["status"]) == ("/broken", 500)


async def test_a_malformed_slug_from_the_path_is_not_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    await get("/zendesk/Not%20A%20Slug%3Cx%3E")
    [line] = access_lines(caplog)
    assert "registration" not in line.__dict__
    assert line.__dict__["route"] == "/zendesk/{slug}"
