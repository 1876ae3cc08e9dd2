"""Signing keys, the public JWKS and their rotation; signing and verifying JWTs; the KeyStore.

This module owns the signing keys kept in a :class:`~bridge.keys.vault.Vault`
(``keys_dir``, or the database sealed with a KEK): it creates the RS256 and
ES256 keys on first use, publishes the public keys as a JWKS (kid = RFC 7638
thumbprint), rotates them so that a key is published before it signs and stays
published until what it signed has expired (SECURITY C3), and, with a vault
shared through the database, signs only once every serving process publishes
it. It signs JWTs and verifies them refusing ``none``, HMAC, unknown keys and
wrong iss/aud/exp (C2). :class:`KeyStore` is the one object callers hold: it
keeps one immutable snapshot of the vault (signing keys and the :mod:`.keyring`),
reloads it when another process changed it, and is the only writer of
``manifest.json``. It must not decide what a token says or how long it lives
(that is :mod:`bridge.oauth`), must never hand a private key member to
anything but its caller or write one outside its vault, must not print
(the ``bridge keys`` commands live in :mod:`bridge.cli`), and touches no disk
or database at import time: nothing happens until :meth:`KeyStore.load_or_create`
or :meth:`KeyStore.open`.

The blobs of a vault (in ``keys_dir``, files; the rules are :mod:`.files`')::

    manifest.json        signing-key metadata: kid, alg, state, times (the commit point)
    RS256-<kid>.pem      one PKCS#8 private key per signing key, named by RFC 7638 kid
    ES256-<kid>.pem
    keyring.json         Fernet keys that encrypt stored secrets (see .keyring)
    .lock                (a folder only) flock target serialising changes across processes

A key blob is written before the manifest names it and deleted only after the
manifest stopped naming it, so a reader that sees a manifest always finds its
keys (a reader racing a deletion simply re-reads; the database's changes land
in one transaction anyway).
"""

from __future__ import annotations

import binascii
import dataclasses
import hashlib
import json
import re
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from bridge.keys.encoding import aware, b64url, b64url_decode, human_time, iso
from bridge.keys.files import (
    TMP_PREFIX,
    DirectoryVault,
    KeyStoreError,
    dump_entries,
    parse_entries,
)
from bridge.keys.keyring import KEYRING, Keyring, KeyringEntry, add_keyring_key, parse_keyring
from bridge.keys.vault import Vault, VaultWriter

__all__ = [
    "DEFAULT_PUBLISH_LEAD_SECONDS",
    "KEYS_POLL_SECONDS",
    "MANIFEST",
    "PEER_SILENCE_SECONDS",
    "PEER_WAIT_SECONDS",
    "SUPPORTED_ALGS",
    "InvalidToken",
    "KeyInfo",
    "KeyStore",
    "RotationResult",
    "check_alg",
    "jwk_thumbprint",
    "vault_of",
]

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey
Clock = Callable[[], datetime]

#: Signing algorithms the bridge issues and accepts. HMAC is deliberately absent.
SUPPORTED_ALGS: Final = ("RS256", "ES256")
#: How long a new key sits in the JWKS before it may sign. Must exceed how long
#: relying parties (and any HTTP cache in front of the JWKS) keep a copy.
DEFAULT_PUBLISH_LEAD_SECONDS: Final = 24 * 3600
#: Added to the longest token lifetime before a rotated-out signing key leaves JWKS.
ROTATION_MARGIN_SECONDS: Final = 300
#: How often a serving process reads a database vault's stamp (and acknowledges
#: the keys it publishes): a change made at another process is seen within this.
KEYS_POLL_SECONDS: Final = 1.0
#: A serving process silent for this long (stopped, crashed, cut off) no longer
#: holds back a rotation; it reloads before it signs again.
PEER_SILENCE_SECONDS: Final = 30
#: How long an immediate rotation waits for every serving process to publish the key.
PEER_WAIT_SECONDS: Final = 5.0
_PEER_WAIT_STEP_SECONDS: Final = 0.2


def retire_after_seconds(*token_lifetimes: int) -> int:
    """How long a rotated-out key stays in the JWKS: every token it signed must
    expire first, plus a margin for processes still reloading keys and clock skew."""
    return max(token_lifetimes) + ROTATION_MARGIN_SECONDS


MANIFEST: Final = "manifest.json"
_STATES: Final = ("next", "current", "retired")
_KID = re.compile(r"^[A-Za-z0-9_-]{43}$")  # base64url SHA-256: also a safe file name
_SEGMENT = re.compile(r"^[A-Za-z0-9_-]+$")
_MAX_TOKEN_CHARS: Final = 16 * 1024  # ours are < 2 KiB; bounds the work a stranger can cause
_PEM_FILE = re.compile(r"^(RS256|ES256)-[A-Za-z0-9_-]{43}\.pem$")
_LOAD_ATTEMPTS: Final = 3


class InvalidToken(Exception):
    """A JWT was refused. ``reason`` is short, fixed text for the log, never token content."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


# --- small helpers ------------------------------------------------------------


def _uint(value: int, length: int | None = None) -> str:
    size = length if length is not None else max(1, (value.bit_length() + 7) // 8)
    return b64url(value.to_bytes(size, "big"))


def _utcnow() -> datetime:
    return datetime.now(UTC)


def check_alg(alg: str) -> None:
    """Refuse (``ValueError``) an ``alg`` outside :data:`SUPPORTED_ALGS`."""
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
    return b64url(hashlib.sha256(canonical.encode("utf-8")).digest())


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
            "created_at": iso(self.created_at),
            "activated_at": iso(self.activated_at),
            "retired_at": iso(self.retired_at),
            "retire_until": iso(self.retire_until),
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
                return aware(datetime.fromisoformat(value))
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
    #: Serving processes that have not yet published the pending key (database vault).
    waiting_for: tuple[str, ...] = ()

    def describe(self) -> str:
        lines: list[str] = []
        if self.published:
            lines.append(f"Published new {self.alg} key {self.published} in the JWKS.")
        if self.promoted:
            lines.append(f"{self.alg} key {self.promoted} now signs new tokens.")
        if self.retired:
            lines.append(
                f"Previous key {self.retired} no longer signs; it stays in the JWKS "
                f"until {human_time(self.retire_until)} so tokens it signed keep verifying."
            )
        if self.pending and not self.published:
            lines.append(f"{self.alg} key {self.pending} is published but does not sign yet.")
        if self.ready_at is not None:
            lines.append(
                f"It starts signing at the next rotation after {human_time(self.ready_at)}, "
                "when relying parties have had time to fetch it: run `bridge keys rotate` "
                "again then (or use --now)."
            )
        if self.waiting_for:
            lines.append(
                "It signs only once every serving process publishes it, and "
                f"{len(self.waiting_for)} has not yet: {', '.join(self.waiting_for)}. "
                f"Each reloads the keys every {KEYS_POLL_SECONDS:g} s, and one silent for "
                f"{PEER_SILENCE_SECONDS} s no longer counts: take the step again shortly."
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
            "retire_until": iso(self.retire_until),
            "ready_at": iso(self.ready_at),
            "dropped": list(self.dropped),
            "immediate": self.immediate,
            "waiting_for": list(self.waiting_for),
        }


@dataclass(frozen=True, slots=True)
class _Key:
    info: KeyInfo
    private: PrivateKey
    public: PublicKey
    jwk: dict[str, str]  # public members + kid, use, alg; copied before leaving the module


@dataclass(frozen=True, slots=True)
class _State:
    """One consistent, immutable snapshot of the vault; swapped whole on reload."""

    keys: dict[str, _Key]
    current: dict[str, _Key]
    keyring: Keyring
    stamp: Hashable


class _Torn(Exception):
    """The manifest names a key blob the same read did not find: a rotation raced it."""


# --- the vault's blobs ----------------------------------------------------------


def _parse_manifest(raw: bytes | None, where: str) -> list[KeyInfo] | None:
    at = f"{where}/{MANIFEST}"
    raw_keys = parse_entries(raw, at)
    if raw_keys is None:
        return None
    infos = [KeyInfo.from_json(item, f"{at}: keys[{i}]") for i, item in enumerate(raw_keys)]
    if len({info.kid for info in infos}) != len(infos):
        raise KeyStoreError(f"{at}: a kid appears twice")
    for alg in SUPPORTED_ALGS:
        for state in ("next", "current"):
            if sum(1 for i in infos if i.alg == alg and i.state == state) > 1:
                raise KeyStoreError(f"{at}: more than one {state} {alg} key")
    return infos


def _write_manifest(vault: VaultWriter, infos: Sequence[KeyInfo]) -> None:
    vault.write(MANIFEST, dump_entries([info.to_json() for info in infos]))


def _create_key(vault: VaultWriter, alg: str, state: str, now: datetime) -> KeyInfo:
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
    vault.write(info.file_name, pem)
    return info


def _load_key(pem: bytes, info: KeyInfo, where: str) -> _Key:
    at = f"{where}/{info.file_name}"
    try:
        private = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyStoreError(f"{at}: not an unencrypted PEM private key") from exc
    if not isinstance(private, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) or not _alg_fits(
        info.alg, private
    ):
        raise KeyStoreError(f"{at}: key type does not fit {info.alg}")
    public = private.public_key()
    members = _public_members(public)
    if jwk_thumbprint(members) != info.kid:
        raise KeyStoreError(f"{at}: key does not match its kid in {MANIFEST}")
    return _Key(info, private, public, {**members, "kid": info.kid, "use": "sig", "alg": info.alg})


def _state_of(stamp: Hashable, blobs: dict[str, bytes], where: str) -> _State:
    infos = _parse_manifest(blobs.get(MANIFEST), where)
    keyring = parse_keyring(blobs.get(KEYRING), f"{where}/{KEYRING}")
    if infos is None or keyring is None:
        raise KeyStoreError(f"{where}: no keys here; they are created when the bridge first starts")
    keys: dict[str, _Key] = {}
    for info in infos:
        pem = blobs.get(info.file_name)
        if pem is None:
            raise _Torn(info.file_name)
        keys[info.kid] = _load_key(pem, info, where)
    current = {k.info.alg: k for k in keys.values() if k.info.state == "current"}
    missing = [alg for alg in SUPPORTED_ALGS if alg not in current]
    if missing or not keyring:
        what = f"no current {', '.join(missing)} key" if missing else "an empty keyring"
        raise KeyStoreError(f"{where}: incomplete key set ({what})")
    return _State(keys, current, Keyring.of(f"{where}/{KEYRING}", keyring), stamp)


def _read_state(vault: Vault) -> _State:
    for attempt in range(_LOAD_ATTEMPTS):
        stamp, blobs = vault.load()  # the stamp is taken first: a later write reloads again
        try:
            return _state_of(stamp, blobs, vault.where)
        except _Torn as exc:
            if attempt + 1 == _LOAD_ATTEMPTS:
                raise KeyStoreError(
                    f"{vault.where}: {MANIFEST} names a key that is missing: {exc}"
                ) from exc
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
        header = json.loads(b64url_decode(head))
    except (ValueError, binascii.Error) as exc:
        raise InvalidToken("malformed token") from exc
    if not isinstance(header, dict):
        raise InvalidToken("malformed token")
    return header


def _purge(infos: list[KeyInfo], now: datetime) -> tuple[list[KeyInfo], list[KeyInfo]]:
    kept = [i for i in infos if i.published(now)]
    dropped = [i for i in infos if not i.published(now)]
    return kept, dropped


def _start_fresh(vault: VaultWriter, where: str, keyring: list[KeyringEntry] | None) -> None:
    """First start: write an empty manifest before any key blob.

    From then on a key blob the manifest does not name is a leftover of a
    crashed writer and safe to delete. Key blobs with no manifest at all mean
    someone removed it: refuse rather than delete keys an operator may need.
    """
    strays = [name for name in vault.names() if _PEM_FILE.match(name)]
    if strays or keyring:
        found = ", ".join([*strays, KEYRING] if keyring else strays)
        raise KeyStoreError(
            f"{where}: {MANIFEST} is missing but keys are present ({found}); "
            f"restore {MANIFEST} from a backup, or move the keys away to start afresh"
        )
    _write_manifest(vault, [])


def _remove_unlisted(vault: VaultWriter, infos: Sequence[KeyInfo]) -> None:
    """Delete key blobs the manifest no longer names, and temp files of crashed writers.

    Called only under the lock, after the manifest was written, so nothing
    removed here is being written or can be named again.
    """
    listed = {info.file_name for info in infos}
    for name in vault.names():
        if (_PEM_FILE.match(name) and name not in listed) or name.startswith(TMP_PREFIX):
            vault.delete(name)


def vault_of(source: str | Path | Vault) -> Vault:
    """``source`` itself, or the folder vault of a ``keys_dir`` path."""
    if isinstance(source, str | Path):
        return DirectoryVault(Path(source), stamped=(MANIFEST, KEYRING))
    return source


# --- the store ----------------------------------------------------------------


class KeyStore:
    """Signing keys, JWKS and secret keyring of one :class:`~bridge.keys.vault.Vault`, in memory.

    Build one with :meth:`load_or_create` (server start) or :meth:`open`
    (commands that must not create keys), from a ``keys_dir`` path or a vault.
    Reads use an immutable snapshot, so one instance may be shared by threads;
    call :meth:`reload_if_changed` to pick up rotations done by other processes:
    on every use for a folder (:attr:`cheap_reload`), every
    :data:`KEYS_POLL_SECONDS` from housekeeping for the database.
    """

    def __init__(
        self,
        vault: Vault,
        state: _State,
        *,
        publish_lead_seconds: int = DEFAULT_PUBLISH_LEAD_SECONDS,
        clock: Clock = _utcnow,
    ) -> None:
        if publish_lead_seconds < 0:
            raise ValueError("publish_lead_seconds must not be negative")
        self.vault = vault
        #: Why the last reload failed (the keys in memory keep serving), or None.
        self.problem: str | None = None
        #: This serving process among its peers, once it :meth:`acknowledge`\ d.
        self.instance: str | None = None
        self.publish_lead_seconds = publish_lead_seconds
        self._clock = clock
        self._state = state

    @property
    def cheap_reload(self) -> bool:
        """Whether :meth:`reload_if_changed` is cheap enough for every request."""
        return self.vault.cheap_stamp

    # construction ----------------------------------------------------------

    @classmethod
    def load_or_create(
        cls,
        source: str | Path | Vault,
        *,
        publish_lead_seconds: int = DEFAULT_PUBLISH_LEAD_SECONDS,
        clock: Clock = _utcnow,
    ) -> KeyStore:
        """Load the keys, first creating whatever is missing (keys, keyring, the folder).

        Safe when several processes start at once: creation happens under the
        vault's lock and the first one wins. Retired keys whose time is up are removed.
        """
        vault = vault_of(source)
        vault.prepare()
        where = vault.where
        with vault.locked() as tx:
            now = aware(clock())
            listed = _parse_manifest(tx.read(MANIFEST), where)
            keyring = parse_keyring(tx.read(KEYRING), f"{where}/{KEYRING}")
            if listed is None:
                _start_fresh(tx, where, keyring)
                listed = []
            elif keyring is None:
                raise KeyStoreError(
                    f"{where}/{KEYRING} is missing: restore it from a backup, since "
                    "stored secrets cannot be decrypted without it. If it is truly lost, "
                    f'write {{"version": 1, "keys": []}} to it and re-enter every stored secret.'
                )
            infos, dropped = _purge(listed, now)
            changed = bool(dropped)
            for alg in SUPPORTED_ALGS:
                if not any(i.alg == alg and i.state == "current" for i in infos):
                    infos.append(_create_key(tx, alg, "current", now))
                    changed = True
            if not keyring:
                add_keyring_key(tx, where, now)
            if changed:
                _write_manifest(tx, infos)
            _remove_unlisted(tx, infos)
        return cls(
            vault, _read_state(vault), publish_lead_seconds=publish_lead_seconds, clock=clock
        )

    @classmethod
    def open(
        cls,
        source: str | Path | Vault,
        *,
        publish_lead_seconds: int = DEFAULT_PUBLISH_LEAD_SECONDS,
        clock: Clock = _utcnow,
    ) -> KeyStore:
        """Load existing keys; :class:`KeyStoreError` if there are none."""
        vault = vault_of(source)
        if isinstance(vault, DirectoryVault) and not vault.keys_dir.is_dir():
            raise KeyStoreError(
                f"{vault.where}: no keys here; they are created when the bridge first starts"
            )
        return cls(
            vault, _read_state(vault), publish_lead_seconds=publish_lead_seconds, clock=clock
        )

    def reload_if_changed(self) -> bool:
        """Re-read the vault if another process changed it (its stamp moved).

        On a broken vault this raises :class:`KeyStoreError` and keeps serving the
        last good snapshot.
        """
        if self.vault.stamp() == self._state.stamp:
            return False
        try:
            self._state = _read_state(self.vault)
        except KeyStoreError as error:
            self.problem = str(error)
            raise
        self.problem = None
        return True

    def copy_into(self, target: Vault) -> tuple[KeyStore, bool]:
        """Copy this key set, as its vault holds it now, into ``target`` (``bridge keys
        migrate``); the store of ``target`` and whether anything was copied.

        ``target`` must hold no keys, or exactly these (a second run copies nothing);
        otherwise :class:`KeyStoreError`, and nothing is written. Both vaults stay
        locked meanwhile, so no rotation slips in between.
        """
        where = self.vault.where
        with self.vault.locked() as source, target.locked() as tx:
            manifest, keyring = source.read(MANIFEST), source.read(KEYRING)
            infos = _parse_manifest(manifest, where)
            if infos is None or manifest is None or keyring is None:
                raise KeyStoreError(f"{where}: no keys to copy")
            blobs = {MANIFEST: manifest, KEYRING: keyring}
            for info in infos:
                pem = source.read(info.file_name)
                if pem is None:
                    raise KeyStoreError(f"{where}: {MANIFEST} names a key that is missing")
                blobs[info.file_name] = pem
            _state_of(None, blobs, where)  # a complete, consistent set, or an error
            present = {name: tx.read(name) for name in tx.names()}
            if present == blobs:
                copied = False
            elif present:
                raise KeyStoreError(
                    f"{target.where} already holds other keys ({len(present)} blobs); "
                    'nothing was copied. A bridge that started with key_store = "database" '
                    "made its own: remove them only if no token they signed is still in use."
                )
            else:
                for name, blob in blobs.items():
                    tx.write(name, blob)
                copied = True
        store = KeyStore(
            target,
            _read_state(target),
            publish_lead_seconds=self.publish_lead_seconds,
            clock=self._clock,
        )
        return store, copied

    def reload_if_cheap(self) -> None:
        """On a request's path: :meth:`reload_if_changed` for a folder (two ``stat``
        calls); a database vault is followed by housekeeping instead."""
        if self.vault.cheap_stamp:
            self.reload_if_changed()

    def acknowledge(self, instance: str) -> None:
        """Record in the vault that this serving process publishes its current JWKS.

        A rotation promotes a key only when every serving process heard from in the
        last :data:`PEER_SILENCE_SECONDS` has acknowledged it (see :meth:`rotate`).
        """
        self.instance = instance
        self.vault.acknowledge(instance, self.published_kids(), aware(self._clock()))

    def published_kids(self) -> frozenset[str]:
        """The kids in the JWKS now (what :meth:`acknowledge` records)."""
        return frozenset(k.info.kid for k in self._published_keys())

    def _published_keys(self) -> list[_Key]:
        """The keys in the JWKS now: next, current, and retired but not yet expired."""
        now = self._clock()
        return [k for k in self._state.keys.values() if k.info.published(now)]

    def forget(self, instance: str) -> None:
        """This serving process stops: it no longer holds back a rotation."""
        self.vault.forget(instance)

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
        return {"keys": [dict(k.jwk) for k in self._published_keys()]}

    def signing_key(self, alg: str = "RS256") -> tuple[str, PrivateKey]:
        """The kid and private key that sign new ``alg`` tokens (for Authlib's jwt config)."""
        check_alg(alg)
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
        check_alg(alg)
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
        wait_seconds: float = PEER_WAIT_SECONDS,
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

        With a database vault, a key never signs before every other serving
        process publishes it (C3, G4): promotion waits until each one heard from
        in the last :data:`PEER_SILENCE_SECONDS` acknowledged the key. An
        immediate rotation publishes, waits up to ``wait_seconds`` for that
        (processes reload every :data:`KEYS_POLL_SECONDS`), then promotes; if
        some never answer, the key stays published and the result names them.

        Every call also removes retired keys whose time is up, from the JWKS
        and from the vault.
        """
        check_alg(alg)
        if retire_after_seconds < 0:
            raise ValueError("retire_after_seconds must not be negative")
        result = self._rotate_step(alg, retire_after_seconds, now, immediate)
        deadline = time.monotonic() + wait_seconds
        while immediate and result.waiting_for and time.monotonic() < deadline:
            time.sleep(_PEER_WAIT_STEP_SECONDS)
            assert result.pending is not None
            if self._not_yet_published(result.pending, aware(self._clock())):
                continue
            promoted = self._rotate_step(alg, retire_after_seconds, now, immediate)
            result = dataclasses.replace(
                promoted, published=result.published, dropped=result.dropped + promoted.dropped
            )
        return result

    def _rotate_step(
        self, alg: str, retire_after_seconds: int, now: datetime | None, immediate: bool
    ) -> RotationResult:
        now = aware(now) if now is not None else aware(self._clock())
        where = self.vault.where
        with self.vault.locked() as tx:
            infos = _parse_manifest(tx.read(MANIFEST), where)
            if infos is None:
                raise KeyStoreError(f"{where}: no keys to rotate")
            infos, dropped = _purge(infos, now)
            changed = bool(dropped)
            result = RotationResult(
                alg=alg, dropped=tuple(i.kid for i in dropped), immediate=immediate
            )
            nxt = next((i for i in infos if i.alg == alg and i.state == "next"), None)
            if nxt is None:
                nxt = _create_key(tx, alg, "next", now)
                infos.append(nxt)
                changed = True
                result = dataclasses.replace(result, published=nxt.kid)
            ready_at = nxt.created_at + timedelta(seconds=self.publish_lead_seconds)
            fresh = result.published is not None
            due = immediate or (not fresh and now >= ready_at)
            waiting = self._not_yet_published(nxt.kid, now) if due else ()
            if due and not waiting:
                infos, old = _promote(infos, nxt, now, retire_after_seconds)
                changed = True
                result = dataclasses.replace(
                    result,
                    promoted=nxt.kid,
                    retired=old.kid if old else None,
                    retire_until=old.retire_until if old else None,
                )
            else:
                result = dataclasses.replace(
                    result,
                    pending=nxt.kid,
                    ready_at=None if due else max(ready_at, now),
                    waiting_for=waiting,
                )
            if changed:
                _write_manifest(tx, infos)
            _remove_unlisted(tx, infos)
        self._state = _read_state(self.vault)
        return result

    def _not_yet_published(self, kid: str, now: datetime) -> tuple[str, ...]:
        """The other serving processes, heard from lately, whose JWKS lacks ``kid``."""
        since = now - timedelta(seconds=PEER_SILENCE_SECONDS)
        peers = self.vault.peers(since)
        return tuple(
            sorted(p for p, kids in peers.items() if kid not in kids and p != self.instance)
        )

    # secrets at rest (the keyring: see bridge.keys.keyring) ----------------

    def encrypt_secret(self, plain: str) -> str:
        """Encrypt with the newest keyring key: ``fernet:<key id>:<Fernet token>``."""
        return self._state.keyring.encrypt(plain)

    def decrypt_secret(self, token: str) -> str:
        """Decrypt with whichever keyring key encrypted it; :class:`SecretDecryptionError` else."""
        return self._state.keyring.decrypt(token)

    def needs_reencrypt(self, token: str) -> bool:
        """Whether ``token`` was encrypted with a key older than the newest one."""
        return self._state.keyring.needs_reencrypt(token)

    def rotate_keyring(self, *, now: datetime | None = None) -> str:
        """Add a new keyring key, which encrypts from now on; all keys still decrypt.

        Returns the new key id. Re-encrypt stored values (see
        :meth:`needs_reencrypt`) before ever removing an old key by hand.
        """
        now = aware(now) if now is not None else aware(self._clock())
        with self.vault.locked() as tx:
            entry = add_keyring_key(tx, self.vault.where, now)
        self._state = _read_state(self.vault)
        return entry.id

    def keyring_ids(self) -> list[str]:
        """Keyring key ids, oldest first; the last one encrypts."""
        return self._state.keyring.ids()

    def mac_keys(self, purpose: str) -> list[tuple[str, bytes]]:
        """``(keyring id, 32-byte key)`` for MACs of one ``purpose``, newest first.

        See :meth:`bridge.keys.keyring.Keyring.mac_keys`; :meth:`rotate_keyring`
        does not void what was signed before.
        """
        return self._state.keyring.mac_keys(purpose)


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
