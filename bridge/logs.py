"""Logging set-up: one line per event, key=value friendly, no secrets.

The bridge never passes passwords, tokens, secrets or iMIS response bodies to a
logger in the first place (SECURITY D6); this module only formats and routes
what is logged, and quiets libraries that would log request bodies.
"""

from __future__ import annotations

import logging
import sys


def configure_logging(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # httpx logs full request URLs at INFO; ours carry no secrets but keep it quiet.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    # Alembic announces its dialect on every start; only upgrades are worth a line.
    logging.getLogger("alembic.runtime.migration").setLevel(logging.WARNING)
