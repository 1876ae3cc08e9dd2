"""Who may use a registration, and what they release to it: decided once for every profile.

After sign-in, every flow (OIDC authorize, a profile's answer) asks this module
for the person's identity *as this registration needs it* (re-reading iMIS when
the registration maps properties the session did not load) and whether the
registration's access rule lets them in. :func:`sign_in` does both and computes
the claims the person releases (:mod:`bridge.claims`, the same as OIDC userinfo),
which is all a profile receives. Pages and protocols stay out of it: it returns
data and plain-language reasons.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bridge.claims import USER_SCOPES, userinfo
from bridge.connectors import Unavailable, UserStore
from bridge.errors import Forbidden, ServiceUnavailable
from bridge.identity import Identity
from bridge.registry import Registration

log = logging.getLogger("bridge.access")


@dataclass(frozen=True, slots=True)
class SignedIn:
    """A person signed in to one registration: access checked, claims released.

    ``claims`` is what OIDC userinfo would answer with every user scope granted
    (``sub``, name, email, phone, and the registration's mapped claims).
    ``identity`` is kept for what is not a claim: the pages that name the person,
    and the checks a profile makes against iMIS (say, a shared email).
    """

    identity: Identity
    claims: Mapping[str, Any] = field(default_factory=dict)


async def sign_in(
    users: UserStore, registration: Registration, identity: Identity, *, emails_verified: bool
) -> SignedIn:
    """The person as ``registration`` sees them; :class:`Forbidden` if it refuses them."""
    identity = await identity_for(users, registration, identity)
    return admit(registration, identity, emails_verified=emails_verified)


def admit(registration: Registration, identity: Identity, *, emails_verified: bool) -> SignedIn:
    """Check the access rule (:class:`Forbidden`), then release the person's claims.

    ``identity`` must already be :func:`identity_for` ``registration``.
    """
    check_access(registration, identity)
    claims = userinfo(identity, USER_SCOPES, registration.claims, emails_verified=emails_verified)
    return SignedIn(identity=identity, claims=claims)


async def identity_for(
    users: UserStore, registration: Registration, identity: Identity
) -> Identity:
    """``identity`` with every iMIS property ``registration`` needs (may call iMIS)."""
    needed = registration.imis_properties
    missing = [
        p
        for p in needed
        if not (p == "MemberType" and identity.member_type is not None)
        and p not in identity.properties
    ]
    if not missing:
        return identity
    outcome = await users.lookup(identity.imis_id, properties=needed)
    if isinstance(outcome, Identity):
        return outcome
    if isinstance(outcome, Unavailable):
        raise imis_unavailable(outcome)
    log.info("profile re-read for %s refused: %s", identity.imis_id, type(outcome).__name__)
    raise Forbidden("Your iMIS account cannot be used to sign in to this application.")


class IMISUnavailable(ServiceUnavailable):
    """iMIS could not answer while a sign-in was being finished (not the database)."""


def imis_unavailable(outcome: Unavailable) -> IMISUnavailable:
    """The 503 for a sign-in that iMIS could not finish (never "wrong password")."""
    return IMISUnavailable(
        "iMIS is unavailable right now, so we cannot finish signing you in. Please try again soon.",
        retry_after=outcome.retry_after,
        detail=outcome.detail,
    )


def check_access(registration: Registration, identity: Identity) -> None:
    """Raise :class:`Forbidden` with the rule's plain reason when access is refused."""
    if not registration.enabled:
        raise Forbidden(f"{registration.name} is not available at the moment.")
    reason = registration.access.refusal(identity)
    if reason is not None:
        log.info("access refused: registration=%s imis_id=%s", registration.slug, identity.imis_id)
        raise Forbidden(reason)
