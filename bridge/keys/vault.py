"""Where the key material lives: the :class:`Vault` protocol, and :class:`SealedVault`,
which encrypts everything it stores with a key-encryption key (KEK).

The key store (:mod:`.signing`) keeps its material as a few named blobs: the
manifest, one PEM per signing key and the keyring. A vault stores those blobs.
Two kinds exist: a folder (:class:`bridge.keys.files.DirectoryVault`, the
single-host default) and the database (``bridge.storage.key_vault``, wrapped in a
:class:`SealedVault` so the database never holds a private key in clear). This
module owns the protocol and the sealing format; it must not know what a blob
means, and never logs or returns a KEK.

Sealed blob: ``0x01 | KEK id (8 bytes) | nonce (12) | AES-256-GCM ciphertext+tag``,
with the blob's name as associated data, so a blob moved to another name does not
open. The KEK id (a hash of the KEK, not the KEK) lets an error say which KEK
sealed a blob when the configured one is another.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Hashable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime
from typing import Final, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bridge.keys.files import KeyStoreError

__all__ = ["KEK_BYTES", "Kek", "SealedVault", "Vault", "VaultWriter", "sealed_with"]

#: A KEK is 32 random bytes (AES-256), given base64-encoded.
KEK_BYTES: Final = 32
_FORMAT: Final = b"\x01"
_ID_BYTES: Final = 8
_NONCE_BYTES: Final = 12
_HEADER: Final = len(_FORMAT) + _ID_BYTES + _NONCE_BYTES


class VaultWriter(Protocol):
    """The vault as seen while holding its lock: reads see the writes made under it."""

    def read(self, name: str) -> bytes | None: ...
    def write(self, name: str, data: bytes) -> None: ...
    def delete(self, name: str) -> None: ...
    def names(self) -> list[str]: ...


class Vault(Protocol):
    """A store of named blobs shared by every process of one bridge."""

    #: Where it is, for messages (a folder, or ``database``).
    where: str
    #: Whether :meth:`stamp` is cheap enough to call on every request (a folder:
    #: two ``stat`` calls). A vault where it is not is polled by housekeeping.
    cheap_stamp: bool

    def prepare(self) -> None:
        """Make it usable before the first :meth:`locked` (create the folder)."""

    def locked(self) -> AbstractContextManager[VaultWriter]:
        """Exclusive across processes; writes made under it land together at its end."""

    def load(self) -> tuple[Hashable, dict[str, bytes]]:
        """The stamp (taken first), then every blob. {} if the vault holds nothing."""

    def stamp(self) -> Hashable:
        """Changes whenever a blob does."""

    def acknowledge(self, instance: str, kids: Iterable[str], now: datetime) -> None:
        """Record that the serving process ``instance`` publishes ``kids`` (see :meth:`peers`)."""

    def peers(self, since: datetime) -> dict[str, frozenset[str]]:
        """The kids each serving process published, by process, acknowledged since ``since``.

        A folder records none: on one host, the publish lead time alone keeps a key
        from signing before every process has published it.
        """

    def forget(self, instance: str) -> None:
        """The serving process ``instance`` stopped: it no longer holds back a rotation."""


class Kek:
    """A key-encryption key. Its ``id`` is safe to show; the key itself never leaves."""

    __slots__ = ("_aead", "id")

    def __init__(self, key: bytes) -> None:
        if len(key) != KEK_BYTES:
            raise ValueError(f"a key-encryption key is {KEK_BYTES} bytes")
        self._aead = AESGCM(key)
        self.id = hashlib.sha256(b"imis-bridge kek id\x00" + key).digest()[:_ID_BYTES]

    def __repr__(self) -> str:
        return f"Kek(id={self.id.hex()})"

    def seal(self, name: str, plain: bytes) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        return _FORMAT + self.id + nonce + self._aead.encrypt(nonce, plain, _aad(name))

    def open(self, name: str, sealed: bytes, where: str) -> bytes:
        """The blob ``name`` sealed with this KEK; :class:`KeyStoreError` if it is another's."""
        return _open(name, sealed, where, {self.id: self})

    def _decrypt(self, name: str, sealed: bytes, where: str) -> bytes:
        nonce = sealed[1 + _ID_BYTES : _HEADER]
        try:
            return self._aead.decrypt(nonce, sealed[_HEADER:], _aad(name))
        except InvalidTag as exc:
            raise KeyStoreError(f"{where}/{name}: the sealed blob was altered") from exc


def sealed_with(sealed: bytes) -> bytes | None:
    """The id of the KEK that sealed ``sealed``, or None if it is no sealed blob."""
    if len(sealed) < _HEADER or sealed[:1] != _FORMAT:
        return None
    return sealed[1 : 1 + _ID_BYTES]


def _open(name: str, sealed: bytes, where: str, keks: dict[bytes, Kek]) -> bytes:
    kek_id = sealed_with(sealed)
    if kek_id is None:
        raise KeyStoreError(f"{where}/{name}: not a blob sealed by this bridge")
    kek = keks.get(kek_id)
    if kek is None:
        configured = ", ".join(k.hex() for k in keks)
        raise KeyStoreError(
            f"{where}/{name}: sealed with key-encryption key {kek_id.hex()}, but the "
            f"configured one is {configured} (BRIDGE_KEK or kek_file is not the key the "
            "keys were stored with)"
        )
    return kek._decrypt(name, sealed, where)


def _aad(name: str) -> bytes:
    return b"imis-bridge vault\x00" + name.encode("utf-8")


class _SealedWriter:
    __slots__ = ("_inner", "_vault")

    def __init__(self, inner: VaultWriter, vault: SealedVault) -> None:
        self._inner, self._vault = inner, vault

    def read(self, name: str) -> bytes | None:
        sealed = self._inner.read(name)
        return None if sealed is None else self._vault.open(name, sealed)

    def write(self, name: str, data: bytes) -> None:
        self._inner.write(name, self._vault.kek.seal(name, data))

    def delete(self, name: str) -> None:
        self._inner.delete(name)

    def names(self) -> list[str]:
        return self._inner.names()


class SealedVault:
    """``inner`` with every blob encrypted by ``kek`` (AES-256-GCM, bound to its name).

    ``previous`` KEKs still open what they sealed (while :meth:`reseal` moves every
    blob to ``kek``); only ``kek`` seals.
    """

    def __init__(self, inner: Vault, kek: Kek, previous: Iterable[Kek] = ()) -> None:
        self.inner = inner
        self.kek = kek
        self._keks = {k.id: k for k in (*previous, kek)}
        self.where = inner.where
        self.cheap_stamp = inner.cheap_stamp

    def open(self, name: str, sealed: bytes) -> bytes:
        return _open(name, sealed, self.where, self._keks)

    def prepare(self) -> None:
        self.inner.prepare()

    @contextmanager
    def locked(self) -> Iterator[VaultWriter]:
        with self.inner.locked() as writer:
            yield _SealedWriter(writer, self)

    def load(self) -> tuple[Hashable, dict[str, bytes]]:
        stamp, sealed = self.inner.load()
        return stamp, {n: self.open(n, blob) for n, blob in sealed.items()}

    def reseal(self) -> tuple[int, int]:
        """Seal with ``kek`` every blob another KEK sealed: ``(resealed, blobs)``.

        One transaction under the vault's lock; a second run reseals nothing.
        """
        resealed = 0
        with self.inner.locked() as writer:
            names = writer.names()
            for name in names:
                blob = writer.read(name)
                if blob is not None and sealed_with(blob) != self.kek.id:
                    writer.write(name, self.kek.seal(name, self.open(name, blob)))
                    resealed += 1
        return resealed, len(names)

    def stamp(self) -> Hashable:
        return self.inner.stamp()

    def acknowledge(self, instance: str, kids: Iterable[str], now: datetime) -> None:
        self.inner.acknowledge(instance, kids, now)

    def peers(self, since: datetime) -> dict[str, frozenset[str]]:
        return self.inner.peers(since)

    def forget(self, instance: str) -> None:
        self.inner.forget(instance)
