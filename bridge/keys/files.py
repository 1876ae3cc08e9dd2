"""How key material is kept in ``keys_dir``: :class:`DirectoryVault` and its file rules.

This module owns the rules every key file follows: the folder is 0700, every
file is 0600 (files an operator copied in are tightened), every write is
write-temp + fsync + ``os.replace`` so a reader never sees half a file, writers
are serialised across processes by an exclusive ``flock`` on ``.lock``, and a
JSON blob carries a format version (:func:`dump_entries`, :func:`parse_entries`,
which the database vault's blobs follow too). It also owns :class:`KeyStoreError`,
the error for key material that is missing, unreadable or inconsistent. It must
not know what the blobs mean (signing keys, the keyring): :mod:`.signing` and
:mod:`.keyring` own their formats.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import stat
import tempfile
from collections.abc import Hashable, Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, Final

__all__ = [
    "FORMAT_VERSION",
    "LOCK",
    "TMP_PREFIX",
    "DirectoryVault",
    "KeyStoreError",
    "dump_entries",
    "ensure_dir",
    "locked",
    "parse_entries",
    "tighten",
    "write_atomic",
]

LOCK: Final = ".lock"
#: Names of files being written; one left behind is a crashed writer's, safe to delete.
TMP_PREFIX: Final = ".tmp-"
FORMAT_VERSION: Final = 1


class KeyStoreError(Exception):
    """``keys_dir`` is missing, unreadable or inconsistent; the message says which file and why."""


def ensure_dir(keys_dir: Path) -> None:
    """Create ``keys_dir`` (0700) if needed, and take group/other access off an existing one."""
    keys_dir.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        keys_dir.mkdir(mode=0o700)
    if not keys_dir.is_dir():
        raise KeyStoreError(f"{keys_dir}: not a directory")
    if stat.S_IMODE(keys_dir.stat().st_mode) & 0o077:
        # A checked-out keys/ folder is 0755; private keys must not be listable by others.
        os.chmod(keys_dir, 0o700)


@contextlib.contextmanager
def locked(keys_dir: Path) -> Iterator[None]:
    """Exclusive cross-process lock; flock is per open file, so threads exclude each other too."""
    fd = os.open(keys_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` (0600) so that readers see the old file or the new one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=TMP_PREFIX)  # mode 0600
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def dump_entries(entries: list[dict[str, Any]]) -> bytes:
    """A versioned JSON file whose ``keys`` list is ``entries`` (manifest, keyring)."""
    return (json.dumps({"version": FORMAT_VERSION, "keys": entries}, indent=2) + "\n").encode()


def parse_entries(raw: bytes | None, where: str) -> list[Any] | None:
    """The ``keys`` list of a versioned JSON blob, or None if there is none."""
    if raw is None:
        return None
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise KeyStoreError(f"{where}: not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or data.get("version") != FORMAT_VERSION:
        raise KeyStoreError(f"{where}: not a version {FORMAT_VERSION} file")
    raw_keys = data.get("keys")
    if not isinstance(raw_keys, list):
        raise KeyStoreError(f"{where}: keys must be a list")
    return raw_keys


def tighten(path: Path) -> None:
    """Files copied in by an operator may be world-readable; ours are always 0600."""
    if stat.S_IMODE(path.stat().st_mode) & 0o077:
        os.chmod(path, 0o600)


class _DirectoryWriter:
    __slots__ = ("_dir",)

    def __init__(self, keys_dir: Path) -> None:
        self._dir = keys_dir

    def read(self, name: str) -> bytes | None:
        return _read_file(self._dir / name)

    def write(self, name: str, data: bytes) -> None:
        write_atomic(self._dir / name, data)

    def delete(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self._dir / name).unlink()

    def names(self) -> list[str]:
        return sorted(p.name for p in self._dir.iterdir() if p.name != LOCK and p.is_file())


def _read_file(path: Path) -> bytes | None:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise KeyStoreError(f"{path}: cannot be read: {exc.strerror}") from exc
    tighten(path)
    return data


class DirectoryVault:
    """The key material as files in ``keys_dir`` (the single-host default).

    Every process on the host sees a change at its next :meth:`stamp`, which is two
    ``stat`` calls: cheap enough for every request. It records no acknowledgements
    (:meth:`peers` is empty): the publish lead time covers processes on one host.
    """

    cheap_stamp = True

    def __init__(self, keys_dir: Path, *, stamped: tuple[str, ...] = ()) -> None:
        self.keys_dir = keys_dir
        self.where = str(keys_dir)
        #: The files whose inode, mtime and size make the stamp (the commit points).
        self._stamped = stamped

    def prepare(self) -> None:
        ensure_dir(self.keys_dir)

    @contextlib.contextmanager
    def locked(self) -> Iterator[_DirectoryWriter]:
        with locked(self.keys_dir):
            yield _DirectoryWriter(self.keys_dir)

    def load(self) -> tuple[Hashable, dict[str, bytes]]:
        stamp = self.stamp()
        try:
            with os.scandir(self.keys_dir) as entries:  # files only: keys_dir may hold more
                names = [e.name for e in entries if e.is_file()]
        except FileNotFoundError:
            return stamp, {}
        except OSError as exc:
            raise KeyStoreError(f"{self.keys_dir}: cannot be read: {exc.strerror}") from exc
        blobs: dict[str, bytes] = {}
        for name in names:
            if name == LOCK or name.startswith(TMP_PREFIX):
                continue
            data = _read_file(self.keys_dir / name)
            if data is not None:  # deleted since the listing: a rotation; the caller re-reads
                blobs[name] = data
        return stamp, blobs

    def stamp(self) -> Hashable:
        """Cheap change detector: atomic replace gives every write a new inode."""
        out: list[tuple[int, int, int] | None] = []
        for name in self._stamped:
            try:
                st = os.stat(self.keys_dir / name)
            except FileNotFoundError:
                out.append(None)
            else:
                out.append((st.st_ino, st.st_mtime_ns, st.st_size))
        return tuple(out)

    def acknowledge(self, instance: str, kids: Iterable[str], now: datetime) -> None:
        """Nothing to record: see the class docstring."""

    def peers(self, since: datetime) -> dict[str, frozenset[str]]:
        return {}

    def forget(self, instance: str) -> None:
        """Nothing recorded, nothing to forget."""
