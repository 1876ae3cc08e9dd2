"""The plugin seam: what a profile is, and the catalogue of the installed ones.

A *profile* is a kind of relying party (``oidc``, ``zendesk``, or one an
out-of-tree package adds). It is discovered through the entry-point group
:data:`ENTRY_POINT_GROUP` (``imis_bridge.profiles``): each entry point names an
object satisfying :class:`Profile`, and the built-in profiles are registered in
``pyproject.toml`` exactly as another package would register its own.
:func:`load_profiles` reads the group once, when the app (or a command) starts,
into a :class:`ProfileCatalog`.

This module sits below the services (:mod:`bridge.services` holds the catalogue)
and above the registry: it names the protocol and finds the plugins, and holds
no profile's logic. :mod:`bridge.profiles` re-exports it for profile authors.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Protocol, runtime_checkable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from bridge.access import SignedIn
from bridge.identity import Identity
from bridge.registry import Registration, check_file_registrations, reserved_slugs
from bridge.schema import ProfileSchema
from bridge.settings import Problem, RegistrationSource, is_valid_slug

#: The entry-point group profiles are registered in.
ENTRY_POINT_GROUP = "imis_bridge.profiles"
#: A profile's name is a path segment (``/{name}/{slug}``) and a TOML value.
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


@dataclass(frozen=True, slots=True)
class Endpoint:
    """An address a registration's app (or its administrator) configures, for Endpoint Info."""

    label: str
    url: str
    #: Optional: what the administrator must know when configuring it, in plain
    #: words (Endpoint Info shows it under the address). Readers use
    #: ``getattr(endpoint, "note", "")``, so a profile's own endpoint type may omit it.
    note: str = ""


@runtime_checkable
class Profile(ProfileSchema, Protocol):
    """A kind of relying party.

    From :class:`~bridge.schema.ProfileSchema`: ``name``, ``schema`` (the typed
    options), ``reserved_slugs`` and ``claim_target``. Beyond those:
    """

    @property
    def display_name(self) -> str:
        """As the admin screen shows it: "OpenID Connect", "Zendesk Profile"."""
        ...

    @property
    def continue_path(self) -> str | None:
        """Where a pending sign-in of this profile continues once the person has
        signed in (``/zendesk/continue``); None if it keeps none."""
        ...

    def routes(self) -> Sequence[BaseRoute]:
        """Its HTTP routes; the app mounts them under ``/{name}`` (so ``/{slug}`` is
        served at ``/{name}/{slug}``)."""
        ...

    def endpoints(self, issuer: str, registration: Registration) -> Sequence[Endpoint]:
        """The addresses it publishes for ``registration`` (Endpoint Info, ``bridge
        registrations show``)."""
        ...


@runtime_checkable
class SignInProfile(Profile, Protocol):
    """A profile whose sign-in the core runs (:func:`bridge.profiles.sign_in_routes`).

    The core serves ``/{name}/{slug}``: it finds the registration, keeps what
    :meth:`read_request` returns while the person signs in (sessions and the
    sign-in page are shared by every app), checks the registration's access rule
    once, computes the claims OIDC userinfo would release (:class:`SignedIn`) and
    hands them to :meth:`answer`, which only translates them into what the app
    expects. ``oidc`` is not one: its answer is the OAuth code flow.
    """

    @property
    def not_found_message(self) -> str:
        """The page text for ``/{name}/{slug}`` when no such registration exists."""
        ...

    @property
    def expired_message(self) -> str:
        """The page text when a pending sign-in has expired or was already used."""
        ...

    def read_request(self, request: Request, registration: Registration) -> dict[str, str | None]:
        """What the app sent that is kept (validated); raise a BridgeError to refuse."""
        ...

    async def without_session(
        self, request: Request, registration: Registration, params: Mapping[str, str | None]
    ) -> Response | None:
        """The answer for a person without a session, or None to send them to sign in."""
        ...

    def refused(
        self, request: Request, registration: Registration, identity: Identity, message: str
    ) -> Response:
        """The page for a person the access rule (or iMIS) refuses."""
        ...

    async def answer(
        self,
        request: Request,
        registration: Registration,
        person: SignedIn,
        params: Mapping[str, str | None],
    ) -> Response:
        """The response for a signed-in person allowed in, from ``person.claims``."""
        ...


class ProfileError(Exception):
    """An installed profile cannot be used (bad name, clash, not a Profile)."""


class ProfileCatalog(Mapping[str, Profile]):
    """The installed profiles by name (in the order of their names, whatever the order of
    ``sys.path``)."""

    def __init__(self, profiles: Iterable[Profile]) -> None:
        self._profiles: dict[str, Profile] = {}
        paths: dict[str, str] = {}
        for profile in sorted(profiles, key=lambda p: str(getattr(p, "name", ""))):
            if not isinstance(profile, Profile):
                raise ProfileError(f"{profile!r} is not a profile (see bridge.profiles.Profile)")
            if not _NAME.match(profile.name):
                raise ProfileError(
                    f"profile name {profile.name!r} is not lowercase letters, digits and '_'"
                )
            if profile.name in self._profiles:
                raise ProfileError(f"two profiles are named {profile.name!r}")
            path = profile.continue_path
            if path is not None and path in paths:
                raise ProfileError(f"{profile.name} and {paths[path]} both continue at {path}")
            if path is not None:
                paths[path] = profile.name
            self._profiles[profile.name] = profile

    def __getitem__(self, name: str) -> Profile:
        return self._profiles[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._profiles)

    def __len__(self) -> int:
        return len(self._profiles)

    @property
    def reserved_slugs(self) -> frozenset[str]:
        return reserved_slugs(self)

    def is_valid_slug(self, slug: str) -> bool:
        """A slug's form, and none a profile reserves for a fixed path."""
        return is_valid_slug(slug) and slug not in self.reserved_slugs

    def continue_paths(self) -> dict[str, str]:
        """Pending-request kind (the profile's name) -> where it continues after sign-in."""
        return {n: p.continue_path for n, p in self._profiles.items() if p.continue_path}

    def check_files(self, sources: Sequence[RegistrationSource], sink: list[Problem]) -> None:
        """Validate registration files against these profiles (``load_settings``' check)."""
        check_file_registrations(sources, sink, profiles=self)


def load_profiles(found: Iterable[EntryPoint] | None = None) -> ProfileCatalog:
    """The profiles registered in :data:`ENTRY_POINT_GROUP` (or ``found``), by name.

    An entry point names a :class:`Profile` object, or a class or function that
    returns one when called without arguments.
    """
    profiles: list[Profile] = []
    for point in entry_points(group=ENTRY_POINT_GROUP) if found is None else found:
        loaded = point.load()
        if isinstance(loaded, type) or (callable(loaded) and not isinstance(loaded, Profile)):
            loaded = loaded()
        profile = loaded
        if getattr(profile, "name", None) != point.name:
            raise ProfileError(
                f"entry point {point.name!r} ({point.value}) loads a profile named "
                f"{getattr(profile, 'name', None)!r}"
            )
        profiles.append(profile)
    if found is None and not profiles:
        # Entry points are read from the installed metadata: a source tree that was
        # never installed (or installed before they were declared) has none.
        raise ProfileError(
            f"no profile is installed (entry-point group {ENTRY_POINT_GROUP}): install "
            "imis-bridge again (`pip install -e .`, or `make dev`)"
        )
    return ProfileCatalog(profiles)
