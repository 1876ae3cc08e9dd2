"""The one person every profile receives after sign-in.

An :class:`Identity` is source-neutral: the iMIS connector builds it, profiles
(OIDC claims, Zendesk JWT) read it, sessions and codes store it as JSON. It
holds no credentials and nothing that could sign anyone in.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Identity:
    """One person as known to iMIS, already normalised.

    ``imis_id`` is the stable subject; ``email`` is the primary email or None;
    ``phone`` is E.164 or None; ``properties`` carries extra iMIS contact fields
    that a registration's claim mapping asked for (name -> string value).
    """

    imis_id: str
    username: str
    full_name: str
    first_name: str | None = None
    last_name: str | None = None
    email: str | None = None
    phone: str | None = None
    organization_name: str | None = None
    organization_id: str | None = None
    status: str | None = None
    status_id: str | None = None
    member_type: str | None = None
    properties: Mapping[str, str] = field(default_factory=dict)

    @property
    def display_name(self) -> str:
        """A name that is never empty: full name, first + last, email local part, id."""
        if self.full_name.strip():
            return self.full_name.strip()
        joined = " ".join(p for p in (self.first_name, self.last_name) if p and p.strip())
        if joined:
            return joined
        if self.email:
            return self.email.split("@", 1)[0]
        return self.username or self.imis_id

    def field(self, name: str) -> str | None:
        """Value of a mappable field by name: an attribute, else an iMIS property."""
        if name in _FIELD_NAMES and name != "properties":
            value = getattr(self, name)
            return None if value is None else str(value)
        return self.properties.get(name)

    def to_json(self) -> str:
        # Every field is a string or None but ``properties`` (strings by name): no deep
        # copy needed (dataclasses.asdict's cost 50 us a code on the hot path).
        data: dict[str, Any] = {name: getattr(self, name) for name in _FIELD_NAMES}
        data["properties"] = dict(self.properties)
        return json.dumps(data, separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Identity:
        data: dict[str, Any] = json.loads(text)
        known = {k: v for k, v in data.items() if k in _FIELD_NAMES}
        known["properties"] = dict(known.get("properties") or {})
        return cls(**known)


_FIELD_NAMES = frozenset(Identity.__dataclass_fields__)

#: Fields a claim mapping may name besides iMIS contact properties.
MAPPABLE_FIELDS = tuple(sorted(_FIELD_NAMES - {"properties"}))
