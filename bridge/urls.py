"""Facts about URLs that more than one check needs: the origin a URL belongs to.

Pure functions over text; nothing here fetches or trusts anything.
"""

from __future__ import annotations

from urllib.parse import urlsplit

#: ``(scheme, host, port)`` with the default port filled in: two URLs are on the
#: same origin exactly when these are equal (RFC 6454).
Origin = tuple[str, str, int]


def origin_of(url: str) -> Origin | None:
    """The origin of an http(s) URL, or None for anything else (or unparsable)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname or parts.scheme not in {"http", "https"}:
        return None
    return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80)
