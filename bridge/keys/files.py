"""How files are written and read in ``keys_dir``: the one place that touches its disk layout rules.

This module owns the rules every key file follows: the folder is 0700, every
file is 0600 (files an operator copied in are tightened), every write is
write-temp + fsync + ``os.replace`` so a reader never sees half a file, writers
are serialised across processes by an exclusive ``flock`` on ``.lock``, and a
JSON file carries a format version. It also owns :class:`KeyStoreError`, the
error for a ``keys_dir`` that is missing, unreadable or inconsistent. It must
not know what the files mean (signing keys, the keyring): :mod:`.signing` and
:mod:`.keyring` own their formats.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

__all__ = [
    "FORMAT_VERSION",
    "LOCK",
    "TMP_PREFIX",
    "KeyStoreError",
    "ensure_dir",
    "locked",
    "read_entries",
    "read_json",
    "tighten",
    "write_atomic",
    "write_entries",
    "write_json",
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


def write_json(path: Path, payload: dict[str, Any]) -> None:
    write_atomic(path, (json.dumps(payload, indent=2) + "\n").encode("utf-8"))


def read_json(path: Path) -> dict[str, Any] | None:
    """A version :data:`FORMAT_VERSION` JSON object, or None if ``path`` does not exist."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise KeyStoreError(f"{path}: cannot be read: {exc.strerror}") from exc
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise KeyStoreError(f"{path}: not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or data.get("version") != FORMAT_VERSION:
        raise KeyStoreError(f"{path}: not a version {FORMAT_VERSION} file")
    return data


def read_entries(path: Path) -> list[Any] | None:
    """The ``keys`` list of a versioned JSON file (manifest, keyring), or None if it is absent."""
    data = read_json(path)
    if data is None:
        return None
    raw_keys = data.get("keys")
    if not isinstance(raw_keys, list):
        raise KeyStoreError(f"{path}: keys must be a list")
    return raw_keys


def write_entries(path: Path, entries: list[dict[str, Any]]) -> None:
    """Write ``entries`` as the ``keys`` list of a versioned JSON file, atomically."""
    write_json(path, {"version": FORMAT_VERSION, "keys": entries})


def tighten(path: Path) -> None:
    """Files copied in by an operator may be world-readable; ours are always 0600."""
    if stat.S_IMODE(path.stat().st_mode) & 0o077:
        os.chmod(path, 0o600)
