"""Signing keys, the public JWKS, key rotation, and the keyring for secrets stored at rest.

This module owns everything under ``keys_dir``: it creates the RS256 and ES256
signing keys and the secret-encryption keyring on first use, publishes the
public keys as a JWKS, rotates signing keys so that a key is published before it
signs and stays published until what it signed has expired (SECURITY C3), signs
JWTs and verifies them refusing ``none``, HMAC, unknown keys and wrong
iss/aud/exp (C2), and hashes RP client secrets (B3). It must not decide what a
token says or how long it lives (that is :mod:`bridge.oauth`), must never hand a
private key member to anything but its caller or write one outside ``keys_dir``,
and touches no disk at import time: nothing happens until
:meth:`KeyStore.load_or_create` or :meth:`KeyStore.open`.

Layout of ``keys_dir`` (directory 0700, every file 0600, every write is
write-temp + ``os.replace`` under an exclusive ``flock`` on ``.lock``)::

    manifest.json        signing-key metadata: kid, alg, state, times (the commit point)
    RS256-<kid>.pem      one PKCS#8 private key per signing key, named by RFC 7638 kid
    ES256-<kid>.pem
    keyring.json         Fernet keys that encrypt stored secrets; the last one encrypts
    .lock                flock target serialising creation and rotation across processes

A key file is written before the manifest names it and deleted only after the
manifest stopped naming it, so a reader that sees a manifest always finds its
keys (a reader racing a deletion simply re-reads).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
import stat
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final, TextIO

import jwt
from cryptography.fernet import Fernet
from cryptography.fernet import InvalidToken as FernetInvalidToken
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

__all__ = [
    "DEFAULT_PUBLISH_LEAD_SECONDS",
    "SUPPORTED_ALGS",
    "InvalidToken",
    "KeyInfo",
    "KeyStore",
    "KeyStoreError",
    "RotationResult",
    "SecretDecryptionError",
    "cmd_list",
    "cmd_rotate",
    "generate_client_secret",
    "hash_secret",
    "jwk_thumbprint",
    "verify_secret",
]

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey
Clock = Callable[[], datetime]

#: Signing algorithms the bridge issues and accepts. HMAC is deliberately absent.
SUPPORTED_ALGS: Final = ("RS256", "ES256")
#: How long a new key sits in the JWKS before it may sign. Must exceed how long
#: relying parties (and any HTTP cache in front of the JWKS) keep a copy.
DEFAULT_PUBLISH_LEAD_SECONDS: Final = 24 * 3600

MANIFEST: Final = "manifest.json"
KEYRING: Final = "keyring.json"
LOCK: Final = ".lock"
_FORMAT_VERSION: Final = 1
_STATES: Final = ("next", "current", "retired")
_KID = re.compile(r"^[A-Za-z0-9_-]{43}$")  # base64url SHA-256: also a safe file name
_KEYRING_ID = re.compile(r"^[0-9a-f]{8,64}$")
_SEGMENT = re.compile(r"^[A-Za-z0-9_-]+$")
_MAX_TOKEN_CHARS: Final = 16 * 1024  # ours are < 2 KiB; bounds the work a stranger can cause
_PEM_FILE = re.compile(r"^(RS256|ES256)-[A-Za-z0-9_-]{43}\.pem$")
_TMP_PREFIX: Final = ".tmp-"
_SECRET_SCHEME: Final = "fernet"
_HASH_SCHEME: Final = "hmac-sha256"
_LOAD_ATTEMPTS: Final = 3


class KeyStoreError(Exception):
    """``keys_dir`` is missing, unreadable or inconsistent; the message says which file and why."""


class SecretDecryptionError(KeyStoreError):
    """A stored secret cannot be decrypted: it was altered, or its key is not in the keyring."""


class InvalidToken(Exception):
    """A JWT was refused. ``reason`` is short, fixed text for the log, never token content."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


# --- small helpers ------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _uint(value: int, length: int | None = None) -> str:
    size = length if length is not None else max(1, (value.bit_length() + 7) // 8)
    return _b64url(value.to_bytes(size, "big"))


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _aware(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("times must be timezone-aware (use datetime.now(UTC))")
    return moment.astimezone(UTC)


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _check_alg(alg: str) -> None:
    if alg not in SUPPORTED_ALGS:
        raise ValueError(f"unsupported signing algorithm {alg!r}; use one of {SUPPORTED_ALGS}")


# --- JWK ----------------------------------------------------------------------


def _public_members(key: PublicKey) -> dict[str, str]:
    """The RFC 7638 required members of ``key``'s public JWK (no kid, use or alg)."""
    if isinstance(key, rsa.RSAPublicKey):
        numbers = key.public_numbers()
        return {"e": _uint(numbers.e), "kty": "RSA", "n": _uint(numbers.n)}
    if not isinstance(key.curve, ec.SECP256R1):
        raise KeyStoreError(f"unsupported EC curve {key.curve.name}; only P-256 is used")
    point = key.public_numbers()
    return {"crv": "P-256", "kty": "EC", "x": _uint(point.x, 32), "y": _uint(point.y, 32)}


def jwk_thumbprint(members: dict[str, str]) -> str:
    """RFC 7638 thumbprint: base64url SHA-256 of the required members, sorted, no spaces.

    ``members`` may be a whole public JWK; only the members RFC 7638 §3.2 names
    for its ``kty`` are hashed.
    """
    required = {"RSA": ("e", "kty", "n"), "EC": ("crv", "kty", "x", "y")}[members["kty"]]
    canonical = json.dumps({k: members[k] for k in required}, separators=(",", ":"), sort_keys=True)
    return _b64url(hashlib.sha256(canonical.encode("utf-8")).digest())


def _alg_fits(alg: str, key: PrivateKey | PublicKey) -> bool:
    if alg == "RS256":
        return isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey) and key.key_size >= 2048
    return isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) and isinstance(
        key.curve, ec.SECP256R1
    )


def _generate(alg: str) -> PrivateKey:
    if alg == "RS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


# --- metadata -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """What is known about one signing key (never the key itself).

    ``state`` is ``"next"`` (published, not yet signing), ``"current"`` (signs
    new tokens) or ``"retired"`` (no longer signs; published for verification
    until ``retire_until``).
    """

    kid: str
    alg: str
    state: str
    created_at: datetime
    activated_at: datetime | None = None
    retired_at: datetime | None = None
    retire_until: datetime | None = None

    @property
    def file_name(self) -> str:
        return f"{self.alg}-{self.kid}.pem"

    def published(self, now: datetime) -> bool:
        """Whether the key is in the JWKS (and verifies tokens) at ``now``."""
        if self.state != "retired":
            return True
        return self.retire_until is not None and now < self.retire_until

    def to_json(self) -> dict[str, Any]:
        return {
            "kid": self.kid,
            "alg": self.alg,
            "state": self.state,
            "created_at": _iso(self.created_at),
            "activated_at": _iso(self.activated_at),
            "retired_at": _iso(self.retired_at),
            "retire_until": _iso(self.retire_until),
        }

    @classmethod
    def from_json(cls, raw: Any, where: str) -> KeyInfo:
        if not isinstance(raw, dict):
            raise KeyStoreError(f"{where}: each key must be an object")

        def text(name: str) -> str:
            value = raw.get(name)
            if not isinstance(value, str):
                raise KeyStoreError(f"{where}: {name} must be a string")
            return value

        def when(name: str) -> datetime | None:
            value = raw.get(name)
            if value is None:
                return None
            if not isinstance(value, str):
                raise KeyStoreError(f"{where}: {name} must be a time or null")
            try:
                return _aware(datetime.fromisoformat(value))
            except ValueError as exc:
                raise KeyStoreError(f"{where}: {name} is not an ISO 8601 UTC time") from exc

        kid, alg, state = text("kid"), text("alg"), text("state")
        if not _KID.match(kid):
            raise KeyStoreError(f"{where}: kid {kid!r} is not an RFC 7638 thumbprint")
        if alg not in SUPPORTED_ALGS:
            raise KeyStoreError(f"{where}: alg must be one of {SUPPORTED_ALGS}")
        if state not in _STATES:
            raise KeyStoreError(f"{where}: state must be one of {_STATES}")
        created_at = when("created_at")
        if created_at is None:
            raise KeyStoreError(f"{where}: created_at is required")
        return cls(
            kid=kid,
            alg=alg,
            state=state,
            created_at=created_at,
            activated_at=when("activated_at"),
            retired_at=when("retired_at"),
            retire_until=when("retire_until"),
        )


@dataclass(frozen=True, slots=True)
class RotationResult:
    """What one :meth:`KeyStore.rotate` step did; :meth:`describe` says it to an operator."""

    alg: str
    published: str | None = None
    pending: str | None = None
    promoted: str | None = None
    retired: str | None = None
    retire_until: datetime | None = None
    ready_at: datetime | None = None
    dropped: tuple[str, ...] = ()
    immediate: bool = False

    def describe(self) -> str:
        lines: list[str] = []
        if self.published:
            lines.append(f"Published new {self.alg} key {self.published} in the JWKS.")
        if self.promoted:
            lines.append(f"{self.alg} key {self.promoted} now signs new tokens.")
        if self.retired:
            lines.append(
                f"Previous key {self.retired} no longer signs; it stays in the JWKS "
                f"until {_human(self.retire_until)} so tokens it signed keep verifying."
            )
        if self.pending and not self.published:
            lines.append(f"{self.alg} key {self.pending} is published but does not sign yet.")
        if self.ready_at is not None:
            lines.append(
                f"It starts signing at the next rotation after {_human(self.ready_at)}, "
                "when relying parties have had time to fetch it: run `bridge keys rotate` "
                "again then (or use --now)."
            )
        if self.immediate and self.published and self.promoted:
            lines.append(
                "Warning: relying parties that cached the JWKS will not know this key until "
                "they refetch it; most do so on an unknown kid."
            )
        if self.dropped:
            lines.append(f"Removed expired retired keys: {', '.join(self.dropped)}.")
        return "\n".join(lines) or f"Nothing to do for {self.alg}."

    def to_json(self) -> dict[str, Any]:
        return {
            "alg": self.alg,
            "published": self.published,
            "pending": self.pending,
            "promoted": self.promoted,
            "retired": self.retired,
            "retire_until": _iso(self.retire_until),
            "ready_at": _iso(self.ready_at),
            "dropped": list(self.dropped),
            "immediate": self.immediate,
        }


@dataclass(frozen=True, slots=True)
class _Key:
    info: KeyInfo
    private: PrivateKey
    public: PublicKey
    jwk: dict[str, str]  # public members + kid, use, alg; copied before leaving the module


@dataclass(frozen=True, slots=True)
class _KeyringEntry:
    id: str
    key: str
    created_at: datetime


Stamp = tuple[tuple[int, int, int] | None, ...]


@dataclass(frozen=True, slots=True)
class _State:
    """One consistent, immutable snapshot of ``keys_dir``; swapped whole on reload."""

    keys: dict[str, _Key]
    current: dict[str, _Key]
    keyring: tuple[_KeyringEntry, ...]
    fernets: dict[str, Fernet]
    stamp: Stamp


# --- disk ---------------------------------------------------------------------


def _ensure_dir(keys_dir: Path) -> None:
    keys_dir.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        keys_dir.mkdir(mode=0o700)
    if not keys_dir.is_dir():
        raise KeyStoreError(f"{keys_dir}: not a directory")
    if stat.S_IMODE(keys_dir.stat().st_mode) & 0o077:
        # A checked-out keys/ folder is 0755; private keys must not be listable by others.
        os.chmod(keys_dir, 0o700)


@contextlib.contextmanager
def _locked(keys_dir: Path) -> Iterator[None]:
    """Exclusive cross-process lock; flock is per open file, so threads exclude each other too."""
    fd = os.open(keys_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_TMP_PREFIX)  # mode 0600
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


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    _write_atomic(path, (json.dumps(payload, indent=2) + "\n").encode("utf-8"))


def _read_json(path: Path) -> dict[str, Any] | None:
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
    if not isinstance(data, dict) or data.get("version") != _FORMAT_VERSION:
        raise KeyStoreError(f"{path}: not a version {_FORMAT_VERSION} file")
    return data


def _read_manifest(keys_dir: Path) -> list[KeyInfo] | None:
    path = keys_dir / MANIFEST
    data = _read_json(path)
    if data is None:
        return None
    raw_keys = data.get("keys")
    if not isinstance(raw_keys, list):
        raise KeyStoreError(f"{path}: keys must be a list")
    infos = [KeyInfo.from_json(raw, f"{path}: keys[{i}]") for i, raw in enumerate(raw_keys)]
    if len({info.kid for info in infos}) != len(infos):
        raise KeyStoreError(f"{path}: a kid appears twice")
    for alg in SUPPORTED_ALGS:
        for state in ("next", "current"):
            if sum(1 for i in infos if i.alg == alg and i.state == state) > 1:
                raise KeyStoreError(f"{path}: more than one {state} {alg} key")
    return infos


def _write_manifest(keys_dir: Path, infos: Sequence[KeyInfo]) -> None:
    _write_json(
        keys_dir / MANIFEST,
        {"version": _FORMAT_VERSION, "keys": [info.to_json() for info in infos]},
    )


def _read_keyring(keys_dir: Path) -> list[_KeyringEntry] | None:
    path = keys_dir / KEYRING
    data = _read_json(path)
    if data is None:
        return None
    _tighten(path)
    raw_keys = data.get("keys")
    if not isinstance(raw_keys, list):
        raise KeyStoreError(f"{path}: keys must be a list")
    entries: list[_KeyringEntry] = []
    for i, raw in enumerate(raw_keys):
        where = f"{path}: keys[{i}]"
        if not isinstance(raw, dict):
            raise KeyStoreError(f"{where}: must be an object")
        key_id, key, created = raw.get("id"), raw.get("key"), raw.get("created_at")
        if not isinstance(key_id, str) or not _KEYRING_ID.match(key_id):
            raise KeyStoreError(f"{where}: id must be lowercase hex")
        if not isinstance(key, str) or not isinstance(created, str):
            raise KeyStoreError(f"{where}: key and created_at must be strings")
        try:
            Fernet(key)
            created_at = _aware(datetime.fromisoformat(created))
        except ValueError as exc:
            raise KeyStoreError(f"{where}: not a Fernet key with an ISO 8601 UTC time") from exc
        entries.append(_KeyringEntry(key_id, key, created_at))
    return entries


def _write_keyring(keys_dir: Path, entries: Sequence[_KeyringEntry]) -> None:
    _write_json(
        keys_dir / KEYRING,
        {
            "version": _FORMAT_VERSION,
            "keys": [{"id": e.id, "key": e.key, "created_at": _iso(e.created_at)} for e in entries],
        },
    )


def _new_keyring_entry(now: datetime, taken: Sequence[_KeyringEntry]) -> _KeyringEntry:
    used = {e.id for e in taken}
    key_id = secrets.token_hex(4)
    while key_id in used:
        key_id = secrets.token_hex(4)
    return _KeyringEntry(key_id, Fernet.generate_key().decode("ascii"), now)


def _tighten(path: Path) -> None:
    """Files copied in by an operator may be world-readable; ours are always 0600."""
    if stat.S_IMODE(path.stat().st_mode) & 0o077:
        os.chmod(path, 0o600)


def _create_key(keys_dir: Path, alg: str, state: str, now: datetime) -> KeyInfo:
    private = _generate(alg)
    kid = jwk_thumbprint(_public_members(private.public_key()))
    info = KeyInfo(
        kid=kid,
        alg=alg,
        state=state,
        created_at=now,
        activated_at=now if state == "current" else None,
    )
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write_atomic(keys_dir / info.file_name, pem)
    return info


def _load_key(keys_dir: Path, info: KeyInfo) -> _Key:
    path = keys_dir / info.file_name
    pem = path.read_bytes()  # FileNotFoundError means a racing rotation: the caller re-reads
    _tighten(path)
    try:
        private = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyStoreError(f"{path}: not an unencrypted PEM private key") from exc
    if not isinstance(private, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) or not _alg_fits(
        info.alg, private
    ):
        raise KeyStoreError(f"{path}: key type does not fit {info.alg}")
    public = private.public_key()
    members = _public_members(public)
    if jwk_thumbprint(members) != info.kid:
        raise KeyStoreError(f"{path}: key does not match its kid in {MANIFEST}")
    return _Key(info, private, public, {**members, "kid": info.kid, "use": "sig", "alg": info.alg})


def _stamp(keys_dir: Path) -> Stamp:
    """Cheap change detector: atomic replace gives every write a new inode."""
    out: list[tuple[int, int, int] | None] = []
    for name in (MANIFEST, KEYRING):
        try:
            st = os.stat(keys_dir / name)
        except FileNotFoundError:
            out.append(None)
        else:
            out.append((st.st_ino, st.st_mtime_ns, st.st_size))
    return tuple(out)


def _read_state(keys_dir: Path) -> _State:
    for attempt in range(_LOAD_ATTEMPTS):
        stamp = _stamp(keys_dir)  # taken first: a write after it forces one more reload
        infos = _read_manifest(keys_dir)
        keyring = _read_keyring(keys_dir)
        if infos is None or keyring is None:
            raise KeyStoreError(
                f"{keys_dir}: no keys here; they are created when the bridge first starts"
            )
        try:
            keys = {info.kid: _load_key(keys_dir, info) for info in infos}
        except FileNotFoundError as exc:
            if attempt + 1 == _LOAD_ATTEMPTS:
                raise KeyStoreError(
                    f"{keys_dir}: {MANIFEST} names a key file that is missing: {exc.filename}"
                ) from exc
            continue
        current = {k.info.alg: k for k in keys.values() if k.info.state == "current"}
        missing = [alg for alg in SUPPORTED_ALGS if alg not in current]
        if missing or not keyring:
            what = f"no current {', '.join(missing)} key" if missing else "an empty keyring"
            raise KeyStoreError(f"{keys_dir}: incomplete key set ({what})")
        fernets = {e.id: Fernet(e.key) for e in keyring}
        return _State(keys, current, tuple(keyring), fernets, stamp)
    raise AssertionError("unreachable")  # pragma: no cover


def _unverified_header(token: str) -> dict[str, Any]:
    """The JOSE header, only to pick the key; PyJWT re-parses and verifies all of it.

    Parsed here rather than with ``jwt.get_unverified_header`` because PyJWT
    checks base64url characters one by one in Python, which made parsing the
    token twice cost several times the RSA verification itself.
    """
    if len(token) > _MAX_TOKEN_CHARS:
        raise InvalidToken("token too large")
    head, dot, _ = token.partition(".")
    if not dot or not _SEGMENT.match(head):
        raise InvalidToken("malformed token")
    try:
        header = json.loads(_b64url_decode(head))
    except (ValueError, binascii.Error) as exc:
        raise InvalidToken("malformed token") from exc
    if not isinstance(header, dict):
        raise InvalidToken("malformed token")
    return header


def _purge(infos: list[KeyInfo], now: datetime) -> tuple[list[KeyInfo], list[KeyInfo]]:
    kept = [i for i in infos if i.published(now)]
    dropped = [i for i in infos if not i.published(now)]
    return kept, dropped


def _start_fresh(keys_dir: Path, keyring: list[_KeyringEntry] | None) -> None:
    """First start: write an empty manifest before any key file.

    From then on a key file the manifest does not name is a leftover of a
    crashed writer and safe to delete. Key files with no manifest at all mean
    someone removed it: refuse rather than delete keys an operator may need.
    """
    strays = sorted(p.name for p in keys_dir.iterdir() if _PEM_FILE.match(p.name))
    if strays or keyring:
        found = ", ".join([*strays, KEYRING] if keyring else strays)
        raise KeyStoreError(
            f"{keys_dir}: {MANIFEST} is missing but keys are present ({found}); "
            f"restore {MANIFEST} from a backup, or move the keys away to start afresh"
        )
    _write_manifest(keys_dir, [])


def _remove_unlisted(keys_dir: Path, infos: Sequence[KeyInfo]) -> None:
    """Delete key files the manifest no longer names and temp files of crashed writers.

    Called only under the lock, after the manifest was written, so nothing
    removed here is being written or can be named again.
    """
    listed = {info.file_name for info in infos}
    for path in keys_dir.iterdir():
        name = path.name
        if (_PEM_FILE.match(name) and name not in listed) or name.startswith(_TMP_PREFIX):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


# --- the store ----------------------------------------------------------------


class KeyStore:
    """Signing keys, JWKS and secret keyring of one ``keys_dir``, cached in memory.

    Build one with :meth:`load_or_create` (server start) or :meth:`open`
    (commands that must not create keys). Reads use an immutable snapshot, so
    one instance may be shared by threads; call :meth:`reload_if_changed`
    periodically (e.g. once a second) to pick up rotations done by other
    processes.
    """

    def __init__(
        self,
        keys_dir: Path,
        state: _State,
        *,
        publish_lead_seconds: int = DEFAULT_PUBLISH_LEAD_SECONDS,
        clock: Clock = _utcnow,
    ) -> None:
        if publish_lead_seconds < 0:
            raise ValueError("publish_lead_seconds must not be negative")
        self.keys_dir = keys_dir
        self.publish_lead_seconds = publish_lead_seconds
        self._clock = clock
        self._state = state

    # construction ----------------------------------------------------------

    @classmethod
    def load_or_create(
        cls,
        keys_dir: str | Path,
        *,
        publish_lead_seconds: int = DEFAULT_PUBLISH_LEAD_SECONDS,
        clock: Clock = _utcnow,
    ) -> KeyStore:
        """Load ``keys_dir``, first creating whatever is missing (keys, keyring, the folder).

        Safe when several processes start at once: creation happens under the
        lock and the first one wins. Retired keys whose time is up are removed.
        """
        keys_dir = Path(keys_dir)
        _ensure_dir(keys_dir)
        with _locked(keys_dir):
            now = _aware(clock())
            listed = _read_manifest(keys_dir)
            keyring = _read_keyring(keys_dir)
            if listed is None:
                _start_fresh(keys_dir, keyring)
                listed = []
            elif keyring is None:
                raise KeyStoreError(
                    f"{keys_dir / KEYRING} is missing: restore it from a backup, since "
                    "stored secrets cannot be decrypted without it. If it is truly lost, "
                    f'write {{"version": 1, "keys": []}} to it and re-enter every stored secret.'
                )
            infos, dropped = _purge(listed, now)
            changed = bool(dropped)
            for alg in SUPPORTED_ALGS:
                if not any(i.alg == alg and i.state == "current" for i in infos):
                    infos.append(_create_key(keys_dir, alg, "current", now))
                    changed = True
            if not keyring:
                _write_keyring(keys_dir, [_new_keyring_entry(now, [])])
            if changed:
                _write_manifest(keys_dir, infos)
            _remove_unlisted(keys_dir, infos)
            state = _read_state(keys_dir)
        return cls(keys_dir, state, publish_lead_seconds=publish_lead_seconds, clock=clock)

    @classmethod
    def open(
        cls,
        keys_dir: str | Path,
        *,
        publish_lead_seconds: int = DEFAULT_PUBLISH_LEAD_SECONDS,
        clock: Clock = _utcnow,
    ) -> KeyStore:
        """Load an existing ``keys_dir``; :class:`KeyStoreError` if there are no keys."""
        keys_dir = Path(keys_dir)
        if not keys_dir.is_dir():
            raise KeyStoreError(
                f"{keys_dir}: no keys here; they are created when the bridge first starts"
            )
        return cls(
            keys_dir,
            _read_state(keys_dir),
            publish_lead_seconds=publish_lead_seconds,
            clock=clock,
        )

    def reload_if_changed(self) -> bool:
        """Re-read ``keys_dir`` if another process changed it; two ``stat`` calls otherwise.

        On a broken directory this raises :class:`KeyStoreError` and keeps
        serving the last good snapshot.
        """
        if _stamp(self.keys_dir) == self._state.stamp:
            return False
        self._state = _read_state(self.keys_dir)
        return True

    # signing keys ----------------------------------------------------------

    def list_keys(self) -> list[KeyInfo]:
        """Every signing key on disk, by alg, then current/next/retired, then age."""
        order = {state: i for i, state in enumerate(("current", "next", "retired"))}
        return sorted(
            (k.info for k in self._state.keys.values()),
            key=lambda i: (i.alg, order[i.state], -i.created_at.timestamp()),
        )

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        """The public JWKS: next, current and retired-but-unexpired keys; no private member."""
        now = self._clock()
        return {"keys": [dict(k.jwk) for k in self._state.keys.values() if k.info.published(now)]}

    def signing_key(self, alg: str = "RS256") -> tuple[str, PrivateKey]:
        """The kid and private key that sign new ``alg`` tokens (for Authlib's jwt config)."""
        _check_alg(alg)
        key = self._state.current[alg]
        return key.info.kid, key.private

    def verification_key(self, kid: str) -> PublicKey | None:
        """The public key published under ``kid``, or None if unknown or expired."""
        key = self._published(kid)
        return None if key is None else key.public

    def _published(self, kid: str) -> _Key | None:
        key = self._state.keys.get(kid)
        if key is None or not key.info.published(self._clock()):
            return None
        return key

    def sign_jwt(
        self, claims: dict[str, Any], alg: str = "RS256", headers: dict[str, Any] | None = None
    ) -> str:
        """Sign ``claims`` as-is with the current ``alg`` key; header has typ JWT and kid.

        ``headers`` may set e.g. ``typ`` (``at+jwt``) but not ``alg`` or ``kid``.
        """
        _check_alg(alg)
        extra = headers or {}
        if "alg" in extra or "kid" in extra:
            raise ValueError("alg and kid are chosen by the key store")
        key = self._state.current[alg]
        return jwt.encode(
            claims, key.private, algorithm=alg, headers={"typ": "JWT", **extra, "kid": key.info.kid}
        )

    def verify_jwt(
        self,
        token: str,
        *,
        audience: str | Sequence[str],
        issuer: str,
        algorithms: Sequence[str] = SUPPORTED_ALGS,
        leeway: float = 0,
    ) -> dict[str, Any]:
        """Verify a token we signed and return its claims, or raise :class:`InvalidToken`.

        Refused (SECURITY C2): any alg outside both ``algorithms`` and
        :data:`SUPPORTED_ALGS` (so ``none`` and every HMAC alg, whatever key was
        used), a kid we do not publish, a kid whose key is for another alg, a
        bad signature, and wrong or missing ``iss``, ``aud`` or ``exp``.
        """
        header = _unverified_header(token)
        alg, kid = header.get("alg"), header.get("kid")
        if not isinstance(alg, str) or alg not in SUPPORTED_ALGS or alg not in algorithms:
            raise InvalidToken("algorithm not accepted")
        if not isinstance(kid, str):
            raise InvalidToken("no key id")
        key = self._published(kid)
        if key is None:
            raise InvalidToken("unknown key id")
        if key.info.alg != alg or not _alg_fits(alg, key.public):
            raise InvalidToken("key id does not match algorithm")
        try:
            return jwt.decode(
                token,
                key.public,
                algorithms=[alg],
                audience=audience,
                issuer=issuer,
                leeway=leeway,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise InvalidToken("expired") from exc
        except jwt.InvalidAudienceError as exc:
            raise InvalidToken("wrong audience") from exc
        except jwt.InvalidIssuerError as exc:
            raise InvalidToken("wrong issuer") from exc
        except jwt.InvalidSignatureError as exc:
            raise InvalidToken("bad signature") from exc
        except jwt.MissingRequiredClaimError as exc:
            raise InvalidToken(f"missing claim {exc.claim}") from exc
        except jwt.InvalidTokenError as exc:
            raise InvalidToken("invalid token") from exc

    # rotation --------------------------------------------------------------

    def rotate(
        self,
        alg: str = "RS256",
        *,
        retire_after_seconds: int,
        now: datetime | None = None,
        immediate: bool = False,
    ) -> RotationResult:
        """Take the next step of a signing-key rotation for ``alg`` (SECURITY C3).

        One call does one step, so a rotation is two calls ``publish_lead_seconds``
        apart:

        1. no ``next`` key: create one; it is published in the JWKS but does not sign;
        2. a ``next`` key published at least ``publish_lead_seconds`` ago: it
           becomes ``current`` and the old current becomes ``retired``, kept in
           the JWKS until ``now + retire_after_seconds``; otherwise nothing
           changes and the result says when it will be ready.

        ``retire_after_seconds`` must cover the longest lifetime of a token
        signed by the key, plus how long other processes may take to notice the
        rotation (their :meth:`reload_if_changed` interval) and clock skew.

        ``immediate=True`` publishes (if needed) and promotes in one call. The
        old key still verifies until its retire time, but relying parties that
        cached the JWKS see an unknown kid until they refetch — that is why the
        two-step rotation is the default.

        Every call also removes retired keys whose time is up, from the JWKS
        and from disk.
        """
        _check_alg(alg)
        if retire_after_seconds < 0:
            raise ValueError("retire_after_seconds must not be negative")
        now = _aware(now) if now is not None else _aware(self._clock())
        with _locked(self.keys_dir):
            infos = _read_manifest(self.keys_dir)
            if infos is None:
                raise KeyStoreError(f"{self.keys_dir}: no keys to rotate")
            infos, dropped = _purge(infos, now)
            changed = bool(dropped)
            result = RotationResult(
                alg=alg, dropped=tuple(i.kid for i in dropped), immediate=immediate
            )
            nxt = next((i for i in infos if i.alg == alg and i.state == "next"), None)
            if nxt is None:
                nxt = _create_key(self.keys_dir, alg, "next", now)
                infos.append(nxt)
                changed = True
                result = dataclasses.replace(result, published=nxt.kid)
            ready_at = nxt.created_at + timedelta(seconds=self.publish_lead_seconds)
            fresh = result.published is not None
            if immediate or (not fresh and now >= ready_at):
                infos, old = _promote(infos, nxt, now, retire_after_seconds)
                changed = True
                result = dataclasses.replace(
                    result,
                    promoted=nxt.kid,
                    retired=old.kid if old else None,
                    retire_until=old.retire_until if old else None,
                )
            else:
                result = dataclasses.replace(result, pending=nxt.kid, ready_at=max(ready_at, now))
            if changed:
                _write_manifest(self.keys_dir, infos)
            _remove_unlisted(self.keys_dir, infos)
            self._state = _read_state(self.keys_dir)
        return result

    # secrets at rest ---------------------------------------------------------

    def encrypt_secret(self, plain: str) -> str:
        """Encrypt with the newest keyring key: ``fernet:<key id>:<Fernet token>``."""
        newest = self._state.keyring[-1]
        token = self._state.fernets[newest.id].encrypt(plain.encode("utf-8"))
        return f"{_SECRET_SCHEME}:{newest.id}:{token.decode('ascii')}"

    def decrypt_secret(self, token: str) -> str:
        """Decrypt with whichever keyring key encrypted it; :class:`SecretDecryptionError` else."""
        scheme, _, rest = token.partition(":")
        key_id, _, body = rest.partition(":")
        if scheme != _SECRET_SCHEME or not body:
            raise SecretDecryptionError("not an encrypted secret written by this bridge")
        fernet = self._state.fernets.get(key_id)
        if fernet is None and not _KEYRING_ID.match(key_id):
            raise SecretDecryptionError("not an encrypted secret written by this bridge")
        if fernet is None:
            raise SecretDecryptionError(
                f"encrypted with keyring key {key_id!r}, which is not in {self.keys_dir / KEYRING}"
            )
        try:
            return fernet.decrypt(body.encode("ascii")).decode("utf-8")
        except (FernetInvalidToken, UnicodeError) as exc:
            raise SecretDecryptionError("the encrypted secret was altered or is corrupt") from exc

    def needs_reencrypt(self, token: str) -> bool:
        """Whether ``token`` was encrypted with a key older than the newest one."""
        return not token.startswith(f"{_SECRET_SCHEME}:{self._state.keyring[-1].id}:")

    def rotate_keyring(self, *, now: datetime | None = None) -> str:
        """Add a new keyring key, which encrypts from now on; all keys still decrypt.

        Returns the new key id. Re-encrypt stored values (see
        :meth:`needs_reencrypt`) before ever removing an old key by hand.
        """
        now = _aware(now) if now is not None else _aware(self._clock())
        with _locked(self.keys_dir):
            entries = _read_keyring(self.keys_dir) or []
            entry = _new_keyring_entry(now, entries)
            _write_keyring(self.keys_dir, [*entries, entry])
            self._state = _read_state(self.keys_dir)
        return entry.id

    def keyring_ids(self) -> list[str]:
        """Keyring key ids, oldest first; the last one encrypts."""
        return [e.id for e in self._state.keyring]

    def mac_keys(self, purpose: str) -> list[tuple[str, bytes]]:
        """``(keyring id, 32-byte key)`` for MACs of one ``purpose``, newest first.

        Each is HMAC-SHA256(keyring key, purpose): a key of its own per use,
        so a MAC never doubles as anything the keyring encrypts, and no new
        secret needs configuring. The newest signs; all of them verify, so
        :meth:`rotate_keyring` does not void what was signed before.
        """
        label = f"imis-bridge mac key: {purpose}".encode()
        return [
            (e.id, hmac.new(e.key.encode("ascii"), label, hashlib.sha256).digest())
            for e in reversed(self._state.keyring)
        ]


def _promote(
    infos: list[KeyInfo], nxt: KeyInfo, now: datetime, retire_after_seconds: int
) -> tuple[list[KeyInfo], KeyInfo | None]:
    out: list[KeyInfo] = []
    old: KeyInfo | None = None
    for info in infos:
        if info.kid == nxt.kid:
            info = dataclasses.replace(info, state="current", activated_at=now)
        elif info.alg == nxt.alg and info.state == "current":
            info = old = dataclasses.replace(
                info,
                state="retired",
                retired_at=now,
                retire_until=now + timedelta(seconds=retire_after_seconds),
            )
        out.append(info)
    return out, old


# --- client secrets (SECURITY B3) -------------------------------------------


def generate_client_secret() -> str:
    """A new RP client secret: 256 random bits, URL-safe (43 characters)."""
    return secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    """Hash an RP client secret for storage: ``hmac-sha256$<salt>$<hex digest>``.

    Deliberately a fast salted hash, not a password hash (bcrypt, scrypt,
    argon2). Slow hashes exist to make guessing low-entropy human passwords
    expensive; our client secrets come from :func:`generate_client_secret`
    with 256 random bits, which no amount of hashing speed makes guessable
    from a leaked database. A slow hash would instead cost tens of
    milliseconds of CPU on every client authentication at the token endpoint,
    which is hot (target above 1,200 refresh grants a second) and would hand
    attackers a cheap denial of service. The per-secret salt keeps equal
    secrets from having equal hashes. Secrets chosen by people must therefore
    be refused where they enter (the registry requires a minimum length).
    """
    if not secret:
        raise ValueError("an empty client secret cannot be stored")
    salt = secrets.token_bytes(16)
    digest = hmac.new(salt, secret.encode("utf-8"), hashlib.sha256).hexdigest()
    return f"{_HASH_SCHEME}${_b64url(salt)}${digest}"


def verify_secret(secret: str, stored: str) -> bool:
    """Whether ``secret`` matches ``stored`` (from :func:`hash_secret`), in constant time."""
    scheme, _, rest = stored.partition("$")
    salt_text, _, expected = rest.partition("$")
    if scheme != _HASH_SCHEME or not expected:
        return False
    try:
        salt = _b64url_decode(salt_text)
    except (binascii.Error, ValueError):
        return False
    actual = hmac.new(salt, secret.encode("utf-8"), hashlib.sha256).hexdigest()
    return hmac.compare_digest(actual.encode("ascii"), expected.encode("ascii", "replace"))


# --- command line -------------------------------------------------------------


def _human(moment: datetime | None) -> str:
    return "-" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _fail(reason: str, err: TextIO) -> int:
    print(f"error: {reason}", file=err)
    return 1


def cmd_list(keys_dir: Path, as_json: bool, *, out: TextIO | None = None) -> int:
    """``bridge keys list``: the signing keys and keyring ids as a table or JSON."""
    out = out or sys.stdout
    try:
        store = KeyStore.open(keys_dir)
    except KeyStoreError as exc:
        return _fail(str(exc), sys.stderr)
    now = _utcnow()
    infos = store.list_keys()
    if as_json:
        payload = {
            "keys": [{**i.to_json(), "in_jwks": i.published(now)} for i in infos],
            "keyring": {"ids": store.keyring_ids(), "encrypts": store.keyring_ids()[-1]},
        }
        print(json.dumps(payload, indent=2), file=out)
        return 0
    rows = [("KID", "ALG", "STATE", "CREATED", "ACTIVATED", "RETIRED", "IN JWKS")]
    for i in infos:
        if i.state != "retired":
            in_jwks = "yes"
        elif i.published(now):
            in_jwks = f"until {_human(i.retire_until)}"
        else:
            in_jwks = "no (expired)"
        rows.append(
            (
                i.kid,
                i.alg,
                i.state,
                _human(i.created_at),
                _human(i.activated_at),
                _human(i.retired_at),
                in_jwks,
            )
        )
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip(), file=out
        )
    ids = store.keyring_ids()
    print(f"\nKeyring: {len(ids)} key(s); {ids[-1]} encrypts, all decrypt.", file=out)
    return 0


def cmd_rotate(
    keys_dir: Path,
    alg: str,
    immediate: bool,
    retire_after_seconds: int,
    *,
    publish_lead_seconds: int = DEFAULT_PUBLISH_LEAD_SECONDS,
    as_json: bool = False,
    out: TextIO | None = None,
) -> int:
    """``bridge keys rotate``: one rotation step for ``alg`` (see :meth:`KeyStore.rotate`).

    Pass ``retire_after_seconds`` = the longest JWT lifetime in settings plus a
    margin for process reload and clock skew (a few minutes).
    """
    out = out or sys.stdout
    try:
        _check_alg(alg)
        store = KeyStore.open(keys_dir, publish_lead_seconds=publish_lead_seconds)
        result = store.rotate(alg, retire_after_seconds=retire_after_seconds, immediate=immediate)
    except (KeyStoreError, ValueError) as exc:
        return _fail(str(exc), sys.stderr)
    print(json.dumps(result.to_json(), indent=2) if as_json else result.describe(), file=out)
    return 0
