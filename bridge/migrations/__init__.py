"""Alembic migrations of the bridge's tables, configured in code (no ``alembic.ini``).

This package owns the revision scripts and the one way to build an Alembic
:class:`~alembic.config.Config` for them, so the migrations work the same from a
checkout and from an installed (non-editable) wheel. It never opens a database
connection itself: :class:`bridge.storage.db.Database` hands one in, and
``env.py`` refuses to run without it.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

SCRIPT_LOCATION = Path(__file__).resolve().parent


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic config for this package; ``connection`` is what ``env.py`` migrates."""
    config = Config()
    # Config values go through ConfigParser interpolation: a '%' in a path must be doubled.
    config.set_main_option("script_location", str(SCRIPT_LOCATION).replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@cache
def script_directory() -> ScriptDirectory:
    """The revisions shipped with this version of the bridge (read once per process)."""
    return ScriptDirectory.from_config(alembic_config())


def head_revisions() -> frozenset[str]:
    return frozenset(script_directory().get_heads())


def is_known_revision(revision: str) -> bool:
    return any(script.revision == revision for script in script_directory().walk_revisions())
