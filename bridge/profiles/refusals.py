"""The refusals every sign-in profile shares: the page, and the email checks.

A profile whose app identifies people by email (Zendesk, Discourse) refuses a
person with no primary email, and, unless its registration says otherwise, a
person whose primary email another iMIS person can also sign in with (SECURITY
E4: the app would mix up the two accounts). The refusal page (403) says why in
plain words and offers to sign out and use another account. Each refusal is
logged for the administrator and counted in the sign-in statistics. This module
renders and asks iMIS; it knows no profile's protocol.
"""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import Response

from bridge import csrf, stats
from bridge.access import imis_unavailable
from bridge.connectors import Unavailable
from bridge.identity import Identity
from bridge.registry import Registration
from bridge.services import services
from bridge.templating import render

NO_STORE = {"cache-control": "no-store"}


def refused(
    request: Request,
    registration: Registration,
    identity: Identity,
    message: str,
    *,
    title: str | None = None,
) -> Response:
    """The refusal page (403), with a button to sign out and use another account."""
    token = csrf.token(request)
    response = render(
        request,
        "refused.html",
        {
            "title": title or f"You cannot use {registration.name}",
            "message": message,
            "registration": registration,
            "identity": identity,
            "csrf_token": token,
        },
        status_code=403,
        headers=NO_STORE,
    )
    csrf.set_cookie(request, response, token)
    return response


async def email_refusal(
    request: Request,
    registration: Registration,
    identity: Identity,
    *,
    profile: str,
    app: str,
    refuse_shared: bool,
) -> Response | None:
    """The refusal page when ``identity`` has no primary email, or (``refuse_shared``)
    shares it with another iMIS person who can sign in; None when neither.

    ``profile`` names the profile in the log (its logger, ``bridge.{profile}``);
    ``app`` is what the person reads ("the help center", "the forum").
    """
    log = logging.getLogger(f"bridge.{profile}")
    if not identity.email:
        log.info(
            "%s sign-in refused: registration=%s imis_id=%s has no primary email",
            profile,
            registration.slug,
            identity.imis_id,
        )
        stats.note(request, stats.Outcome.NO_EMAIL)
        return refused(
            request,
            registration,
            identity,
            f"Your iMIS account has no primary email address, and {app} needs one to know "
            "who you are. Please ask the association to add a primary email to your iMIS "
            "profile, then try again.",
            title="No email address",
        )
    if not refuse_shared:
        return None
    found = services(request)
    others = await found.users.others_sharing_email(identity)
    if isinstance(others, Unavailable):
        raise imis_unavailable(others)
    if not others:
        return None
    log.warning(
        "%s sign-in refused: registration=%s imis_id=%s shares primary email with "
        "imis_id=%s; give each person their own email in iMIS "
        "(or set refuse_shared_email = false)",
        profile,
        registration.slug,
        identity.imis_id,
        ",".join(others),
    )
    stats.note(request, stats.Outcome.SHARED_EMAIL)
    return refused(
        request,
        registration,
        identity,
        f"Your email address {identity.email} is also the email address of another "
        f"person's iMIS account. {registration.name} identifies people by email, so it "
        "could mix up your account with theirs. Please ask "
        f"{found.settings.ui.organization_name} to give each of you your own email "
        "address in iMIS.",
        title="Your email address is shared",
    )
