"""What a registration may say: the common keys, the access rule, the claim mapping, and
the typed options schema every profile declares.

A profile describes its own keys as an :class:`OptionsSchema`: one
:class:`OptionField` per key (name, label, help, whether it is required, whether
it is a secret and how that secret is kept, a per-value check) and a ``parse``
function that turns a registration's data into the profile's options. The TOML
loader, the CLI and the admin forms read the fields; the registry
(:mod:`bridge.registry`) stores a secret marked ``"hash"`` as a hash and one marked
``"encrypt"`` encrypted, without knowing which profile it is handling. This module
knows no profile, no HTTP and no storage.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from bridge.identity import MAPPABLE_FIELDS, Identity
from bridge.settings import Problems

#: Keys every registration may have, whatever its profile.
COMMON_KEYS = frozenset({"name", "profile", "access", "claims", "enabled"})

#: How a secret option is kept: ``"hash"`` (only a hash is stored, e.g. an OAuth
#: client secret the bridge verifies) or ``"encrypt"`` (encrypted with the keyring,
#: e.g. a shared secret the bridge signs with).
SecretKind = Literal["hash", "encrypt"]
#: What an option holds, for forms and help: one line of text, a list of texts, a flag.
FieldKind = Literal["text", "list", "bool", "secret"]


@dataclass(frozen=True, slots=True)
class OptionField:
    """One key of a profile's registration settings."""

    name: str
    label: str
    help: str = ""
    required: bool = False
    kind: FieldKind = "text"
    #: None for an ordinary value; otherwise how the secret is kept (see :data:`SecretKind`).
    secret: SecretKind | None = None
    #: The options attribute that holds what is stored of a secret: its hash
    #: (``"hash"``) or the secret itself (``"encrypt"``). Defaults to ``name``.
    attribute: str | None = None
    #: A check of one value (or of each entry of a list): None when valid, else
    #: the reason, written to follow the value (``"'x' must use https"``).
    validate: Callable[[str], str | None] | None = None

    @property
    def stored_as(self) -> str:
        return self.attribute or self.name


class Options(Protocol):
    """A profile's parsed options (a frozen dataclass in every built-in profile)."""

    @property
    def lookup_key(self) -> str | None:
        """A key unique across registrations that finds this one (OIDC: the client_id)."""
        ...

    def to_data(self) -> dict[str, Any]:
        """The settings as stored and shown, without any secret."""
        ...

    def summary(self) -> dict[str, Any]:
        """What a listing shows beyond :meth:`to_data` (never a secret itself)."""
        ...


#: ``parse(data, problems, hash_secret)``: the options of a registration, problems
#: added to ``problems`` (the result is discarded when any were added).
Parser = Callable[[Mapping[str, Any], Problems, Callable[[str], str]], Options]


@dataclass(frozen=True, slots=True)
class OptionsSchema:
    """A profile's keys (in the order forms show them) and the parser that validates them."""

    fields: tuple[OptionField, ...]
    parse: Parser
    #: What a filled-in claim mapping of this profile looks like (``[claims]`` lines of a
    #: registration file), for the admin form; empty for the form's general example.
    claims_example: str = ""

    def __post_init__(self) -> None:
        kinds = [f.secret for f in self.fields if f.secret is not None]
        if len(kinds) != len(set(kinds)):
            raise ValueError("a profile has at most one hashed and one encrypted secret")

    @property
    def keys(self) -> frozenset[str]:
        return frozenset(f.name for f in self.fields)

    def field(self, name: str) -> OptionField | None:
        return next((f for f in self.fields if f.name == name), None)

    def secret(self, kind: SecretKind | None = None) -> OptionField | None:
        """The secret field (of ``kind``, if given), or None."""
        return next(
            (f for f in self.fields if f.secret and (kind is None or f.secret == kind)), None
        )

    @property
    def secret_names(self) -> frozenset[str]:
        return frozenset(f.name for f in self.fields if f.secret)


class ProfileSchema(Protocol):
    """What the registry needs of a profile (every :class:`~bridge.profiles.Profile` is one)."""

    @property
    def name(self) -> str: ...

    @property
    def schema(self) -> OptionsSchema: ...

    @property
    def reserved_slugs(self) -> frozenset[str]:
        """Slugs a registration may not take (they are fixed paths of the profile)."""
        ...

    def claim_target(self, target: str) -> str | None:
        """None when a ``[claims]`` mapping may produce ``target``, else why not."""
        ...


# --- the access rule ------------------------------------------------------------------

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


# --- the claim mapping ------------------------------------------------------------------


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


# --- helpers for parsers ---------------------------------------------------------------


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


def check_each(
    values: tuple[str, ...], spec: OptionField, problems: Problems, key: str | None = None
) -> None:
    """Run ``spec.validate`` on each of ``values``; a refusal is ``key[i]: 'value' reason``."""
    if spec.validate is None:
        return
    for i, value in enumerate(values):
        reason = spec.validate(value)
        if reason:
            problems.add(f"{key or spec.name}[{i}]", f"{value!r} {reason}")


__all__ = [
    "COMMON_KEYS",
    "AccessRule",
    "FieldKind",
    "OptionField",
    "Options",
    "OptionsSchema",
    "ProfileSchema",
    "SecretKind",
    "check_each",
    "optional_str_list",
    "parse_access",
    "parse_claims",
    "properties_needed",
    "require_str",
]
