"""What the bridge's logging set-up lets through (bridge.logs)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
    lines = done.stderr.splitlines()
    assert [line for line in lines if "alembic" in line] == []
    assert any("bridge.storage.db: upgrading the database schema" in line for line in lines)
