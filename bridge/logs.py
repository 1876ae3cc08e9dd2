"""Logging set-up: one line per event, JSON or readable text, each with its request id; no secrets.

The bridge never passes passwords, tokens, secrets or iMIS response bodies to a
logger in the first place (SECURITY D6); this module only formats and routes
what is logged, and quiets libraries that would log request bodies. The same
configuration is applied in every process: ``bridge serve`` hands
:func:`logging_config` to uvicorn, which applies it in each worker.

It also owns the request id of the request being answered (a context variable
set by :class:`bridge.middleware.RequestLogMiddleware`): :class:`RequestIdFilter`
adds it to every record, the iMIS connector forwards it. What a request's
access line says about the registration and the sign-in outcome is noted in the
request's scope with :func:`note_registration` and :func:`note_outcome`.
"""

from __future__ import annotations

import json
import logging.config
import sys
import time
from collections.abc import MutableMapping
from contextvars import ContextVar
from typing import Any, TextIO

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
DATE_FORMAT = "%Y-%m-%dT%H:%M:%S"

#: The id of the request this task answers ("" outside a request).
request_id: ContextVar[str] = ContextVar("bridge_request_id", default="")

#: Where handlers note, in the ASGI scope, what the access line reports.
REGISTRATION_KEY = "bridge.log.registration"
OUTCOME_KEY = "bridge.log.outcome"

#: Attributes every LogRecord has: anything else on a record is a structured field.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {
    "message",
    "asctime",
    "request_id",
    "color_message",  # uvicorn's message again, with terminal colours
}


def note_registration(scope: MutableMapping[str, Any], slug: str) -> None:
    """Name the registration a request is for, for its access line."""
    scope[REGISTRATION_KEY] = slug


def note_outcome(scope: MutableMapping[str, Any], outcome: str) -> None:
    """Name how the sign-in this request decided ended, for its access line."""
    scope[OUTCOME_KEY] = outcome


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` (the current request's, or "") to every record a handler emits."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id.get()
        return True


def fields_of(record: logging.LogRecord) -> dict[str, Any]:
    """The structured fields of ``record`` (``extra=``), request_id first when set."""
    fields = {k: v for k, v in record.__dict__.items() if k not in _STANDARD}
    rid = getattr(record, "request_id", "")
    return {"request_id": rid, **fields} if rid else fields


#: Made once: ``json.dumps`` with options builds an encoder on every call.
_ENCODER = json.JSONEncoder(default=str, ensure_ascii=False)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (ISO 8601, UTC), level, logger, message, the
    structured fields, and ``exc`` (the traceback as one string) when there is one."""

    _second: tuple[int, str] = (-1, "")

    def format(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        cached, seconds = self._second
        if cached != second:  # formatting the date is a third of the line's cost
            seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = (second, seconds)
        line: dict[str, Any] = {
            "time": f"{seconds}.{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **fields_of(record),
        }
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc"] = record.exc_text
        if record.stack_info:
            line["stack"] = record.stack_info
        return _ENCODER.encode(line)


class TextFormatter(logging.Formatter):
    """:data:`FORMAT`, then the structured fields as ``key=value``."""

    def __init__(self) -> None:
        super().__init__(FORMAT, DATE_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        text = super().formatMessage(record)
        fields = fields_of(record)
        if not fields:
            return text
        return text + " " + " ".join(f"{k}={v}" for k, v in fields.items())


def resolve_format(log_format: str, stream: TextIO | None = None) -> str:
    """``json`` or ``text``: ``auto`` is text on a terminal, JSON otherwise."""
    if log_format != "auto":
        return log_format
    stream = sys.stderr if stream is None else stream
    try:
        return "text" if stream.isatty() else "json"
    except (AttributeError, ValueError):  # closed or not a real stream
        return "json"


def logging_config(level: str = "info", log_format: str = "auto") -> dict[str, Any]:
    """A :func:`logging.config.dictConfig` dictionary: every logger (uvicorn's too)
    writes one line to standard error, as JSON or text (``log_format``, resolved now:
    a worker process inherits the decision made where the operator started it)."""
    formatter = JsonFormatter if resolve_format(log_format) == "json" else TextFormatter
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": RequestIdFilter}},
        "formatters": {"bridge": {"()": formatter}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "bridge",
                "filters": ["request_id"],
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"handlers": ["stderr"], "level": level.upper()},
        "loggers": {
            # uvicorn's own lines go through the root handler, in the same format.
            **{
                name: {"handlers": [], "propagate": True}
                for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
            },
            **{name: {"level": level} for name, level in QUIET.items()},
        },
    }


#: Libraries' loggers kept above INFO, and why.
QUIET = {
    # httpx logs full request URLs at INFO; ours carry no secrets but keep it quiet.
    "httpx": "WARNING",
    "httpcore": "WARNING",
    # Alembic announces its dialect and its plugins on every start; the bridge
    # logs the one line worth having (bridge.storage.db: upgrading ...).
    "alembic": "WARNING",
    # Authlib logs every issued token response (access and refresh tokens) at
    # DEBUG: with log_level = "debug" they would reach the log (SECURITY D6).
    "authlib": "WARNING",
}


def configure_logging(level: str = "info", log_format: str = "auto") -> None:
    """Apply :func:`logging_config` to this process."""
    logging.config.dictConfig(logging_config(level, log_format))
