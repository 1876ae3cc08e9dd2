"""App registrations: one model for every relying party, from files and the database.

Registrations written in ``DIR/registrations/*.toml`` are read-only and marked
as coming from a file; registrations created through the CLI or admin live in
the database. Both are layered here, with a slug and a client_id unique across
both. Each registration's own keys are validated by its profile type; this
module validates the common keys, hashes RP client secrets and encrypts Zendesk
shared secrets before anything is stored. Stored registrations are read from
the database on every look-up, so an edit (a new Zendesk secret, say) takes
effect on the next request on every instance without a restart. A file's secret
whose ``${VAR}`` a command left unset (see ``load_settings(resolve_env=False)``)
stays unresolved here and fails, naming the variable, only if it is used.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, Self

from bridge.errors import BadRequest, InvalidRegistration, NotFound
from bridge.keys import SecretDecryptionError
from bridge.profiles import COMMON_KEYS, AccessRule, parse_access, properties_needed
from bridge.profiles import oidc as oidc_profile
from bridge.profiles import zendesk as zendesk_profile
from bridge.settings import (
    Problem,
    Problems,
    RegistrationSource,
    Unresolved,
    find_unresolved,
    is_valid_slug,
)
from bridge.storage.models import RegistrationRow

ProfileOptions = oidc_profile.OidcOptions | zendesk_profile.ZendeskOptions
PROFILE_TYPES = {oidc_profile.NAME: oidc_profile, zendesk_profile.NAME: zendesk_profile}


@dataclass(frozen=True, slots=True)
class Registration:
    slug: str
    name: str
    profile: str
    options: ProfileOptions
    access: AccessRule = field(default_factory=AccessRule)
    claims: Mapping[str, str] = field(default_factory=dict)
    enabled: bool = True
    source: Literal["file", "database"] = "database"
    file: str | None = None

    @property
    def read_only(self) -> bool:
        return self.source == "file"

    @property
    def client_id(self) -> str | None:
        return (
            self.options.client_id if isinstance(self.options, oidc_profile.OidcOptions) else None
        )

    @property
    def oidc(self) -> oidc_profile.OidcOptions:
        if not isinstance(self.options, oidc_profile.OidcOptions):
            raise TypeError(f"registration {self.slug} is not an OIDC registration")
        return self.options

    @property
    def zendesk(self) -> zendesk_profile.ZendeskOptions:
        if not isinstance(self.options, zendesk_profile.ZendeskOptions):
            raise TypeError(f"registration {self.slug} is not a Zendesk registration")
        return self.options

    @property
    def imis_properties(self) -> tuple[str, ...]:
        return properties_needed(self.access, self.claims)

    def to_data(self) -> dict[str, Any]:
        """Everything but secrets, as a user would write it in a file."""
        data: dict[str, Any] = {
            "slug": self.slug,
            "name": self.name,
            "profile": self.profile,
            "enabled": self.enabled,
            "source": self.source,
            **self.options.to_data(),
        }
        if isinstance(self.options, oidc_profile.OidcOptions):
            data["client_type"] = "public" if self.options.is_public else "confidential"
        else:
            data["shared_secret_set"] = bool(self.options.shared_secret)
        if self.file:
            data["file"] = self.file
        access = self.access.to_data()
        if access:
            data["access"] = access
        if self.claims:
            data["claims"] = dict(self.claims)
        return data


#: Longest registration name (the database column's length).
MAX_NAME_LENGTH = 200
#: Internal key carrying a stored client secret's hash back into validation; never
#: accepted from a file, the CLI or the admin (they give the secret itself).
_STORED_HASH = "client_secret_hash"


def parse_registration(
    slug: str,
    data: Mapping[str, Any],
    problems: Problems,
    *,
    hash_secret: Callable[[str], str],
    source: Literal["file", "database"] = "database",
    file: str | None = None,
    stored_hash: bool = False,
) -> Registration | None:
    """Validate one registration; returns None (with problems added) when it is unusable.

    ``stored_hash`` lets ``data`` carry ``client_secret_hash`` (a row being read back).
    """
    before = problems.count
    if not is_valid_slug(slug):
        problems.add(
            "slug",
            f"{slug!r} is not a valid slug "
            "(lowercase letters, digits, '-'; at most 63; not 'continue')",
        )
    profile_name = data.get("profile")
    module = PROFILE_TYPES.get(profile_name) if isinstance(profile_name, str) else None
    if module is None:
        problems.add("profile", f"must be one of {', '.join(PROFILE_TYPES)}, not {profile_name!r}")
        return None
    for key in data:
        known = key in COMMON_KEYS or key in module.KEYS
        if not known and not (stored_hash and key == _STORED_HASH):
            problems.add(key, f"unknown key for profile {profile_name!r}")
    name = data.get("name")
    if name is None or (isinstance(name, str) and not name.strip()):
        problems.add("name", "is required (shown to people on the sign-in page)")
        name = slug
    elif not isinstance(name, str):
        problems.add("name", f"must be a string, not {type(name).__name__}")
        name = slug
    elif len(name.strip()) > MAX_NAME_LENGTH:
        problems.add("name", f"must be at most {MAX_NAME_LENGTH} characters")
    enabled = data.get("enabled", True)
    if not isinstance(enabled, bool):
        problems.add("enabled", "must be true or false")
        enabled = True
    access = parse_access(data.get("access"), problems)
    options: ProfileOptions = module.parse_options(data, problems, hash_secret=hash_secret)
    claims = module.parse_claim_mapping(data.get("claims"), problems)
    if problems.count > before:
        return None
    return Registration(
        slug=slug,
        name=name.strip(),
        profile=profile_name,  # type: ignore[arg-type]
        options=options,
        access=access,
        claims=claims,
        enabled=enabled,
        source=source,
        file=file,
    )


def check_file_registrations(sources: Sequence[RegistrationSource], sink: list[Problem]) -> None:
    """Validate registration files only (for ``load_settings(check_registrations=...)``)."""
    load_file_registrations(sources, sink, hash_secret=_discard_secret)


def _discard_secret(secret: str) -> str:
    return "unused"


#: The keys a registration file may leave unresolved: only serving uses them.
_SECRET_KEYS = frozenset({"client_secret", "shared_secret"})
#: Stands in for an unresolved secret while the rest of the registration is checked.
_PLACEHOLDER_SECRET = "unresolved-" + "x" * 53
#: A client secret hash no secret verifies against (its scheme is not a hash scheme).
_UNRESOLVED_HASH = "unresolved$$"


class UnresolvedSecret(str):
    """A Zendesk shared secret whose ``${VAR}`` was left unset: signing or storing
    with it raises :class:`~bridge.settings.ConfigurationError` naming the variable."""

    unresolved: Unresolved

    def __new__(cls, unresolved: Unresolved) -> Self:
        text = super().__new__(cls, "(unresolved)")
        text.unresolved = unresolved
        return text

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        raise self.unresolved.error()


def _set_aside_unresolved(
    data: Mapping[str, Any], sink: list[Problem]
) -> tuple[dict[str, Any], Unresolved | None] | None:
    """``data`` with an unresolved secret replaced by a placeholder, and that secret's
    :class:`Unresolved`; None (problems in ``sink``) if another value is unresolved."""
    out = dict(data)
    secret: Unresolved | None = None
    usable = True
    for key, value in data.items():
        pending = find_unresolved(value)
        if pending is None:
            continue
        if key in _SECRET_KEYS and isinstance(value, Unresolved):
            secret = pending
            out[key] = _PLACEHOLDER_SECRET
        else:
            sink.extend(pending.problems)
            usable = False
    return (out, secret) if usable else None


def _with_unresolved_secret(reg: Registration, secret: Unresolved) -> Registration:
    options: ProfileOptions
    if isinstance(reg.options, oidc_profile.OidcOptions):
        options = dataclasses.replace(reg.options, client_secret_hash=_UNRESOLVED_HASH)
    else:
        options = dataclasses.replace(reg.options, shared_secret=UnresolvedSecret(secret))
    return dataclasses.replace(reg, options=options)


def load_file_registrations(
    sources: Sequence[RegistrationSource], sink: list[Problem], *, hash_secret: Callable[[str], str]
) -> list[Registration]:
    """Validate the registrations read from files; problems go to ``sink``."""
    found: list[Registration] = []
    client_ids: dict[str, str] = {}
    for src in sources:
        problems = Problems(src.file, sink)
        set_aside = _set_aside_unresolved(src.data, sink)
        if set_aside is None:
            continue
        data, secret = set_aside
        reg = parse_registration(
            src.slug, data, problems, hash_secret=hash_secret, source="file", file=src.file
        )
        if reg is None:
            continue
        if secret is not None:
            reg = _with_unresolved_secret(reg, secret)
        if reg.client_id is not None:
            if reg.client_id in client_ids:
                problems.add(
                    "client_id", f"{reg.client_id!r} is also used by {client_ids[reg.client_id]}"
                )
                continue
            client_ids[reg.client_id] = src.file
        found.append(reg)
    return found


class RegistrationStore(Protocol):
    """What the registry needs from storage (implemented by bridge.storage.repo.Store)."""

    def list_registrations(self) -> list[RegistrationRow]: ...
    def get_registration(self, slug: str) -> RegistrationRow | None: ...
    def get_registration_by_client_id(self, client_id: str) -> RegistrationRow | None: ...
    def insert_registration(self, row: RegistrationRow) -> None: ...
    def update_registration(self, row: RegistrationRow) -> None: ...
    def delete_registration(self, slug: str) -> bool: ...


class Registry:
    """File registrations layered over stored ones; the single place to find an RP."""

    def __init__(
        self,
        files: Sequence[Registration],
        store: Any,
        *,
        hash_secret: Callable[[str], str],
        encrypt: Callable[[str], str],
        decrypt: Callable[[str], str],
    ) -> None:
        self._files = {r.slug: r for r in files}
        self._file_clients = {r.client_id: r for r in files if r.client_id}
        self._store: RegistrationStore = store
        self._hash = hash_secret
        self._encrypt = encrypt
        self._decrypt = decrypt

    # --- reading ------------------------------------------------------------

    def in_files(self, *, slug: str = "", client_id: str = "") -> Registration | None:
        """A file registration, answered from memory (no database, so no thread hop)."""
        return self._files.get(slug) or self._file_clients.get(client_id)

    def get(self, slug: str) -> Registration | None:
        if slug in self._files:
            return self._files[slug]
        row = self._store.get_registration(slug)
        return self._from_row(row) if row else None

    def by_client_id(self, client_id: str) -> Registration | None:
        if client_id in self._file_clients:
            return self._file_clients[client_id]
        row = self._store.get_registration_by_client_id(client_id)
        return self._from_row(row) if row else None

    def all(self, *, unreadable: list[Problem] | None = None) -> list[Registration]:
        """Every registration by slug. A stored one that cannot be read raises
        :class:`InvalidRegistration`, or, given ``unreadable``, is left out and
        described there (so a listing still shows the rest)."""
        stored: list[Registration] = []
        for row in self._store.list_registrations():
            try:
                stored.append(self._from_row(row))
            except InvalidRegistration as exc:
                if unreadable is None:
                    raise
                unreadable.append(Problem(f"registration {row.slug}", "", exc.message))
        merged = {r.slug: r for r in stored} | self._files
        return sorted(merged.values(), key=lambda r: r.slug)

    def lists_web_origin(self, origin: str) -> bool:
        """Whether any enabled public OIDC client lists ``origin`` in ``web_origins``."""

        def lists(reg: Registration) -> bool:
            return reg.enabled and reg.profile == "oidc" and origin in reg.oidc.web_origins

        if any(lists(r) for r in self._files.values()):
            return True
        return any(lists(r) for r in self.all(unreadable=[]) if r.source == "database")

    def conflicts(self) -> list[Problem]:
        """Stored registrations that clash with a file's slug or client_id."""
        found = []
        for row in self._store.list_registrations():
            remedy = f"rename the file or run `bridge registrations remove {row.slug}`"
            if row.slug in self._files:
                found.append(
                    Problem(
                        self._files[row.slug].file or "",
                        "",
                        f"slug {row.slug!r} is also a stored registration: {remedy}",
                    )
                )
            elif row.client_id and row.client_id in self._file_clients:
                clash = self._file_clients[row.client_id]
                found.append(
                    Problem(
                        clash.file or "",
                        "client_id",
                        f"{row.client_id!r} is also used by stored registration "
                        f"{row.slug!r}: change one, or run "
                        f"`bridge registrations remove {row.slug}`",
                    )
                )
        return found

    def _from_row(self, row: RegistrationRow) -> Registration:
        data: dict[str, Any] = json.loads(row.options_json)
        data.update(name=row.name, profile=row.profile)
        if row.secret_hash:
            data["client_secret_hash"] = row.secret_hash
        if row.secret_encrypted:
            data["shared_secret"] = self._decrypt_stored(row)
        sink: list[Problem] = []
        reg = parse_registration(
            row.slug,
            data,
            Problems(f"registration {row.slug}", sink),
            hash_secret=self._hash,
            stored_hash=True,
        )
        if reg is None:  # validated on write; a hand-edited row is refused loudly
            raise InvalidRegistration([(p.key, p.reason) for p in sink])
        return reg

    def _decrypt_stored(self, row: RegistrationRow) -> str:
        assert row.secret_encrypted is not None
        try:
            return self._decrypt(row.secret_encrypted)
        except SecretDecryptionError as exc:
            # The keyring in keys_dir is not the one that encrypted it (a lost or
            # unshared keys folder): the secret must be pasted again.
            raise InvalidRegistration(
                [
                    (
                        "shared_secret",
                        f"cannot be decrypted ({exc}); paste it again with "
                        f"`bridge registrations rotate-secret {row.slug} --secret-stdin`",
                    )
                ]
            ) from exc

    # --- writing (stored registrations only) ----------------------------------

    def add(self, slug: str, data: Mapping[str, Any], *, actor: str) -> Registration:
        if slug in self._files:
            raise BadRequest(
                f"{slug!r} is defined in {self._files[slug].file}; files are read-only"
            )
        reg = self._validate(slug, data)
        self._check_client_id(reg)
        row = self._to_row(reg, existing=None, actor=actor)
        self._store.insert_registration(row)
        return reg

    def edit(self, slug: str, changes: Mapping[str, Any], *, actor: str) -> Registration:
        if slug in self._files:
            raise BadRequest(
                f"{slug!r} is defined in {self._files[slug].file}; files are read-only"
            )
        row = self._store.get_registration(slug)
        if row is None:
            raise NotFound(f"no stored registration {slug!r}")
        data: dict[str, Any] = json.loads(row.options_json)
        data.update(name=row.name, profile=row.profile)
        if "profile" in changes and changes["profile"] != row.profile:
            raise BadRequest("the profile of a registration cannot change; add a new one")
        if _STORED_HASH in changes:
            raise InvalidRegistration([(_STORED_HASH, "unknown key: give client_secret instead")])
        # Top-level keys are replaced (a table such as access as a whole); None removes.
        for key, value in changes.items():
            if value is None:
                data.pop(key, None)
            else:
                data[key] = value
        if row.secret_hash and "client_secret" not in changes:
            data[_STORED_HASH] = row.secret_hash
        if row.secret_encrypted and "shared_secret" not in changes:
            data["shared_secret"] = self._decrypt_stored(row)
        reg = self._validate(slug, data, stored_hash=True)
        self._check_client_id(reg)
        self._store.update_registration(self._to_row(reg, existing=row, actor=actor))
        return reg

    def remove(self, slug: str) -> bool:
        if slug in self._files:
            raise BadRequest(
                f"{slug!r} is defined in {self._files[slug].file}; files are read-only"
            )
        return self._store.delete_registration(slug)

    def _validate(
        self, slug: str, data: Mapping[str, Any], *, stored_hash: bool = False
    ) -> Registration:
        sink: list[Problem] = []
        reg = parse_registration(
            slug,
            data,
            Problems(f"registration {slug}", sink),
            hash_secret=self._hash,
            stored_hash=stored_hash,
        )
        if reg is None:
            raise InvalidRegistration([(p.key, p.reason) for p in sink])
        return reg

    def _check_client_id(self, reg: Registration) -> None:
        if reg.client_id is None:
            return
        if reg.client_id in self._file_clients:
            clash = self._file_clients[reg.client_id]
            raise BadRequest(f"client_id {reg.client_id!r} is already used by {clash.file}")
        other = self._store.get_registration_by_client_id(reg.client_id)
        if other is not None and other.slug != reg.slug:
            raise BadRequest(f"client_id {reg.client_id!r} is already used by {other.slug!r}")

    def _to_row(
        self,
        reg: Registration,
        *,
        existing: RegistrationRow | None,
        actor: str,
    ) -> RegistrationRow:
        now = int(time.time())
        options = reg.options.to_data()
        access = reg.access.to_data()
        if access:
            options["access"] = access
        if reg.claims:
            options["claims"] = dict(reg.claims)
        options["enabled"] = reg.enabled
        secret_hash = None
        secret_encrypted = None
        if isinstance(reg.options, oidc_profile.OidcOptions):
            secret_hash = reg.options.client_secret_hash
        else:
            secret_encrypted = self._encrypt(reg.options.shared_secret)
        return RegistrationRow(
            slug=reg.slug,
            name=reg.name,
            profile=reg.profile,
            client_id=reg.client_id,
            options_json=json.dumps(options, sort_keys=True),
            secret_hash=secret_hash,
            secret_encrypted=secret_encrypted,
            created_at=existing.created_at if existing else now,
            updated_at=now,
            updated_by=actor,
        )
