"""The keyring (``keyring.json`` in the key vault): Fernet keys that encrypt secrets stored at rest.

This module owns the keyring file's format, adding a key to it, encrypting and
decrypting stored secrets (``fernet:<key id>:<Fernet token>``: the newest key
encrypts, every key decrypts), and deriving per-purpose MAC keys from the
keyring (:meth:`Keyring.mac_keys`, e.g. for device cookies) so that no other
secret needs configuring. It must not decide which values are secret or where
they are stored (the registry does), must never log or return a keyring key
except as a derived MAC key to its caller, and must not take the vault's lock
itself: :class:`bridge.keys.KeyStore` holds it around every change and re-reads
its snapshot after it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from cryptography.fernet import Fernet
from cryptography.fernet import InvalidToken as FernetInvalidToken

from bridge.keys.encoding import aware, iso
from bridge.keys.files import KeyStoreError, dump_entries, parse_entries
from bridge.keys.vault import VaultWriter

__all__ = [
    "KEYRING",
    "Keyring",
    "KeyringEntry",
    "SecretDecryptionError",
    "add_keyring_key",
    "parse_keyring",
]

KEYRING: Final = "keyring.json"
_KEYRING_ID = re.compile(r"^[0-9a-f]{8,64}$")
_SECRET_SCHEME: Final = "fernet"


class SecretDecryptionError(KeyStoreError):
    """A stored secret cannot be decrypted: it was altered, or its key is not in the keyring."""


@dataclass(frozen=True, slots=True)
class KeyringEntry:
    id: str
    key: str
    created_at: datetime


def parse_keyring(raw: bytes | None, where: str) -> list[KeyringEntry] | None:
    """The keyring's entries, oldest first, or None if there is no keyring blob."""
    raw_keys = parse_entries(raw, where)
    if raw_keys is None:
        return None
    entries: list[KeyringEntry] = []
    for i, item in enumerate(raw_keys):
        at = f"{where}: keys[{i}]"
        if not isinstance(item, dict):
            raise KeyStoreError(f"{at}: must be an object")
        key_id, key, created = item.get("id"), item.get("key"), item.get("created_at")
        if not isinstance(key_id, str) or not _KEYRING_ID.match(key_id):
            raise KeyStoreError(f"{at}: id must be lowercase hex")
        if not isinstance(key, str) or not isinstance(created, str):
            raise KeyStoreError(f"{at}: key and created_at must be strings")
        try:
            Fernet(key)
            created_at = aware(datetime.fromisoformat(created))
        except ValueError as exc:
            raise KeyStoreError(f"{at}: not a Fernet key with an ISO 8601 UTC time") from exc
        entries.append(KeyringEntry(key_id, key, created_at))
    return entries


def add_keyring_key(vault: VaultWriter, where: str, now: datetime) -> KeyringEntry:
    """Append a new key, which encrypts from now on; the caller holds the vault's lock."""
    entries = parse_keyring(vault.read(KEYRING), f"{where}/{KEYRING}") or []
    used = {e.id for e in entries}
    key_id = secrets.token_hex(4)
    while key_id in used:
        key_id = secrets.token_hex(4)
    entry = KeyringEntry(key_id, Fernet.generate_key().decode("ascii"), now)
    vault.write(
        KEYRING,
        dump_entries(
            [{"id": e.id, "key": e.key, "created_at": iso(e.created_at)} for e in [*entries, entry]]
        ),
    )
    return entry


@dataclass(frozen=True, slots=True)
class Keyring:
    """One immutable snapshot of the keyring kept at ``where``; the last entry encrypts."""

    where: str
    entries: tuple[KeyringEntry, ...]
    fernets: dict[str, Fernet]

    @classmethod
    def of(cls, where: str, entries: Sequence[KeyringEntry]) -> Keyring:
        return cls(where, tuple(entries), {e.id: Fernet(e.key) for e in entries})

    def ids(self) -> list[str]:
        """Keyring key ids, oldest first; the last one encrypts."""
        return [e.id for e in self.entries]

    def encrypt(self, plain: str) -> str:
        """Encrypt with the newest keyring key: ``fernet:<key id>:<Fernet token>``."""
        newest = self.entries[-1]
        token = self.fernets[newest.id].encrypt(plain.encode("utf-8"))
        return f"{_SECRET_SCHEME}:{newest.id}:{token.decode('ascii')}"

    def decrypt(self, token: str) -> str:
        """Decrypt with whichever keyring key encrypted it; :class:`SecretDecryptionError` else."""
        scheme, _, rest = token.partition(":")
        key_id, _, body = rest.partition(":")
        if scheme != _SECRET_SCHEME or not body:
            raise SecretDecryptionError("not an encrypted secret written by this bridge")
        fernet = self.fernets.get(key_id)
        if fernet is None and not _KEYRING_ID.match(key_id):
            raise SecretDecryptionError("not an encrypted secret written by this bridge")
        if fernet is None:
            raise SecretDecryptionError(
                f"encrypted with keyring key {key_id!r}, which is not in {self.where}"
            )
        try:
            return fernet.decrypt(body.encode("ascii")).decode("utf-8")
        except (FernetInvalidToken, UnicodeError) as exc:
            raise SecretDecryptionError("the encrypted secret was altered or is corrupt") from exc

    def needs_reencrypt(self, token: str) -> bool:
        """Whether ``token`` was encrypted with a key older than the newest one."""
        return not token.startswith(f"{_SECRET_SCHEME}:{self.entries[-1].id}:")

    def mac_keys(self, purpose: str) -> list[tuple[str, bytes]]:
        """``(keyring id, 32-byte key)`` for MACs of one ``purpose``, newest first.

        Each is HMAC-SHA256(keyring key, purpose): a key of its own per use,
        so a MAC never doubles as anything the keyring encrypts, and no new
        secret needs configuring. The newest signs; all of them verify, so
        adding a keyring key does not void what was signed before.
        """
        label = f"imis-bridge mac key: {purpose}".encode()
        return [
            (e.id, hmac.new(e.key.encode("ascii"), label, hashlib.sha256).digest())
            for e in reversed(self.entries)
        ]
