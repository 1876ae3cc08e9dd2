"""Text forms shared by the key modules: unpadded base64url, and times in UTC.

This module owns how bytes and times are written as text in ``keys_dir``
files, public JWKs, stored client-secret hashes and what the key commands show
an operator. It is pure: it must not read or write files, hold keys, or know
any file format beyond these encodings.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime

__all__ = ["aware", "b64url", "b64url_decode", "human_time", "iso"]


def b64url(data: bytes) -> str:
    """Base64url without ``=`` padding (RFC 7515 §2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """The bytes of unpadded base64url ``text``; ``binascii.Error`` or ``ValueError`` if bad."""
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def aware(moment: datetime) -> datetime:
    """``moment`` in UTC; ``ValueError`` for a naive time, whose zone would be a guess."""
    if moment.tzinfo is None:
        raise ValueError("times must be timezone-aware (use datetime.now(UTC))")
    return moment.astimezone(UTC)


def iso(moment: datetime | None) -> str | None:
    """ISO 8601 in UTC with a ``Z``, as the key files and ``--json`` output store times."""
    return None if moment is None else moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def human_time(moment: datetime | None) -> str:
    """A time for an operator to read (``2025-01-31 12:00:00Z``), or ``-`` for none."""
    return "-" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
