"""What the bridge's logging set-up lets through and how it writes it (bridge.logs)."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from bridge.logs import (
    JsonFormatter,
    RequestIdFilter,
    TextFormatter,
    logging_config,
    request_id,
    resolve_format,
)

SCRIPT = """
import sys
from bridge.logs import configure_logging
configure_logging("info")  # before the imports, as uvicorn does in each worker
from bridge.storage.db import Database
with Database(sys.argv[1]) as database:
    database.ensure_schema()
"""


def test_a_fresh_database_upgrade_logs_one_bridge_line_and_no_alembic_chatter(
    tmp_path: Path,
) -> None:
    """Each worker of ``bridge serve --workers N`` upgrades a fresh SQLite file; the
    operator should read one line saying so, not Alembic's plugin set-up per worker."""
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, f"sqlite:///{tmp_path / 'bridge.db'}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    lines = [json.loads(line) for line in done.stderr.splitlines()]  # not a terminal: JSON
    assert [line for line in lines if "alembic" in line["logger"]] == []
    assert any(
        line["logger"] == "bridge.storage.db"
        and line["message"].startswith("upgrading the database schema")
        for line in lines
    )


def record(message: str = "hello %s", *args: object, **fields: object) -> logging.LogRecord:
    made = logging.makeLogRecord(
        {"name": "bridge.test", "levelno": 20, "levelname": "INFO", "msg": message, "args": args}
    )
    made.__dict__.update(fields)
    return made


def test_a_json_line_has_time_level_logger_message_and_the_structured_fields() -> None:
    line = json.loads(JsonFormatter().format(record("hello %s", "world", route="/x", status=200)))
    assert line["time"].endswith("Z")
    assert line["time"][10] == "T"
    assert {k: line[k] for k in ("level", "logger", "message", "route", "status")} == {
        "level": "INFO",
        "logger": "bridge.test",
        "message": "hello world",
        "route": "/x",
        "status": 200,
    }


def test_an_exception_is_one_exc_field_on_the_same_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        failed = record("failed", exc_info=sys.exc_info())
    text = JsonFormatter().format(failed)
    assert "\n" not in text
    line = json.loads(text)
    assert "ValueError: boom" in line["exc"]
    assert "Traceback" in line["exc"]


def test_text_lines_keep_the_bridge_format_and_add_the_fields() -> None:
    formatter = TextFormatter()
    text = formatter.format(record("hello", route="/x", request_id="r1"))
    assert text.endswith("INFO    bridge.test: hello request_id=r1 route=/x")


def test_every_record_logged_during_a_request_gets_its_request_id() -> None:
    sink = io.StringIO()
    handler = logging.StreamHandler(sink)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RequestIdFilter())
    logger = logging.getLogger("bridge.test.request_id")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        token = request_id.set("abc123")
        logger.warning("inside")
        request_id.reset(token)
        logger.warning("outside")
    finally:
        logger.removeHandler(handler)
    inside, outside = (json.loads(line) for line in sink.getvalue().splitlines())
    assert inside["request_id"] == "abc123"
    assert "request_id" not in outside


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("setting", "stream", "resolved"),
    [
        ("auto", io.StringIO(), "json"),
        ("auto", _Terminal(), "text"),
        ("json", _Terminal(), "json"),
        ("text", io.StringIO(), "text"),
    ],
)
def test_auto_is_text_on_a_terminal_and_json_elsewhere(
    setting: str, stream: io.StringIO, resolved: str
) -> None:
    assert resolve_format(setting, stream) == resolved


def test_the_configuration_names_the_chosen_formatter() -> None:
    assert logging_config("info", "json")["formatters"]["bridge"]["()"] is JsonFormatter
    assert logging_config("info", "text")["formatters"]["bridge"]["()"] is TextFormatter


def test_d6_authlib_logs_no_issued_token_even_at_debug() -> None:
    """Authlib logs each token response it issues at DEBUG; the bridge keeps it at WARNING."""
    config = logging_config("debug", "json")
    assert config["loggers"]["authlib"]["level"] == "WARNING"
