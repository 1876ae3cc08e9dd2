"""The ``zendesk`` profile: settings of a Zendesk JWT remote-login registration.

Validates the Zendesk keys (subdomain, shared secret, brand hosts, claim
mapping). The JWT, ``return_to`` checks and the auto-post form build on these
options. It never lets a mapping produce ``role`` or ``custom_role_id``: signing
in must not grant Zendesk privileges.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from bridge.profiles import optional_str_list, parse_claims, require_str
from bridge.settings import Problems

NAME = "zendesk"
KEYS = frozenset({"subdomain", "shared_secret", "brand_hosts", "refuse_shared_email"})
FORBIDDEN_CLAIMS = frozenset({"role", "custom_role_id"})
SIMPLE_TARGETS = frozenset(
    {
        "organization",
        "organization_id",
        "organizations",
        "tags",
        "locale",
        "locale_id",
        "remote_photo_url",
    }
)
MIN_SECRET_LENGTH = 16
_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_FIELD_KEY = re.compile(r"^[A-Za-z0-9_]{1,64}$")


@dataclass(frozen=True, slots=True)
class ZendeskOptions:
    subdomain: str
    brand_hosts: tuple[str, ...] = ()
    refuse_shared_email: bool = True
    claims: Mapping[str, str] = field(default_factory=dict)
    shared_secret: str = field(default="", repr=False)

    @property
    def host(self) -> str:
        return f"{self.subdomain}.zendesk.com"

    def to_data(self) -> dict[str, Any]:
        """Settings without the secret (what the database and the admin see)."""
        return {
            "subdomain": self.subdomain,
            "brand_hosts": list(self.brand_hosts),
            "refuse_shared_email": self.refuse_shared_email,
        }


def normalise_subdomain(raw: str) -> tuple[str | None, str | None]:
    """``(subdomain, None)`` or ``(None, reason)`` for ``contoso``/``contoso.zendesk.com``/URL."""
    text = raw.strip().lower()
    if "://" in text:
        try:
            text = urlsplit(text).hostname or ""
        except ValueError:
            return None, "is not a valid Zendesk subdomain"
    text = text.strip("/")
    if text.endswith(".zendesk.com"):
        text = text[: -len(".zendesk.com")]
    if "." in text:
        return None, (
            f"{raw!r} looks like a custom domain, not a Zendesk subdomain: give the "
            "subdomain (e.g. 'contoso' for contoso.zendesk.com) and put the custom "
            "domain in brand_hosts"
        )
    if not _LABEL.match(text):
        return None, f"{raw!r} is not a valid Zendesk subdomain (letters, digits and '-')"
    return text, None


def _normalise_host(raw: str) -> str | None:
    host = raw.strip().lower().rstrip(".")
    labels = host.split(".")
    if len(labels) < 2 or not all(_LABEL.match(label) for label in labels):
        return None
    return host


def _claim_target(target: str) -> str | None:
    if target in FORBIDDEN_CLAIMS or target.split(".", 1)[0] in FORBIDDEN_CLAIMS:
        return f"{target!r} can never be mapped: signing in must not grant Zendesk privileges"
    if target in SIMPLE_TARGETS:
        return None
    if target.startswith("user_fields."):
        key = target[len("user_fields.") :]
        return None if _FIELD_KEY.match(key) else "a user field key is letters, digits and '_'"
    return (
        f"{target!r} is not a Zendesk attribute the bridge can send "
        f"(use {', '.join(sorted(SIMPLE_TARGETS))} or user_fields.<key>)"
    )


def parse_claim_mapping(value: Any, problems: Problems) -> dict[str, str]:
    return parse_claims(value, problems, allowed=_claim_target)


def parse_options(data: Mapping[str, Any], problems: Problems, **_: Any) -> ZendeskOptions:
    """Validate the Zendesk keys of a registration."""
    subdomain = ""
    raw_subdomain = require_str(data, "subdomain", problems)
    if raw_subdomain:
        normal, reason = normalise_subdomain(raw_subdomain)
        if reason:
            problems.add("subdomain", reason)
        subdomain = normal or ""
    secret = data.get("shared_secret", "")
    if not isinstance(secret, str) or not secret:
        problems.add("shared_secret", "is required (Zendesk Admin Center → Single sign-on → JWT)")
        secret = ""
    elif len(secret) < MIN_SECRET_LENGTH:
        problems.add(
            "shared_secret",
            f"is too short to be a Zendesk shared secret (at least {MIN_SECRET_LENGTH} characters)",
        )
    hosts = []
    for i, raw in enumerate(optional_str_list(data, "brand_hosts", problems)):
        host = _normalise_host(raw)
        if host is None:
            problems.add(f"brand_hosts[{i}]", f"{raw!r} is not a host name (no scheme or path)")
        else:
            hosts.append(host)
    refuse = data.get("refuse_shared_email", True)
    if not isinstance(refuse, bool):
        problems.add("refuse_shared_email", "must be true or false")
        refuse = True
    return ZendeskOptions(
        subdomain=subdomain,
        brand_hosts=tuple(dict.fromkeys(hosts)),
        refuse_shared_email=refuse,
        shared_secret=secret,
    )
