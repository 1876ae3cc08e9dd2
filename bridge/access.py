"""Who may use a registration, decided once for every profile.

After sign-in, every flow (OIDC authorize, Zendesk remote login) asks this
module for the person's identity *as this registration needs it* (re-reading
iMIS when the registration maps properties the session did not load) and
whether the registration's access rule lets them in. Pages and protocols stay
out of it: it returns data and plain-language reasons.
"""

from __future__ import annotations

import logging
from typing import Any

from bridge.connectors import Unavailable
from bridge.errors import Forbidden, ServiceUnavailable
from bridge.identity import Identity
from bridge.registry import Registration

log = logging.getLogger("bridge.access")


async def identity_for(services: Any, registration: Registration, identity: Identity) -> Identity:
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
    outcome = await services.users.lookup(identity.imis_id, properties=needed)
    if isinstance(outcome, Identity):
        return outcome
    if isinstance(outcome, Unavailable):
        raise imis_unavailable(outcome)
    log.info("profile re-read for %s refused: %s", identity.imis_id, type(outcome).__name__)
    raise Forbidden("Your iMIS account cannot be used to sign in to this application.")


def imis_unavailable(outcome: Unavailable) -> ServiceUnavailable:
    """The 503 for a sign-in that iMIS could not finish (never "wrong password")."""
    return ServiceUnavailable(
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
