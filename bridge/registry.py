"""App registrations: one model for every relying party, from files and the database.

Registrations written in ``DIR/registrations/*.toml`` are read-only and marked
as coming from a file; registrations created through the CLI or admin live in
the database. Both are layered here, with a slug and a lookup key (an OIDC
client_id) unique across both. Each registration's own keys are validated by its
profile's options schema (:mod:`bridge.schema`); this module validates the
common keys and, whatever the profile, keeps a secret the schema marks ``"hash"``
as a hash and one marked ``"encrypt"`` encrypted before anything is stored. It
knows no profile by name: the profiles it can read are given to it. Stored
registrations looked up by slug or client_id are kept in memory, parsed and with
their secrets decrypted, as is a "no such registration" (at most
``CACHE_SIZE`` entries: a :class:`~bridge.cache.GenerationCache`); every write of
a registration counts a generation in the database, which each process reads at
most once per ``registry_cache_seconds``, so an edit (a new shared secret, say)
takes effect without a restart on every instance within that time, and at once
in the process that made it. Listings (:meth:`Registry.all`) always read the
database. A file's secret whose ``${VAR}`` a command left unset (see
``load_settings(resolve_env=False)``) stays unresolved here and fails, naming the
variable, only if it is used.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, Self

from bridge.cache import GenerationCache, Missing
from bridge.errors import BadRequest, InvalidRegistration, NotFound
from bridge.keys import SecretDecryptionError
from bridge.schema import (
    COMMON_KEYS,
    AccessRule,
    OptionField,
    Options,
    ProfileSchema,
    parse_access,
    parse_claims,
    properties_needed,
)
from bridge.settings import (
    Problem,
    Problems,
    RegistrationSource,
    Unresolved,
    find_unresolved,
    is_valid_slug,
)
from bridge.storage.base import Conflict
from bridge.storage.models import RegistrationRow

#: The profiles a registry can read, by name (a :class:`~bridge.profiles.ProfileCatalog`).
Profiles = Mapping[str, ProfileSchema]


@dataclass(frozen=True, slots=True)
class Registration:
    slug: str
    name: str
    profile: str
    options: Options
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
        """The registration's unique lookup key (an OIDC client_id), if its profile has one."""
        return self.options.lookup_key

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
            **self.options.summary(),
        }
        if self.file:
            data["file"] = self.file
        access = self.access.to_data()
        if access:
            data["access"] = access
        if self.claims:
            data["claims"] = dict(self.claims)
        return data


def _holds_nul(value: Any) -> bool:
    """Whether ``value`` (a string, or lists and tables of them, keys included) holds NUL."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, Mapping):
        return any(_holds_nul(k) or _holds_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_holds_nul(v) for v in value)
    return False


#: Longest registration name (the database column's length).
MAX_NAME_LENGTH = 200


def parse_registration(
    slug: str,
    data: Mapping[str, Any],
    problems: Problems,
    *,
    profiles: Profiles,
    hash_secret: Callable[[str], str],
    source: Literal["file", "database"] = "database",
    file: str | None = None,
    stored_hash: bool = False,
) -> Registration | None:
    """Validate one registration; returns None (with problems added) when it is unusable.

    ``stored_hash`` lets ``data`` carry the stored hash of a ``"hash"`` secret
    under the options attribute that holds it (a row being read back).
    """
    before = problems.count
    reserved = reserved_slugs(profiles)
    if not is_valid_slug(slug) or slug in reserved:
        problems.add(
            "slug",
            f"{slug!r} is not a valid slug "
            f"(lowercase letters, digits, '-'; at most 63; not {_either(reserved)})",
        )
    profile_name = data.get("profile")
    profile = profiles.get(profile_name) if isinstance(profile_name, str) else None
    if profile is None:
        problems.add("profile", f"must be one of {', '.join(profiles)}, not {profile_name!r}")
        return None
    schema = profile.schema
    stored_keys = {f.stored_as for f in schema.fields if f.secret == "hash"}
    for key in data:
        known = key in COMMON_KEYS or key in schema.keys
        if not known and not (stored_hash and key in stored_keys):
            problems.add(key, f"unknown key for profile {profile_name!r}")
        if _holds_nul(key) or _holds_nul(data[key]):
            # PostgreSQL refuses NUL in text; no setting needs one.
            problems.add(key.replace("\x00", ""), "must not contain the NUL character")
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
    options = schema.parse(data, problems, hash_secret)
    claims = parse_claims(data.get("claims"), problems, allowed=profile.claim_target)
    if problems.count > before:
        return None
    return Registration(
        slug=slug,
        name=name.strip(),
        profile=profile.name,
        options=options,
        access=access,
        claims=claims,
        enabled=enabled,
        source=source,
        file=file,
    )


def reserved_slugs(profiles: Profiles) -> frozenset[str]:
    """Slugs no registration may take: fixed paths of the profiles (``/{profile}/continue``)."""
    return frozenset(s for p in profiles.values() for s in p.reserved_slugs)


def _either(words: frozenset[str]) -> str:
    return " or ".join(repr(w) for w in sorted(words)) or "reserved"


def check_file_registrations(
    sources: Sequence[RegistrationSource], sink: list[Problem], *, profiles: Profiles
) -> None:
    """Validate registration files only (for ``load_settings(check_registrations=...)``)."""
    load_file_registrations(sources, sink, profiles=profiles, hash_secret=_discard_secret)


def _discard_secret(secret: str) -> str:
    return "unused"


#: Stands in for an unresolved secret while the rest of the registration is checked.
_PLACEHOLDER_SECRET = "unresolved-" + "x" * 53
#: A client secret hash no secret verifies against (its scheme is not a hash scheme).
_UNRESOLVED_HASH = "unresolved$$"


class UnresolvedSecret(str):
    """An ``"encrypt"`` secret (a shared secret the bridge signs with) whose ``${VAR}``
    was left unset: signing or storing with it raises
    :class:`~bridge.settings.ConfigurationError` naming the variable."""

    unresolved: Unresolved

    def __new__(cls, unresolved: Unresolved) -> Self:
        text = super().__new__(cls, "(unresolved)")
        text.unresolved = unresolved
        return text

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        raise self.unresolved.error()


def _secret_field(profiles: Profiles, profile: Any) -> OptionField | None:
    found = profiles.get(profile) if isinstance(profile, str) else None
    return found.schema.secret() if found is not None else None


def _set_aside_unresolved(
    data: Mapping[str, Any], sink: list[Problem], secret_field: OptionField | None
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
        if secret_field is not None and key == secret_field.name and isinstance(value, Unresolved):
            secret = pending
            out[key] = _PLACEHOLDER_SECRET
        else:
            sink.extend(pending.problems)
            usable = False
    return (out, secret) if usable else None


def _with_unresolved_secret(
    reg: Registration, secret: Unresolved, secret_field: OptionField
) -> Registration:
    value = _UNRESOLVED_HASH if secret_field.secret == "hash" else UnresolvedSecret(secret)
    options = reg.options
    if not dataclasses.is_dataclass(options) or isinstance(options, type):
        raise TypeError(f"the options of profile {reg.profile!r} must be a dataclass")
    replaced: Options = dataclasses.replace(options, **{secret_field.stored_as: value})
    return dataclasses.replace(reg, options=replaced)


def load_file_registrations(
    sources: Sequence[RegistrationSource],
    sink: list[Problem],
    *,
    profiles: Profiles,
    hash_secret: Callable[[str], str],
) -> list[Registration]:
    """Validate the registrations read from files; problems go to ``sink``."""
    found: list[Registration] = []
    client_ids: dict[str, str] = {}
    for src in sources:
        problems = Problems(src.file, sink)
        secret_field = _secret_field(profiles, src.data.get("profile"))
        set_aside = _set_aside_unresolved(src.data, sink, secret_field)
        if set_aside is None:
            continue
        data, secret = set_aside
        reg = parse_registration(
            src.slug,
            data,
            problems,
            profiles=profiles,
            hash_secret=hash_secret,
            source="file",
            file=src.file,
        )
        if reg is None:
            continue
        if secret is not None and secret_field is not None:
            reg = _with_unresolved_secret(reg, secret, secret_field)
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
    def insert_registration(self, row: RegistrationRow) -> object: ...
    def update_registration(self, row: RegistrationRow) -> object: ...
    def delete_registration(self, slug: str) -> bool: ...
    def registrations_generation(self) -> int: ...


#: Stored registrations (and misses) a registry keeps in memory, by slug and by client_id.
CACHE_SIZE = 1000
#: A look-up key of the cache: ("slug", slug) or ("client_id", client_id).
_Key = tuple[Literal["slug", "client_id"], str]


class Registry:
    """File registrations layered over stored ones; the single place to find an RP."""

    def __init__(
        self,
        files: Sequence[Registration],
        store: RegistrationStore,
        *,
        profiles: Profiles,
        hash_secret: Callable[[str], str],
        encrypt: Callable[[str], str],
        decrypt: Callable[[str], str],
        cache_seconds: float = 2.0,
        cache_size: int = CACHE_SIZE,
    ) -> None:
        self._files = {r.slug: r for r in files}
        self._file_clients = {r.client_id: r for r in files if r.client_id}
        self._store = store
        self._profiles = profiles
        self._hash = hash_secret
        self._encrypt = encrypt
        self._decrypt = decrypt
        self._cache: GenerationCache[_Key, Registration | None] = GenerationCache(
            store.registrations_generation, interval=cache_seconds, size=cache_size
        )

    # --- reading ------------------------------------------------------------

    def in_memory(self, *, slug: str = "", client_id: str = "") -> tuple[bool, Registration | None]:
        """``(True, registration or None)`` when memory can answer without the database
        (a file registration, or a stored one or a miss kept and still fresh);
        ``(False, None)`` when only :meth:`get` / :meth:`by_client_id` can."""
        found = self._files.get(slug) or self._file_clients.get(client_id)
        if found is not None:
            return True, found
        kept = self._cache.peek(("slug", slug) if slug else ("client_id", client_id))
        if isinstance(kept, Missing):
            return False, None
        return True, kept

    def get(self, slug: str) -> Registration | None:
        if slug in self._files:
            return self._files[slug]
        return self._cache.get(("slug", slug), lambda: self._stored(slug=slug))

    def by_client_id(self, client_id: str) -> Registration | None:
        if client_id in self._file_clients:
            return self._file_clients[client_id]
        return self._cache.get(("client_id", client_id), lambda: self._stored(client_id=client_id))

    def _stored(self, *, slug: str = "", client_id: str = "") -> Registration | None:
        if slug:
            row = self._store.get_registration(slug)
        else:
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

    def find_any(self, test: Callable[[Registration], bool]) -> bool:
        """Whether a readable registration passes ``test``: files first (from memory),
        then the stored ones (the database only if no file does)."""
        if any(test(r) for r in self._files.values()):
            return True
        return any(test(r) for r in self.all(unreadable=[]) if r.source == "database")

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
        self._restore_secrets(row, data, keep=frozenset())
        sink: list[Problem] = []
        reg = parse_registration(
            row.slug,
            data,
            Problems(f"registration {row.slug}", sink),
            profiles=self._profiles,
            hash_secret=self._hash,
            stored_hash=True,
        )
        if reg is None:  # validated on write; a hand-edited row is refused loudly
            raise InvalidRegistration([(p.key, p.reason) for p in sink])
        return reg

    def _secret_fields(self, profile: str) -> tuple[OptionField | None, OptionField | None]:
        """The profile's ``"hash"`` and ``"encrypt"`` secret fields (None where it has none)."""
        found = self._profiles.get(profile)
        if found is None:
            return None, None
        return found.schema.secret("hash"), found.schema.secret("encrypt")

    def _restore_secrets(
        self, row: RegistrationRow, data: dict[str, Any], *, keep: frozenset[str]
    ) -> None:
        """Put a row's stored secrets back into ``data`` (unless ``keep`` names them:
        an edit giving a new secret)."""
        hashed, encrypted = self._secret_fields(row.profile)
        if row.secret_hash and hashed is not None and hashed.name not in keep:
            data[hashed.stored_as] = row.secret_hash
        if row.secret_encrypted and encrypted is not None and encrypted.name not in keep:
            data[encrypted.name] = self._decrypt_stored(row, encrypted.name)

    def _decrypt_stored(self, row: RegistrationRow, key: str) -> str:
        assert row.secret_encrypted is not None
        try:
            return self._decrypt(row.secret_encrypted)
        except SecretDecryptionError as exc:
            # The keyring in keys_dir is not the one that encrypted it (a lost or
            # unshared keys folder): the secret must be pasted again.
            raise InvalidRegistration(
                [
                    (
                        key,
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
        with self._changing():
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
        hashed, _ = self._secret_fields(row.profile)
        if hashed is not None and hashed.stored_as in changes:
            raise InvalidRegistration(
                [(hashed.stored_as, f"unknown key: give {hashed.name} instead")]
            )
        # Top-level keys are replaced (a table such as access as a whole); None removes.
        for key, value in changes.items():
            if value is None:
                data.pop(key, None)
            else:
                data[key] = value
        self._restore_secrets(row, data, keep=frozenset(changes))
        reg = self._validate(slug, data, stored_hash=True)
        self._check_client_id(reg)
        with self._changing():
            self._store.update_registration(self._to_row(reg, existing=row, actor=actor))
        return reg

    def remove(self, slug: str) -> bool:
        if slug in self._files:
            raise BadRequest(
                f"{slug!r} is defined in {self._files[slug].file}; files are read-only"
            )
        with self._changing():
            return self._store.delete_registration(slug)

    @contextmanager
    def _changing(self) -> Iterator[None]:
        """Around a write: whatever it did, this process forgets what it kept (other
        processes learn it from the generation the write counted)."""
        try:
            yield
        finally:
            self._cache.invalidate()

    def _validate(
        self, slug: str, data: Mapping[str, Any], *, stored_hash: bool = False
    ) -> Registration:
        sink: list[Problem] = []
        reg = parse_registration(
            slug,
            data,
            Problems(f"registration {slug}", sink),
            profiles=self._profiles,
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
            raise Conflict(f"client_id {reg.client_id!r} is already used by {clash.file}")
        other = self._store.get_registration_by_client_id(reg.client_id)
        if other is not None and other.slug != reg.slug:
            raise Conflict(f"client_id {reg.client_id!r} is already used by {other.slug!r}")

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
        hashed, encrypted = self._secret_fields(reg.profile)
        secret_hash = _attribute(reg.options, hashed)
        secret = _attribute(reg.options, encrypted)
        secret_encrypted = self._encrypt(secret) if secret else None
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


def _attribute(options: Options, spec: OptionField | None) -> str | None:
    """The stored form of a secret (its hash, or the secret itself), or None."""
    if spec is None:
        return None
    value = getattr(options, spec.stored_as, None)
    return value if isinstance(value, str) and value else None
