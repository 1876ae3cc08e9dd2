"""Profiles: the kinds of relying party, as plugins, and what they share.

Profile authors start here. This package re-exports the seam
(:mod:`bridge.plugin`: :class:`Profile`, :class:`SignInProfile`, :class:`Endpoint`,
:class:`ProfileCatalog`, :func:`load_profiles`) and the registration schema
(:mod:`bridge.schema`: options fields, access rule, claim mapping), and runs
the sign-in flow every :class:`SignInProfile` shares (:func:`sign_in_routes`):
``/{profile}/{slug}`` finds the registration, sends a person without a session to
the sign-in page and back through ``/{profile}/continue``, checks the access rule
once and hands the released claims (:class:`SignedIn`) to the profile's
``answer``. The built-in profiles live in this package (``oidc``, ``zendesk``);
each is registered in the entry-point group ``imis_bridge.profiles``, as an
out-of-tree profile package registers its own (see docs/profiles.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from bridge import stats
from bridge.access import SignedIn, admit, identity_for
from bridge.errors import BadRequest, Forbidden, NotFound
from bridge.identity import Identity
from bridge.plugin import (
    ENTRY_POINT_GROUP,
    Endpoint,
    Profile,
    ProfileCatalog,
    ProfileError,
    SignInProfile,
    load_profiles,
)
from bridge.registry import Registration
from bridge.schema import (
    COMMON_KEYS,
    AccessRule,
    OptionField,
    Options,
    OptionsSchema,
    optional_str_list,
    parse_access,
    parse_claims,
    properties_needed,
    require_str,
)
from bridge.services import services
from bridge.sessions import send_to_login
from bridge.web import registration as registration_named

#: Every answer of the shared flow is about one person at one moment.
NO_STORE = {"cache-control": "no-store"}
#: The path (under ``/{profile}``) where a sign-in continues: a slug no registration may take.
CONTINUE = "continue"


def continue_path(name: str) -> str:
    """Where the shared flow continues pending sign-ins of profile ``name``."""
    return f"/{name}/{CONTINUE}"


def sign_in_path(name: str, slug: str) -> str:
    """``/{name}/{slug}``: where an app sends a person to sign in to registration ``slug``."""
    return f"/{name}/{slug}"


def sign_in_routes(profile: SignInProfile) -> list[Route]:
    """``GET /continue`` and ``GET /{slug}`` of ``profile`` (the app mounts them under
    ``/{profile.name}``): the sign-in flow every :class:`SignInProfile` shares."""

    async def entry(request: Request) -> Response:
        return await _entry(request, profile)

    async def resume(request: Request) -> Response:
        return await _resume(request, profile)

    return [
        Route(f"/{CONTINUE}", resume, methods=["GET"]),
        Route("/{slug}", entry, methods=["GET"]),
    ]


async def registration_of(request: Request, profile: Profile, slug: str) -> Registration:
    """Registration ``slug`` of ``profile``; anything else is the profile's 404 page."""
    found: Registration | None = None
    known = services(request)
    if known.profiles.is_valid_slug(slug):
        found = await registration_named(known, slug)
    if found is None or found.profile != profile.name:
        message = (
            profile.not_found_message
            if isinstance(profile, SignInProfile)
            else "There is no sign-in at this address."
        )
        raise NotFound(message, detail=f"no {profile.name} registration {slug[:64]!r}")
    return found


async def _entry(request: Request, profile: SignInProfile) -> Response:
    """``GET /{profile}/{slug}``: an app sends a person here to be signed in."""
    registration = await registration_of(request, profile, request.path_params["slug"])
    params = profile.read_request(request, registration)
    sessions = services(request).sessions
    session = await sessions.current(request)
    if session is None:
        early = await profile.without_session(request, registration, params)
        if early is not None:
            return early
        pending = await sessions.create_pending(
            request, kind=profile.name, registration=registration.slug, params=params
        )
        return send_to_login(pending)
    return await answer_for(request, profile, registration, session.identity, params)


async def _resume(request: Request, profile: SignInProfile) -> Response:
    """``GET /{profile}/continue?request=ID``: back from the sign-in page.

    It redirects to ``/{profile}/{slug}`` with what the app sent, which answers
    from the new session: so the answer can always be reloaded (or reached with
    Back) and is made afresh instead of from an expired request.
    """
    sessions = services(request).sessions
    pending = await sessions.load_pending(request.query_params.get("request"))
    if pending is None or pending.kind != profile.name:
        raise BadRequest(
            profile.expired_message, detail=f"unknown or expired {profile.name} pending request"
        )
    session = await sessions.current(request)
    if not pending.satisfied_by(session):
        return send_to_login(pending)
    await sessions.finish_pending(pending)
    query = {k: v for k, v in pending.params.items() if isinstance(v, str) and v}
    target = sign_in_path(profile.name, pending.registration)
    if query:
        target += "?" + urlencode(query)
    return RedirectResponse(target, status_code=303, headers=NO_STORE)


async def answer_for(
    request: Request,
    profile: SignInProfile,
    registration: Registration,
    identity: Identity,
    params: Mapping[str, str | None],
) -> Response:
    """Check access once, release the claims, and let ``profile`` answer (or refuse).

    The outcome is counted (:func:`bridge.stats.counted`): an answer is a success
    unless it is an error; a profile that refuses says why with :func:`bridge.stats.note`.
    """
    return await stats.counted(
        request, registration.slug, _answer(request, profile, registration, identity, params)
    )


async def _answer(
    request: Request,
    profile: SignInProfile,
    registration: Registration,
    identity: Identity,
    params: Mapping[str, str | None],
) -> Response:
    known = services(request)
    try:
        identity = await identity_for(known.users, registration, identity)
        person = admit(registration, identity, emails_verified=known.settings.imis.emails_verified)
    except Forbidden as exc:
        stats.note(request, stats.Outcome.ACCESS_RULE)
        return profile.refused(request, registration, identity, exc.message)
    return await profile.answer(request, registration, person, params)


__all__ = [
    "COMMON_KEYS",
    "CONTINUE",
    "ENTRY_POINT_GROUP",
    "NO_STORE",
    "AccessRule",
    "Endpoint",
    "OptionField",
    "Options",
    "OptionsSchema",
    "Profile",
    "ProfileCatalog",
    "ProfileError",
    "SignInProfile",
    "SignedIn",
    "answer_for",
    "continue_path",
    "load_profiles",
    "optional_str_list",
    "parse_access",
    "parse_claims",
    "properties_needed",
    "registration_of",
    "require_str",
    "sign_in_path",
    "sign_in_routes",
]
