"""One real ``bridge serve`` on a private PostgreSQL cluster that a test may stop
(SECURITY G2): the database outage of the fault tests and of the browser test of
a page script calling the bridge from another origin while the database is down.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from bridge.demo.simulator import create_simulator
from bridge.storage import Database
from tests.support.bridge import Harness, served_bridge, write_config
from tests.support.postgres import PrivatePostgres, private_postgres, unavailable_reason
from tests.support.process import BridgeProcess
from tests.support.servers import free_port, serve


@dataclass
class Outage:
    cluster: PrivatePostgres
    bridge: Harness
    process: BridgeProcess


@contextmanager
def bridge_on_private_postgres(tmp: Path, registrations: Mapping[str, str]) -> Iterator[Outage]:
    """A migrated private cluster, the iMIS simulator in this process and a bridge
    serving ``registrations`` on them; skips, saying why, when no cluster can be had.
    At the end the cluster is started again if a test left it stopped, so that the
    bridge stops cleanly (it writes its sign-in counts)."""
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(f"needs a private PostgreSQL cluster: {reason}")
    with private_postgres() as cluster, serve(create_simulator()) as imis_url:
        with Database(cluster.url) as database:
            database.upgrade()
        port = free_port()
        config = write_config(
            tmp / "config",
            issuer=f"http://127.0.0.1:{port}",
            database_url=cluster.url,
            imis_url=imis_url,
            registrations=registrations,
        )
        with served_bridge(tmp, config, port, imis_url) as (bridge, process):
            try:
                yield Outage(cluster, bridge, process)
            finally:
                if not cluster.is_running():
                    cluster.start()
