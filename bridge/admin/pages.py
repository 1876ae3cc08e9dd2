"""The admin pages under ``/admin``: App Registrations, Endpoint Info, the audit log, signing keys.

Server-rendered and usable without JavaScript (only the copy buttons need
it). Each handler runs behind :func:`bridge.admin.auth.admin_page` (an admin
with a live admin grant), reads and checks its form (CSRF first, SECURITY D1),
calls one service, and renders a page or redirects. Registrations change only
through :class:`bridge.manage.Registrations` (the same validation, generated
secrets and audit trail as ``bridge registrations``); a refusal is shown next
to the form with what was entered, as a 400, never a 500. Secrets are
write-only: no page renders a stored one, and a generated one is shown once, on
the answer to the request that made it (SECURITY F2). Changing a secret or
deleting a registration, and rotating the signing keys, need a recent sign-in
(:func:`bridge.admin.auth.step_up`, SECURITY F5).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

import bridge.admin.forms as forms
from bridge import csrf
from bridge.access import admit, identity_for
from bridge.admin.auth import (
    CONTINUE_PATH,
    PREFIX,
    Admin,
    admin_page,
    render_page,
    resume,
    safe_next,
    send_to_sign_in,
    step_up,
)
from bridge.charts import sign_in_chart
from bridge.errors import BadRequest, Forbidden, InvalidRegistration, NotFound
from bridge.keys import SUPPORTED_ALGS, human_time, retire_after_seconds
from bridge.manage import Target
from bridge.oauth.discovery import DISCOVERY_PATH
from bridge.oauth.discovery import endpoints as oidc_endpoints
from bridge.plugin import Profile
from bridge.registry import Registration
from bridge.services import Services, services
from bridge.settings import Problem, is_valid_slug
from bridge.stats import NO_REGISTRATION, sign_in_stats
from bridge.throttle import client_address
from bridge.web import FormError, read_pairs, single_values

log = logging.getLogger("bridge.admin")

REGISTRATIONS = f"{PREFIX}/registrations"
STATISTICS = f"{PREFIX}/statistics"
#: The navigation, in order.
NAV: tuple[tuple[str, str], ...] = (
    ("App Registrations", REGISTRATIONS),
    ("Endpoint Info", f"{PREFIX}/endpoints"),
    ("Audit log", f"{PREFIX}/audit"),
    ("Sign-in statistics", STATISTICS),
    ("Signing keys", f"{PREFIX}/keys"),
)
#: What a page says after a change it was redirected to (``?done=...``).
NOTICES = {
    "added": "The App Registration was saved.",
    "saved": "The App Registration was saved.",
    "unchanged": "Nothing was changed.",
    "enabled": "Sign-in is turned on for this app.",
    "disabled": "Sign-in is turned off for this app: people who try get a page saying so.",
    "secret": "The new secret is saved; the old one no longer works.",
    "deleted": "The App Registration was deleted.",
}
AUDIT_PAGE_SIZE = 50
MAX_FILTER = 200


# --- shared helpers --------------------------------------------------------------------


def _page(
    request: Request,
    admin: Admin,
    template: str,
    title: str,
    section: str,
    *,
    status_code: int = 200,
    **context: Any,
) -> Response:
    nav = [{"label": label, "href": href, "current": href == section} for label, href in NAV]
    notice = NOTICES.get(request.query_params.get("done", ""))
    return render_page(
        request,
        admin,
        template,
        {"title": title, "nav": nav, "notice": notice, **context},
        status_code=status_code,
    )


async def _form(request: Request) -> dict[str, str]:
    """The urlencoded body, one value per field, its CSRF token checked (SECURITY D1)."""
    try:
        form = single_values(await read_pairs(request, allow_empty=True))
    except FormError as exc:
        raise BadRequest(f"The form could not be read: {exc.reason}.") from None
    csrf.verify(request, form)
    return form


def _display_name(known: Services, profile: str) -> str:
    found = known.profiles.get(profile)
    return found.display_name if found is not None else profile


def _slug(request: Request) -> str:
    """The path's slug; one not of a slug's form is a 404 before the database is asked
    (PostgreSQL refuses a NUL in text), as in the JSON API."""
    slug = str(request.path_params["slug"])
    if not is_valid_slug(slug):
        raise NotFound("There is no App Registration at this address.")
    return slug


async def _target(known: Services, slug: str) -> Target:
    """What a change of registration ``slug`` needs, or the 404 page."""
    found = await known.db.run(known.registrations.target, slug)
    if found is None:
        raise NotFound("There is no App Registration at this address.")
    return found


def _detail_url(slug: str, done: str | None = None) -> str:
    url = f"{REGISTRATIONS}/{slug}"
    return f"{url}?{urlencode({'done': done})}" if done else url


def _redirect(url: str) -> Response:
    return RedirectResponse(url, status_code=303)


@dataclass(frozen=True, slots=True)
class _Shown:
    """An address as Endpoint Info shows it: its copy button's id and label."""

    id: str
    label: str
    url: str
    note: str = ""


# --- App Registrations --------------------------------------------------------------------


async def registrations(request: Request, admin: Admin) -> Response:
    """``GET /admin/registrations``: every registration, stored and from files."""
    known = services(request)
    unreadable: list[Problem] = []
    found = await known.db.run(lambda: known.registry.all(unreadable=unreadable))
    rows = [{"reg": r, "profile": _display_name(known, r.profile)} for r in found]
    broken = [
        {"slug": p.file.removeprefix("registration ").strip(), "reason": p.reason}
        for p in unreadable
    ]
    return _page(
        request,
        admin,
        "admin/registrations.html",
        "App Registrations",
        REGISTRATIONS,
        rows=rows,
        broken=broken,
    )


def _profiles(known: Services) -> list[Profile]:
    return [known.profiles[name] for name in known.profiles]


async def new_registration(request: Request, admin: Admin) -> Response:
    """``GET /admin/registrations/new[?profile=NAME]``: the SSO Profile Type, then its form."""
    known = services(request)
    profile = known.profiles.get(request.query_params.get("profile", ""))
    if profile is None:
        return _page(
            request,
            admin,
            "admin/choose_profile.html",
            "Add App Registration",
            REGISTRATIONS,
            profiles=_profiles(known),
        )
    form = forms.form_with_data(profile, forms.profile_defaults(profile), adding=True)
    return _form_page(request, admin, form)


def _form_page(
    request: Request,
    admin: Admin,
    form: forms.RegistrationForm,
    *,
    slug: str | None = None,
    name: str | None = None,
    status_code: int = 200,
) -> Response:
    title = "Add App Registration" if form.adding else f"Edit {name or slug}"
    action = f"{REGISTRATIONS}/new" if form.adding else f"{REGISTRATIONS}/{slug}/edit"
    return _page(
        request,
        admin,
        "admin/registration_form.html",
        title,
        REGISTRATIONS,
        form=form,
        action=action,
        slug=slug,
        status_code=status_code,
    )


def _refused(form: forms.RegistrationForm, exc: BadRequest) -> None:
    """Put a refusal of :mod:`bridge.manage` (or the registry) on the form."""
    if isinstance(exc, InvalidRegistration):
        for key, reason in exc.problems:
            form.add_problem(key, reason)
    else:
        form.problems.append(exc.message)


async def add_registration(request: Request, admin: Admin) -> Response:
    """``POST /admin/registrations/new``: validate and store; a generated secret is shown once."""
    known = services(request)
    sent = await _form(request)
    profile = known.profiles.get(sent.get("profile", ""))
    if profile is None:
        raise BadRequest("Choose an SSO Profile Type first.")
    slug = sent.get("slug", "").strip().lower()
    submitted = forms.read_form(profile, sent, adding=True)
    form = forms.form_from_input(profile, sent, adding=True)
    for key, reason in submitted.problems:
        form.add_problem(key, reason)
    # A slug not of a slug's form is refused by the registry below; it is not looked up
    # (PostgreSQL refuses a NUL in text).
    if not form.has_errors and is_valid_slug(slug) and await known.db.run(_taken, known, slug):
        form.add_problem("slug", f"{slug!r} is already used by another App Registration")
    if form.has_errors:
        return _form_page(request, admin, form, status_code=400)
    try:
        changed = await known.db.run(
            lambda: known.registrations.add(
                slug,
                submitted.changes,
                actor=admin.actor,
                ip=client_address(request),
                secret=submitted.secret,
                public=submitted.no_secret,
            )
        )
    except BadRequest as exc:
        _refused(form, exc)
        return _form_page(request, admin, form, status_code=400)
    log.info("registration added: slug=%s by %s", slug, admin.actor)
    if changed.generated_secret:
        return _secret_once(request, admin, changed.registration, changed.generated_secret)
    return _redirect(_detail_url(changed.registration.slug, "added"))


def _taken(known: Services, slug: str) -> bool:
    return known.registrations.target(slug) is not None


def _secret_once(request: Request, admin: Admin, reg: Registration, secret: str) -> Response:
    """The one page that shows a secret the bridge generated (SECURITY F2)."""
    known = services(request)
    spec = known.registrations.secret_field(reg.profile)
    return _page(
        request,
        admin,
        "admin/secret_once.html",
        f"New {(spec.label if spec else 'secret').lower()} for {reg.name}",
        REGISTRATIONS,
        reg=reg,
        label=spec.label if spec else "Secret",
        secret=_Shown("secret", spec.label if spec else "secret", secret),
        lookup=_Shown("lookup", "Client ID", reg.client_id) if reg.client_id else None,
    )


async def registration(request: Request, admin: Admin) -> Response:
    """``GET /admin/registrations/{slug}``: its settings (never a secret), addresses, actions."""
    known = services(request)
    slug = _slug(request)
    target = await _target(known, slug)
    reg: Registration | None = None
    problem = None
    try:
        reg = await known.db.run(known.registry.get, slug)
    except InvalidRegistration as exc:
        problem = exc.message
    profile = known.profiles.get(target.profile)
    settings = _settings_rows(target.data, profile)
    shown = _endpoints(known, reg, profile, prefix="ep") if reg is not None else []
    return _page(
        request,
        admin,
        "admin/registration.html",
        reg.name if reg else slug,
        REGISTRATIONS,
        target=target,
        reg=reg,
        problem=problem,
        profile_name=_display_name(known, target.profile),
        settings=settings,
        endpoints=shown,
        secret_field=known.registrations.secret_field(target.profile),
    )


_HIDDEN_IN_SETTINGS = frozenset({"slug", "name", "profile", "source", "file", "enabled"})


def _settings_rows(data: Mapping[str, Any], profile: Profile | None) -> list[tuple[str, str]]:
    """The registration's settings as label/value rows (``to_data()``: no secret in it)."""
    labels = {f.name: f.label for f in profile.schema.fields} if profile else {}
    labels |= {"access": "Access rule", "claims": "Claim mapping"}
    rows = []
    for key, value in data.items():
        if key in _HIDDEN_IN_SETTINGS:
            continue
        if isinstance(value, Mapping):
            text = forms.to_toml(value)
        elif isinstance(value, list | tuple):
            text = "\n".join(map(str, value)) or "(none)"
        elif isinstance(value, bool):
            text = "Yes" if value else "No"
        else:
            text = str(value)
        rows.append((labels.get(key, key.replace("_", " ").capitalize()), text))
    return rows


async def edit_page(request: Request, admin: Admin) -> Response:
    """``GET /admin/registrations/{slug}/edit``: the form, with the current settings."""
    known = services(request)
    target = await _writable(known, _slug(request))
    profile = _profile_of(known, target)
    form = forms.form_with_data(profile, target.data, adding=False)
    name = str(target.data.get("name") or target.slug)
    return _form_page(request, admin, form, slug=target.slug, name=name)


async def _writable(known: Services, slug: str) -> Target:
    target = await _target(known, slug)
    if target.read_only:
        raise BadRequest(
            f"{slug} is defined in the file {target.file} and cannot be changed here: "
            "change the file and restart the bridge."
        )
    return target


def _profile_of(known: Services, target: Target) -> Profile:
    profile = known.profiles.get(target.profile)
    if profile is None:
        raise BadRequest(f"The SSO Profile Type {target.profile!r} is not installed.")
    return profile


def _differs(old: Any, new: Any) -> bool:
    """Whether an edit changes a key (None and an empty value both mean "not set")."""
    empty: tuple[Any, ...] = (None, "", [], {})
    if new in empty and old in empty:
        return False
    if isinstance(old, tuple):
        old = list(old)
    return bool(old != new)


async def edit_registration(request: Request, admin: Admin) -> Response:
    """``POST /admin/registrations/{slug}/edit``; a new secret needs a recent sign-in (F5)."""
    known = services(request)
    sent = await _form(request)
    target = await _writable(known, _slug(request))
    profile = _profile_of(known, target)
    submitted = forms.read_form(profile, sent, adding=False)
    form = forms.form_from_input(profile, sent, adding=False)
    name = str(target.data.get("name") or target.slug)
    for key, reason in submitted.problems:
        form.add_problem(key, reason)
    spec = profile.schema.secret()
    if submitted.secret is not None and not admin.recently_signed_in and spec is not None:
        field = form.get(spec.name)
        reason = (
            "Changing the secret needs a recent sign-in. Sign in again (the link below the "
            "form), then paste the secret once more."
        )
        if field is not None:
            field.errors.append(reason)
        else:
            form.problems.append(reason)
        return _step_up_form(request, admin, form, target.slug, name)
    if form.has_errors:
        return _form_page(request, admin, form, slug=target.slug, name=name, status_code=400)
    changes = {k: v for k, v in submitted.changes.items() if _differs(target.data.get(k), v)}
    if not changes and submitted.secret is None:
        return _redirect(_detail_url(target.slug, "unchanged"))
    try:
        await known.db.run(
            lambda: known.registrations.edit(
                target.slug,
                changes,
                actor=admin.actor,
                ip=client_address(request),
                secret=submitted.secret,
            )
        )
    except BadRequest as exc:
        _refused(form, exc)
        return _form_page(request, admin, form, slug=target.slug, name=name, status_code=400)
    return _redirect(_detail_url(target.slug, "saved"))


def _step_up_form(
    request: Request, admin: Admin, form: forms.RegistrationForm, slug: str, name: str
) -> Response:
    """The edit form again (403), saying a secret change needs the password first."""
    return _page(
        request,
        admin,
        "admin/registration_form.html",
        f"Edit {name}",
        REGISTRATIONS,
        form=form,
        action=f"{REGISTRATIONS}/{slug}/edit",
        slug=slug,
        reauth=f"{PREFIX}/reauth?{urlencode({'next': f'{REGISTRATIONS}/{slug}/edit'})}",
        status_code=403,
    )


async def enabled_page(request: Request, admin: Admin) -> Response:
    """``GET /admin/registrations/{slug}/enabled``: turn sign-in on or off, confirmed."""
    known = services(request)
    target = await _writable(known, _slug(request))
    return _page(
        request,
        admin,
        "admin/confirm_enabled.html",
        "Turn sign-in on or off",
        REGISTRATIONS,
        target=target,
        enabled=bool(target.data.get("enabled", True)),
        name=str(target.data.get("name") or target.slug),
    )


async def set_enabled(request: Request, admin: Admin) -> Response:
    """``POST /admin/registrations/{slug}/enabled`` with ``enabled=true|false``."""
    known = services(request)
    sent = await _form(request)
    target = await _writable(known, _slug(request))
    value = sent.get("enabled")
    if value not in ("true", "false"):
        raise BadRequest("Say whether sign-in should be on or off.")
    await known.db.run(
        lambda: known.registrations.set_enabled(
            target.slug, value == "true", actor=admin.actor, ip=client_address(request)
        )
    )
    return _redirect(_detail_url(target.slug, "enabled" if value == "true" else "disabled"))


async def rotate_page(request: Request, admin: Admin) -> Response:
    """``GET /admin/registrations/{slug}/rotate-secret``: after a recent sign-in (F5)."""
    known = services(request)
    target = await _writable(known, _slug(request))
    here = f"{REGISTRATIONS}/{target.slug}/rotate-secret"
    return await step_up(request, admin, here) or _rotate_form(request, admin, target)


def _rotate_form(
    request: Request,
    admin: Admin,
    target: Target,
    *,
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    known = services(request)
    spec = known.registrations.secret_field(target.profile)
    if spec is None:
        raise NotFound(f"{target.slug} has no secret to change.")
    return _page(
        request,
        admin,
        "admin/rotate_secret.html",
        f"Change the {spec.label}" if spec.secret == "encrypt" else "Rotate secret",
        REGISTRATIONS,
        target=target,
        spec=spec,
        public=target.public,
        name=str(target.data.get("name") or target.slug),
        error=error,
        status_code=status_code,
    )


async def rotate_secret(request: Request, admin: Admin) -> Response:
    """``POST /admin/registrations/{slug}/rotate-secret``: generated (shown once) or pasted."""
    known = services(request)
    sent = await _form(request)
    target = await _writable(known, _slug(request))
    here = f"{REGISTRATIONS}/{target.slug}/rotate-secret"
    gate = await step_up(request, admin, here)
    if gate is not None:
        return gate
    spec = known.registrations.secret_field(target.profile)
    pasted = sent.get("secret", "").strip() or None
    if spec is not None and spec.secret == "encrypt" and pasted is None:
        return _rotate_form(
            request, admin, target, error=f"Paste the new {spec.label}.", status_code=400
        )
    try:
        changed = await known.db.run(
            lambda: known.registrations.rotate_secret(
                target.slug,
                actor=admin.actor,
                ip=client_address(request),
                secret=pasted if spec is not None and spec.secret == "encrypt" else None,
            )
        )
    except InvalidRegistration as exc:
        reasons = "; ".join(reason for _, reason in exc.problems)
        return _rotate_form(request, admin, target, error=f"Not saved: {reasons}", status_code=400)
    except BadRequest as exc:
        return _rotate_form(request, admin, target, error=exc.message, status_code=400)
    if changed.generated_secret:
        return _secret_once(request, admin, changed.registration, changed.generated_secret)
    return _redirect(_detail_url(target.slug, "secret"))


async def delete_page(request: Request, admin: Admin) -> Response:
    """``GET /admin/registrations/{slug}/delete``: the confirmation, after a recent sign-in."""
    known = services(request)
    target = await _writable(known, _slug(request))
    gate = await step_up(request, admin, f"{REGISTRATIONS}/{target.slug}/delete")
    if gate is not None:
        return gate
    return _page(
        request,
        admin,
        "admin/confirm_delete.html",
        "Delete App Registration",
        REGISTRATIONS,
        target=target,
        name=str(target.data.get("name") or target.slug),
        profile_name=_display_name(known, target.profile),
    )


async def delete_registration(request: Request, admin: Admin) -> Response:
    """``POST /admin/registrations/{slug}/delete``."""
    known = services(request)
    await _form(request)
    target = await _writable(known, _slug(request))
    gate = await step_up(request, admin, f"{REGISTRATIONS}/{target.slug}/delete")
    if gate is not None:
        return gate
    await known.db.run(
        lambda: known.registrations.remove(
            target.slug, actor=admin.actor, ip=client_address(request)
        )
    )
    log.info("registration removed: slug=%s by %s", target.slug, admin.actor)
    return _redirect(f"{REGISTRATIONS}?done=deleted")


async def test_sign_in(request: Request, admin: Admin) -> Response:
    """``GET /admin/registrations/{slug}/test``: what this registration would release for
    the signed-in admin, and whether its access rule lets them in. Nothing is sent."""
    known = services(request)
    slug = _slug(request)
    reg = await known.db.run(known.registry.get, slug)
    if reg is None:
        raise NotFound("There is no App Registration at this address.")
    identity = await identity_for(known.users, reg, admin.session.identity)
    claims: Mapping[str, Any] = {}
    refusal = None
    try:
        claims = admit(reg, identity, emails_verified=known.settings.imis.emails_verified).claims
    except Forbidden as exc:
        refusal = exc.message
    rows = [(k, v if isinstance(v, str) else json.dumps(v)) for k, v in claims.items()]
    return _page(
        request,
        admin,
        "admin/test_sign_in.html",
        f"Test sign-in: {reg.name}",
        REGISTRATIONS,
        reg=reg,
        profile_name=_display_name(known, reg.profile),
        rows=rows,
        refusal=refusal,
    )


# --- Endpoint Info ---------------------------------------------------------------------------

_ENDPOINT_LABELS = {"jwks_uri": "JWKS URI"}


def _oidc_rows(issuer: str) -> list[_Shown]:
    rows = [
        _Shown("oidc-issuer", "Issuer", issuer),
        _Shown("oidc-discovery", "Discovery URL", f"{issuer}{DISCOVERY_PATH}"),
    ]
    for key, url in oidc_endpoints(issuer):
        label = _ENDPOINT_LABELS.get(key, key.replace("_", " ").capitalize())
        rows.append(_Shown(f"oidc-{key}", label, url))
    return rows


def _endpoints(
    known: Services,
    reg: Registration,
    profile: Profile | None,
    *,
    prefix: str,
    skip: frozenset[str] = frozenset(),
) -> list[_Shown]:
    """The addresses ``reg``'s profile publishes (less those in ``skip``)."""
    if profile is None:
        return []
    found = profile.endpoints(known.settings.issuer, reg)
    return [
        _Shown(f"{prefix}-{reg.slug}-{i}", e.label, e.url, str(getattr(e, "note", "") or ""))
        for i, e in enumerate(found)
        if e.url not in skip
    ]


async def endpoint_info(request: Request, admin: Admin) -> Response:
    """``GET /admin/endpoints``: the issuer, every OIDC endpoint, and under Specialized
    Endpoints what each registration's profile publishes beyond them."""
    known = services(request)
    issuer = known.settings.issuer
    oidc = _oidc_rows(issuer)
    common = frozenset(row.url for row in oidc)
    found = await known.db.run(lambda: known.registry.all(unreadable=[]))
    specialized = []
    for reg in found:
        shown = _endpoints(known, reg, known.profiles.get(reg.profile), prefix="sp", skip=common)
        if shown:
            specialized.append(
                {"reg": reg, "profile": _display_name(known, reg.profile), "endpoints": shown}
            )
    return _page(
        request,
        admin,
        "admin/endpoints.html",
        "Endpoint Info",
        f"{PREFIX}/endpoints",
        oidc=oidc,
        specialized=specialized,
    )


# --- audit log ---------------------------------------------------------------------------------


def _filter(request: Request, name: str) -> str:
    value = request.query_params.get(name, "").strip()
    if len(value) > MAX_FILTER:
        raise BadRequest(f"The {name} filter is too long (at most {MAX_FILTER} characters).")
    if "\x00" in value:  # PostgreSQL refuses it in text: no event holds one
        raise BadRequest(f"The {name} filter holds a character no event has.")
    return value


async def audit_log(request: Request, admin: Admin) -> Response:
    """``GET /admin/audit?actor=&action=&target=&page=``: newest first, filtered, paginated."""
    known = services(request)
    filters = {name: _filter(request, name) for name in ("actor", "action", "target")}
    raw_page = request.query_params.get("page", "1")
    # ASCII digits only: str.isdigit() also takes "²", which int() refuses.
    if not (raw_page.isascii() and raw_page.isdigit()) or not 1 <= int(raw_page) <= 100_000:
        raise BadRequest("The page number must be a whole number from 1.")
    page = int(raw_page)
    rows = await known.db.run(
        lambda: known.store.list_audit(
            limit=AUDIT_PAGE_SIZE + 1,
            offset=(page - 1) * AUDIT_PAGE_SIZE,
            **{k: v or None for k, v in filters.items()},
        )
    )
    events = []
    for row in rows[:AUDIT_PAGE_SIZE]:
        try:
            detail = json.loads(row.detail_json)
        except ValueError:
            detail = {}
        events.append(
            {
                "at": human_time(datetime.fromtimestamp(row.at, UTC)),
                "actor": row.actor,
                "action": row.action,
                "target": row.target,
                "ip": row.ip or "",
                "detail": _detail_text(detail),
            }
        )
    kept = {k: v for k, v in filters.items() if v}

    def link(to: int) -> str:
        return f"{PREFIX}/audit?{urlencode({**kept, 'page': to})}"

    return _page(
        request,
        admin,
        "admin/audit.html",
        "Audit log",
        f"{PREFIX}/audit",
        events=events,
        filters=filters,
        page=page,
        newer=link(page - 1) if page > 1 else None,
        older=link(page + 1) if len(rows) > AUDIT_PAGE_SIZE else None,
    )


# --- sign-in statistics ---------------------------------------------------------------


async def statistics(request: Request, admin: Admin) -> Response:
    """``GET /admin/statistics?registration=``: sign-ins by outcome, the last 24 hours and
    30 days, for one registration, the bridge's own sign-in page (``-``) or all."""
    known = services(request)
    regs = await known.db.run(lambda: known.registry.all(unreadable=[]))
    choices = [("", "All registrations"), *((r.slug, r.name) for r in regs)]
    choices.append((NO_REGISTRATION, "The bridge's own sign-in page"))
    chosen = request.query_params.get("registration", "")
    if chosen not in {slug for slug, _ in choices}:
        raise NotFound("There is no registration with that name.")
    now = int(time.time())
    found = await known.db.run(lambda: sign_in_stats(known.store, chosen or None, now))
    summaries = [
        {
            "title": series.title,
            "chart": sign_in_chart(series, chart_id=f"chart-{n}"),
            "successes": series.successes,
            "refusals": series.refusals,
        }
        for n, series in enumerate((found.hours, found.days))
    ]
    return _page(
        request,
        admin,
        "admin/statistics.html",
        "Sign-in statistics",
        STATISTICS,
        choices=choices,
        chosen=chosen,
        summaries=summaries,
    )


def _detail_text(detail: Any) -> str:
    """An audit event's detail (names of changed fields, key ids; never a secret)."""
    if not isinstance(detail, Mapping):
        return ""
    parts = []
    for key, value in detail.items():
        if value in (None, [], "", False):
            continue
        shown = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
        parts.append(f"{key.replace('_', ' ')}: {shown}")
    return "; ".join(parts)


# --- signing keys ----------------------------------------------------------------------------


def _key_rows(known: Services) -> list[dict[str, str]]:
    known.keys.reload_if_cheap()
    now = datetime.now(UTC)
    rows = []
    for info in known.keys.list_keys():
        if info.state != "retired":
            in_jwks = "Yes"
        elif info.published(now):
            in_jwks = f"Until {human_time(info.retire_until)}"
        else:
            in_jwks = "No (expired)"
        rows.append(
            {
                "kid": info.kid,
                "alg": info.alg,
                "state": info.state,
                "created": human_time(info.created_at),
                "activated": human_time(info.activated_at),
                "retired": human_time(info.retired_at),
                "in_jwks": in_jwks,
            }
        )
    return rows


async def keys_page(request: Request, admin: Admin) -> Response:
    """``GET /admin/keys``: the signing keys, their state and dates."""
    known = services(request)
    rows = await known.db.run(_key_rows, known)
    return _page(request, admin, "admin/keys.html", "Signing keys", f"{PREFIX}/keys", keys=rows)


async def rotate_keys_page(request: Request, admin: Admin) -> Response:
    """``GET /admin/keys/rotate``: what a rotation step does, after a recent sign-in (F5)."""
    gate = await step_up(request, admin, f"{PREFIX}/keys/rotate")
    if gate is not None:
        return gate
    return _page(
        request,
        admin,
        "admin/rotate_keys.html",
        "Rotate the signing keys",
        f"{PREFIX}/keys",
        algs=SUPPORTED_ALGS,
    )


async def rotate_keys(request: Request, admin: Admin) -> Response:
    """``POST /admin/keys/rotate``: one step, as ``bridge keys rotate`` takes it; audited."""
    known = services(request)
    sent = await _form(request)
    gate = await step_up(request, admin, f"{PREFIX}/keys/rotate")
    if gate is not None:
        return gate
    alg = sent.get("alg", "RS256")
    if alg not in SUPPORTED_ALGS:
        raise BadRequest(f"The algorithm must be one of {', '.join(SUPPORTED_ALGS)}.")
    immediate = sent.get("immediate") == "true"
    tokens = known.settings.tokens
    retire_after = retire_after_seconds(tokens.id_token_seconds, tokens.access_token_seconds)

    def rotate() -> Any:
        result = known.keys.rotate(alg, retire_after_seconds=retire_after, immediate=immediate)
        known.store.audit(
            actor=admin.actor,
            action="keys.rotate",
            target=alg,
            detail={k: v for k, v in result.to_json().items() if v not in (None, [], False)},
            ip=client_address(request),
            now=int(admin.now),
        )
        return result

    # A worker thread whatever the database: with the keys in the database, a rotation
    # may wait (seconds) for the other processes to publish the key, which must not
    # stall this process's event loop (SQLite's work otherwise runs on it).
    result = await run_in_threadpool(rotate)
    log.info("signing keys rotated: alg=%s by %s", alg, admin.actor)
    rows = await known.db.run(_key_rows, known)
    return _page(
        request,
        admin,
        "admin/keys.html",
        "Signing keys",
        f"{PREFIX}/keys",
        keys=rows,
        result=result.describe().splitlines(),
    )


# --- the rest ----------------------------------------------------------------------------------


async def home(request: Request, admin: Admin) -> Response:
    return _redirect(REGISTRATIONS)


async def reauth(request: Request, admin: Admin) -> Response:
    """``GET /admin/reauth?next=PATH``: enter the password again, then back to ``PATH``."""
    return await send_to_sign_in(
        request, admin.session, safe_next(request.query_params.get("next"))
    )


Handler = Callable[[Request, Admin], Awaitable[Response]]


def routes() -> list[BaseRoute]:
    """Every admin page; each behind the admin guard but the sign-in's continuation."""

    def page(path: str, handler: Handler, methods: tuple[str, ...] = ("GET",)) -> Route:
        return Route(path, admin_page(handler), methods=list(methods))

    one = REGISTRATIONS + "/{slug}"
    return [
        Route(CONTINUE_PATH, resume, methods=["GET"]),
        page(PREFIX, home),
        page(f"{PREFIX}/reauth", reauth),
        page(REGISTRATIONS, registrations),
        page(f"{REGISTRATIONS}/new", new_registration),
        page(f"{REGISTRATIONS}/new", add_registration, ("POST",)),
        page(one, registration),
        page(f"{one}/edit", edit_page),
        page(f"{one}/edit", edit_registration, ("POST",)),
        page(f"{one}/enabled", enabled_page),
        page(f"{one}/enabled", set_enabled, ("POST",)),
        page(f"{one}/rotate-secret", rotate_page),
        page(f"{one}/rotate-secret", rotate_secret, ("POST",)),
        page(f"{one}/delete", delete_page),
        page(f"{one}/delete", delete_registration, ("POST",)),
        page(f"{one}/test", test_sign_in),
        page(f"{PREFIX}/endpoints", endpoint_info),
        page(f"{PREFIX}/audit", audit_log),
        page(STATISTICS, statistics),
        page(f"{PREFIX}/keys", keys_page),
        page(f"{PREFIX}/keys/rotate", rotate_keys_page),
        page(f"{PREFIX}/keys/rotate", rotate_keys, ("POST",)),
    ]
