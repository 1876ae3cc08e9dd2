"""Client secrets of relying parties: generating them, hashing them for storage, checking them.

This module owns the stored form of an RP client secret
(``hmac-sha256$<salt>$<hex digest>``) and its constant-time check (SECURITY
B3). It must not store, log or return a secret in the clear, must not decide
which secrets a person may choose (the registry refuses short ones where they
enter), and needs no ``keys_dir``: nothing here touches the disk.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import secrets
from typing import Final

from bridge.keys.encoding import b64url, b64url_decode

__all__ = ["generate_client_secret", "hash_secret", "verify_secret"]

_HASH_SCHEME: Final = "hmac-sha256"


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
    return f"{_HASH_SCHEME}${b64url(salt)}${digest}"


def verify_secret(secret: str, stored: str) -> bool:
    """Whether ``secret`` matches ``stored`` (from :func:`hash_secret`), in constant time."""
    scheme, _, rest = stored.partition("$")
    salt_text, _, expected = rest.partition("$")
    if scheme != _HASH_SCHEME or not expected:
        return False
    try:
        salt = b64url_decode(salt_text)
    except (binascii.Error, ValueError):
        return False
    actual = hmac.new(salt, secret.encode("utf-8"), hashlib.sha256).hexdigest()
    return hmac.compare_digest(actual.encode("ascii"), expected.encode("ascii", "replace"))
