"""A private PostgreSQL cluster for one test module, which the test may stop and start.

The tests of database outages (SECURITY G2) stop the server under a running
bridge; they must never do that to the shared cluster other tests use. So
:func:`private_postgres` runs ``initdb`` into a new folder, starts the cluster on
a free loopback port (no Unix socket outside that folder), and removes it all at
the end. The binaries come from ``pg_config --bindir`` or Debian's
``/usr/lib/postgresql/<version>/bin``. PostgreSQL refuses to run as root, so
under root every command runs as the ``postgres`` user (``runuser -u postgres
--``) in a folder under ``/tmp`` that user owns (pytest's own tmp folders are
private to root). :func:`unavailable_reason` says why none can be had.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg

from tests.support.servers import free_port

#: Every command against the cluster gives up after this long.
TIMEOUT = 30


def _bindir() -> Path | None:
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        found = subprocess.run(
            [pg_config, "--bindir"], capture_output=True, text=True, timeout=TIMEOUT, check=False
        )
        if found.returncode == 0:
            candidates.append(Path(found.stdout.strip()))
    debian = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    candidates.extend(debian)
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "pg_ctl").is_file():
            return folder
    return None


def _as_root() -> bool:
    return os.geteuid() == 0


def unavailable_reason() -> str | None:
    """Why no private cluster can be started here (None when one can)."""
    if _bindir() is None:
        return "no PostgreSQL server binaries (initdb, pg_ctl) found"
    if _as_root():
        if shutil.which("runuser") is None:
            return "running as root without runuser to start PostgreSQL as another user"
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no 'postgres' user to run PostgreSQL as"
    return None


@dataclass
class PrivatePostgres:
    """One cluster: ``url`` reaches its database ``bridge`` as the superuser ``postgres``."""

    bindir: Path
    folder: Path
    port: int

    @property
    def data(self) -> Path:
        return self.folder / "data"

    @property
    def logfile(self) -> Path:
        return self.folder / "server.log"

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/bridge"

    def _conninfo(self, dbname: str) -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={dbname} connect_timeout=5"

    def run(self, program: str, *args: str) -> str:
        """Run a PostgreSQL program (as ``postgres`` under root); its output, or AssertionError."""
        command: Sequence[str] = [str(self.bindir / program), *args]
        if _as_root():
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=TIMEOUT + 10, check=False
        )
        if done.returncode != 0:
            raise AssertionError(
                f"{program} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}\n"
                f"{self.server_log()}"
            )
        return done.stdout

    def server_log(self) -> str:
        try:
            return self.logfile.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.folder}"
            " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        self.run(
            "pg_ctl", "start", "-D", str(self.data), "-l", str(self.logfile),
            "-o", options, "-w", "-t", str(TIMEOUT),
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self.run("pg_ctl", "stop", "-D", str(self.data), "-m", mode, "-w", "-t", str(TIMEOUT))

    def is_running(self) -> bool:
        command: list[str] = [str(self.bindir / "pg_ctl"), "status", "-D", str(self.data)]
        if _as_root():
            command = ["runuser", "-u", "postgres", "--", *command]
        status = subprocess.run(command, capture_output=True, timeout=TIMEOUT, check=False)
        return status.returncode == 0

    def execute(self, sql: str, dbname: str = "postgres") -> list[tuple[object, ...]]:
        """Run ``sql`` as the superuser (autocommit); the rows it returns, if any."""
        with psycopg.connect(self._conninfo(dbname), autocommit=True) as connection:
            cursor = connection.execute(sql.encode())
            return list(cursor.fetchall()) if cursor.description else []

    def terminate_connections(self, dbname: str = "bridge") -> int:
        """``pg_terminate_backend`` every connection to ``dbname`` but this one; how many."""
        rows = self.execute(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity"
            f" WHERE datname = '{dbname}' AND pid <> pg_backend_pid()"
        )
        return int(str(rows[0][0]))


@contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    """A new cluster with an empty database ``bridge``, running; removed at the end."""
    bindir = _bindir()
    assert bindir is not None, unavailable_reason()
    folder = Path(tempfile.mkdtemp(prefix="bridge-pg-"))
    if _as_root():
        user = pwd.getpwnam("postgres")
        os.chown(folder, user.pw_uid, user.pw_gid)
    cluster = PrivatePostgres(bindir, folder, free_port())
    try:
        cluster.run(
            "initdb", "-D", str(cluster.data), "-U", "postgres", "--auth=trust",
            "-E", "UTF8", "--no-sync", "--no-instructions",
        )  # fmt: skip
        cluster.start()
        cluster.execute("CREATE DATABASE bridge")
        yield cluster
    finally:
        try:
            if cluster.is_running():
                cluster.stop("immediate")
        finally:
            shutil.rmtree(folder, ignore_errors=True)
