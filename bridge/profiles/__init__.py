"""Profile types: what each kind of relying party receives, and how its settings read.

A profile type validates a registration's own keys (``parse``) and, once a person
has signed in, turns the same :class:`~bridge.identity.Identity` into that
kind of RP's response. This module holds what every profile shares: the
registry of types, the per-registration access rule and the claim-mapping
syntax. It knows nothing of HTTP or storage.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from bridge.identity import MAPPABLE_FIELDS, Identity
from bridge.settings import Problems

#: Keys every registration may have, whatever its profile.
COMMON_KEYS = frozenset({"name", "profile", "access", "claims", "enabled"})

_ACCESS_KEYS = ("member_types", "statuses", "organizations", "imis_ids")


@dataclass(frozen=True, slots=True)
class AccessRule:
    """Who may sign in to one registration.

    Empty rule: every person who can sign in to iMIS. Otherwise a person listed
    in ``imis_ids`` is always allowed, and anyone else must match every other
    list that is given (member type, status id or name, organization id or name).
    """

    member_types: frozenset[str] = frozenset()
    statuses: frozenset[str] = frozenset()
    organizations: frozenset[str] = frozenset()
    imis_ids: frozenset[str] = frozenset()
    message: str | None = None

    @property
    def is_open(self) -> bool:
        return not (self.member_types or self.statuses or self.organizations or self.imis_ids)

    @property
    def needs_member_type(self) -> bool:
        return bool(self.member_types)

    def refusal(self, identity: Identity) -> str | None:
        """None when ``identity`` may sign in, else the reason in plain words."""
        if self.is_open or identity.imis_id in self.imis_ids:
            return None
        conditions = []
        if self.member_types:
            conditions.append((identity.member_type or "").upper() in self.member_types)
        if self.statuses:
            conditions.append(
                bool(
                    {(identity.status or "").lower(), (identity.status_id or "").lower()}
                    & self.statuses
                )
            )
        if self.organizations:
            conditions.append(
                bool(
                    {
                        (identity.organization_id or "").lower(),
                        (identity.organization_name or "").lower(),
                    }
                    & self.organizations
                )
            )
        if conditions and all(conditions):
            return None
        return self.message or (
            "Your iMIS account is not among those allowed to use this application. "
            "If you think it should be, contact the association."
        )

    def to_data(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            k: sorted(getattr(self, k)) for k in _ACCESS_KEYS if getattr(self, k)
        }
        if self.message:
            data["message"] = self.message
        return data


_NORMALISE: dict[str, Callable[[str], str]] = {
    "member_types": str.upper,
    "statuses": str.lower,
    # An id ("18000") or a name, compared without regard to case, like statuses.
    "organizations": str.lower,
    "imis_ids": str,
}


def _text_item(item: Any) -> str | None:
    """A list entry as text: TOML numbers are accepted (``imis_ids = [23210]``)."""
    if isinstance(item, int) and not isinstance(item, bool):
        return str(item)
    if isinstance(item, str) and item.strip():
        return item.strip()
    return None


def parse_access(value: Any, problems: Problems) -> AccessRule:
    if value is None:
        return AccessRule()
    if not isinstance(value, Mapping):
        problems.add("access", "must be a table")
        return AccessRule()
    lists: dict[str, frozenset[str]] = {}
    for key, item in value.items():
        if key == "message":
            continue
        if key not in _ACCESS_KEYS:
            problems.add(f"access.{key}", f"unknown key (known: {', '.join(_ACCESS_KEYS)})")
            continue
        texts = [_text_item(v) for v in item] if isinstance(item, list) else [None]
        if not texts or None in texts:
            problems.add(f"access.{key}", "must be a non-empty list of non-empty strings")
            continue
        norm = _NORMALISE[key]
        lists[key] = frozenset(norm(t) for t in texts if t is not None)
    message = value.get("message")
    if message is not None and not (isinstance(message, str) and message.strip()):
        problems.add("access.message", "must be a non-empty string")
        message = None
    return AccessRule(message=message, **lists)


def parse_claims(
    value: Any, problems: Problems, *, allowed: Callable[[str], str | None]
) -> dict[str, str]:
    """Read ``[claims]`` (target claim -> iMIS field). ``allowed`` returns a reason to refuse."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        problems.add("claims", "must be a table of claim = iMIS field")
        return {}
    mapping: dict[str, str] = {}
    for target, source in _flatten(value):
        key = f"claims.{target}"
        refusal = allowed(target)
        if refusal:
            problems.add(key, refusal)
            continue
        if not isinstance(source, str) or not source.strip():
            problems.add(key, "must name an iMIS field (a string)")
            continue
        mapping[target] = source.strip()
    return mapping


def _flatten(value: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for key, item in value.items():
        name = f"{prefix}{key}"
        if isinstance(item, Mapping):
            out.extend(_flatten(item, name + "."))
        else:
            out.append((name, item))
    return out


def properties_needed(access: AccessRule, claims: Mapping[str, str]) -> tuple[str, ...]:
    """Extra iMIS contact properties (CsContact) a registration needs read at sign-in."""
    needed = {src for src in claims.values() if src not in MAPPABLE_FIELDS}
    if access.needs_member_type or "member_type" in claims.values():
        needed.add("MemberType")
    return tuple(sorted(needed))


def require_str(data: Mapping[str, Any], key: str, problems: Problems) -> str:
    value = data.get(key)
    if value is None or value == "":
        problems.add(key, "is required")
        return ""
    if not isinstance(value, str):
        problems.add(key, f"must be a string, not {type(value).__name__}")
        return ""
    return value


def optional_str_list(data: Mapping[str, Any], key: str, problems: Problems) -> tuple[str, ...]:
    value = data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        problems.add(key, "must be a list of strings")
        return ()
    return tuple(value)
