"""Changing app registrations: the one place the CLI, the admin pages and the admin API go through.

Adding, editing, enabling, rotating a secret and removing a stored
registration each validate through the registry (and so through the
registration's profile schema), write one audit event (who, what, from where;
never a secret value) and say whether a secret was generated, which the caller
shows once. Secrets the bridge only verifies (``secret = "hash"``) are generated
here when none is given; secrets it signs with (``"encrypt"``) come from the
app's side and must be given. Refusals are :class:`~bridge.errors.BridgeError`
with a message fit for an administrator. Nothing here reads a request, prints
or renders.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from bridge.errors import BadRequest, InvalidRegistration, NotFound
from bridge.keys import generate_client_secret
from bridge.plugin import ProfileCatalog
from bridge.registry import Registration, Registry
from bridge.schema import OptionField
from bridge.storage import Store

#: The profile an ``add`` assumes when the data names none.
DEFAULT_PROFILE = "oidc"


class ChangeRefused(BadRequest):
    """A change that cannot be made; ``reason`` names which (callers may add their own hint):
    ``public`` (no secret to omit), ``no_secret`` (the profile has none),
    ``secret_from_app`` (it must be pasted), ``public_client`` (a public client has none)."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message, detail=reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Changed:
    """The registration after a change, and a secret the bridge made for it (shown once)."""

    registration: Registration
    generated_secret: str | None = None


@dataclass(frozen=True, slots=True)
class Target:
    """What changing a registration needs to know of it, even when it cannot be read."""

    slug: str
    profile: str
    public: bool
    read_only: bool
    file: str | None
    data: Mapping[str, Any]


class Registrations:
    """Registration changes with validation, generated secrets and the audit trail."""

    def __init__(
        self,
        registry: Registry,
        store: Store,
        profiles: ProfileCatalog,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._registry = registry
        self._store = store
        self._profiles = profiles
        self._clock = clock

    def secret_field(self, profile: str) -> OptionField | None:
        """The profile's secret option, if it has one."""
        found = self._profiles.get(profile)
        return found.schema.secret() if found is not None else None

    def target(self, slug: str) -> Target | None:
        """The registration ``slug`` as far as a change needs it (None: there is none).

        A stored registration that cannot be read (say, a secret the keyring cannot
        decrypt) can still be removed or given a new secret, from its row.
        """
        try:
            reg = self._registry.get(slug)
        except InvalidRegistration:
            row = self._store.get_registration(slug)
            if row is None:
                raise
            spec = self.secret_field(row.profile)
            public = spec is not None and spec.secret == "hash" and row.secret_hash is None
            return Target(slug, row.profile, public, False, None, {})
        if reg is None:
            return None
        spec = self.secret_field(reg.profile)
        public = (
            spec is not None
            and spec.secret == "hash"
            and getattr(reg.options, spec.stored_as, None) is None
        )
        return Target(slug, reg.profile, public, reg.read_only, reg.file, reg.to_data())

    def _writable(self, slug: str) -> Target:
        target = self.target(slug)
        if target is None:
            raise NotFound(f"no registration {slug!r}")
        if target.read_only:
            raise BadRequest(f"{slug!r} is defined in {target.file}; files are read-only")
        return target

    # --- changes --------------------------------------------------------------------

    def add(
        self,
        slug: str,
        data: Mapping[str, Any],
        *,
        actor: str,
        ip: str | None = None,
        secret: str | None = None,
        public: bool = False,
    ) -> Changed:
        """A new stored registration; a verify-only secret is generated unless given or public."""
        changes = dict(data)
        profile = str(changes.get("profile") or DEFAULT_PROFILE)
        changes.setdefault("profile", profile)
        generated = self._apply_secret(profile, changes, secret=secret, public=public, new=True)
        reg = self._registry.add(slug, changes, actor=actor)
        self._audit(actor, "registration.add", reg.slug, changes, ip)
        return Changed(reg, generated)

    def edit(
        self,
        slug: str,
        changes: Mapping[str, Any],
        *,
        actor: str,
        ip: str | None = None,
        secret: str | None = None,
        public: bool = False,
    ) -> Changed:
        """Replace top-level keys of a stored registration (None removes a key)."""
        target = self._writable(slug)
        edited = dict(changes)
        profile = str(edited.get("profile") or target.profile)
        self._apply_secret(profile, edited, secret=secret, public=public, new=False)
        reg = self._registry.edit(slug, edited, actor=actor)
        self._audit(actor, "registration.edit", reg.slug, edited, ip)
        return Changed(reg)

    def set_enabled(
        self, slug: str, enabled: bool, *, actor: str, ip: str | None = None
    ) -> Changed:
        self._writable(slug)
        reg = self._registry.edit(slug, {"enabled": enabled}, actor=actor)
        action = "registration.enable" if enabled else "registration.disable"
        self._audit(actor, action, reg.slug, {}, ip)
        return Changed(reg)

    def rotate_secret(
        self, slug: str, *, actor: str, ip: str | None = None, secret: str | None = None
    ) -> Changed:
        """A new secret: generated for a verify-only one, given for one the app issues."""
        target = self._writable(slug)
        spec = self.secret_field(target.profile)
        if spec is None:
            raise ChangeRefused(
                f"{slug} is a {target.profile} registration and has no secret", reason="no_secret"
            )
        if spec.secret == "encrypt" and secret is None:
            raise ChangeRefused(
                f"the {spec.label.lower()} of {slug} comes from the app's side "
                "(its administrator copies it): paste it",
                reason="secret_from_app",
            )
        if target.public:
            raise ChangeRefused(
                f"{slug} is a public client and has no secret; to make it confidential, "
                "give it a secret by editing it",
                reason="public_client",
            )
        generated = None
        if secret is None:
            generated = secret = generate_client_secret()
        reg = self._registry.edit(slug, {spec.name: secret}, actor=actor)
        self._audit(actor, "registration.rotate-secret", reg.slug, {spec.name: secret}, ip)
        return Changed(reg, generated)

    def remove(self, slug: str, *, actor: str, ip: str | None = None) -> None:
        self._writable(slug)
        if not self._registry.remove(slug):
            raise NotFound(f"no stored registration {slug!r}")
        self._audit(actor, "registration.remove", slug, {}, ip)

    # --- helpers ----------------------------------------------------------------------

    def _apply_secret(
        self,
        profile: str,
        changes: dict[str, Any],
        *,
        secret: str | None,
        public: bool,
        new: bool,
    ) -> str | None:
        """Put ``secret`` into ``changes`` (or a generated one); returns the generated one."""
        spec = self.secret_field(profile)
        if public:
            if spec is None or spec.secret != "hash":
                raise ChangeRefused(
                    f"a {profile} registration has no client secret to omit", reason="public"
                )
            if secret is not None or changes.get(spec.name):
                raise ChangeRefused("a public client has no client secret", reason="public")
            return None
        if secret is not None:
            if spec is None:
                raise ChangeRefused(f"a {profile} registration has no secret", reason="no_secret")
            changes[spec.name] = secret
            return None
        if new and spec is not None and spec.secret == "hash" and spec.name not in changes:
            # A secret the bridge only verifies can be made here (shown once); one it
            # signs with comes from the app's side and is pasted.
            generated = changes[spec.name] = generate_client_secret()
            return generated
        return None

    def _audit(
        self, actor: str, action: str, slug: str, changes: Mapping[str, Any], ip: str | None
    ) -> None:
        secrets = self._secret_names()
        self._store.audit(
            actor=actor,
            action=action,
            target=slug,
            detail={"fields": sorted(k for k in changes if k not in secrets)},
            ip=ip,
            now=int(self._clock()),
        )

    def _secret_names(self) -> frozenset[str]:
        return frozenset(n for p in self._profiles.values() for n in p.schema.secret_names)
