"""Logging set-up: one line per event, key=value friendly, no secrets.

The bridge never passes passwords, tokens, secrets or iMIS response bodies to a
logger in the first place (SECURITY D6); this module only formats and routes
what is logged, and quiets libraries that would log request bodies. The same
configuration is applied in every process: ``bridge serve`` hands
:func:`logging_config` to uvicorn, which applies it in each worker.
"""

from __future__ import annotations

import logging.config
from typing import Any

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
DATE_FORMAT = "%Y-%m-%dT%H:%M:%S"


def logging_config(level: str = "info") -> dict[str, Any]:
    """A :func:`logging.config.dictConfig` dictionary: every logger (uvicorn's too)
    writes one line to standard error in :data:`FORMAT`."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"bridge": {"format": FORMAT, "datefmt": DATE_FORMAT}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "bridge",
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
            # httpx logs full request URLs at INFO; ours carry no secrets but keep it quiet.
            "httpx": {"level": "WARNING"},
            "httpcore": {"level": "WARNING"},
            # Alembic announces its dialect and its plugins on every start; the bridge
            # logs the one line worth having (bridge.storage.db: upgrading ...).
            "alembic": {"level": "WARNING"},
        },
    }


def configure_logging(level: str = "info") -> None:
    """Apply :func:`logging_config` to this process."""
    logging.config.dictConfig(logging_config(level))
