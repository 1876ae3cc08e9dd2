"""The bridge's keys: signing keys and JWKS, the keyring for secrets at rest, where they are
kept (``keys_dir``, or the database sealed with a key-encryption key), and the hashing of
client secrets.

The package is split by job; this module only re-exports the names the rest of
the bridge imports, so callers write ``from bridge.keys import KeyStore``:

- :mod:`.signing`: signing keys, JWKS, rotation, sign/verify JWT, and
  :class:`KeyStore`, the object callers hold;
- :mod:`.keyring`: the Fernet keyring that encrypts stored secrets, and the
  MAC keys derived from it;
- :mod:`.hashing`: generating, hashing and checking RP client secrets;
- :mod:`.vault`: the protocol of where key material is kept, and the sealing of
  it with a key-encryption key (:class:`Kek`, :class:`SealedVault`);
- :mod:`.files` and :mod:`.encoding`: the folder vault and its file rules
  (0700/0600, atomic writes, ``flock``) and text forms (base64url, UTC times).

Nothing in the package prints or reads settings (the ``bridge keys`` commands
are in :mod:`bridge.cli`), and nothing touches the disk at import time.
"""

from bridge.keys.encoding import human_time
from bridge.keys.files import DirectoryVault, KeyStoreError
from bridge.keys.hashing import generate_client_secret, hash_secret, verify_secret
from bridge.keys.keyring import KEYRING, SecretDecryptionError
from bridge.keys.signing import (
    DEFAULT_PUBLISH_LEAD_SECONDS,
    KEYS_POLL_SECONDS,
    MANIFEST,
    PEER_SILENCE_SECONDS,
    ROTATION_MARGIN_SECONDS,
    SUPPORTED_ALGS,
    InvalidToken,
    KeyInfo,
    KeyStore,
    RotationResult,
    check_alg,
    jwk_thumbprint,
    retire_after_seconds,
    vault_of,
)
from bridge.keys.vault import Kek, SealedVault, Vault

__all__ = [
    "DEFAULT_PUBLISH_LEAD_SECONDS",
    "KEYRING",
    "KEYS_POLL_SECONDS",
    "MANIFEST",
    "PEER_SILENCE_SECONDS",
    "ROTATION_MARGIN_SECONDS",
    "SUPPORTED_ALGS",
    "DirectoryVault",
    "InvalidToken",
    "Kek",
    "KeyInfo",
    "KeyStore",
    "KeyStoreError",
    "RotationResult",
    "SealedVault",
    "SecretDecryptionError",
    "Vault",
    "check_alg",
    "generate_client_secret",
    "hash_secret",
    "human_time",
    "jwk_thumbprint",
    "retire_after_seconds",
    "vault_of",
    "verify_secret",
]
