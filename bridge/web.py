"""What every route module reads the same way: registrations, and urlencoded bodies.

One strict form reader for every endpoint that takes a form (sign-in, the
OAuth token side, logout): only ``application/x-www-form-urlencoded``, UTF-8
decoded strictly (never re-read as Latin-1, which would silently change a
password), a bounded number of fields. Each caller decides how a refusal looks
(an HTML page or an OAuth JSON error); nothing here renders. The services
themselves are reached with :func:`bridge.services.services`.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from starlette.requests import Request

from bridge.registry import Registration
from bridge.services import Services

FORM_TYPE = "application/x-www-form-urlencoded"
MAX_FIELDS = 32


class FormError(Exception):
    """The body is not a form we can read; ``reason`` is safe to show and to log."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


async def registration(services: Services, slug: str) -> Registration | None:
    """The registration ``slug``; the database (in a worker thread) only if memory
    cannot answer (no file has it, and the registry keeps nothing fresh of it)."""
    known, found = services.registry.in_memory(slug=slug)
    if known:
        return found
    return await services.db.run(services.registry.get, slug)


async def registration_of_client(services: Services, client_id: str) -> Registration | None:
    """The registration of ``client_id``; the database only if memory cannot answer."""
    known, found = services.registry.in_memory(client_id=client_id)
    if known:
        return found
    return await services.db.run(services.registry.by_client_id, client_id)


def is_form(request: Request) -> bool:
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    return media_type == FORM_TYPE


async def read_pairs(request: Request, *, allow_empty: bool = False) -> list[tuple[str, str]]:
    """The body's fields in order (repeats kept), or :class:`FormError`."""
    body = await request.body()
    if not body and allow_empty:
        return []
    if not is_form(request):
        raise FormError("the body must be application/x-www-form-urlencoded")
    try:
        return parse_qsl(
            body.decode("utf-8"), keep_blank_values=True, max_num_fields=MAX_FIELDS, errors="strict"
        )
    except UnicodeDecodeError:
        raise FormError("the body is not valid UTF-8") from None
    except ValueError:
        raise FormError("the body has too many fields") from None


def single_values(pairs: list[tuple[str, str]]) -> dict[str, str]:
    """One value per field; a field sent twice is a :class:`FormError` (RFC 6749 §3.1)."""
    form: dict[str, str] = {}
    for key, value in pairs:
        if key in form:
            raise FormError(f"the field {key[:40]!r} was sent more than once")
        form[key] = value
    return form
