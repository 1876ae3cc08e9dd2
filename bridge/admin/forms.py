"""The App Registration form: its fields from a profile's options schema, and what it sends.

Every profile gets its form without admin code: the common keys (name, slug,
enabled), then one field per :class:`~bridge.schema.OptionField` of the
profile's schema (labels and help from the schema; a list is a textarea with one
entry per line; a flag is a checkbox; a secret is write-only), then the access
rule and the claim mapping, each written as the ``[access]`` or ``[claims]``
table of a registration file (``key = value`` lines, TOML). Reading the form
gives the changes :mod:`bridge.manage` validates; nothing here validates a
registration, stores anything or renders a page. A stored secret is never put
into a field: a secret field is always empty, and an empty one keeps the secret.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bridge.plugin import Profile
from bridge.schema import OptionField
from bridge.settings import Problems

#: A secret the bridge keeps only a hash of is generated; this box asks for none.
NO_SECRET = "no_secret"

ACCESS_HELP = (
    "Who may sign in, as in the [access] table of a registration file: one rule per line, "
    "from member_types, statuses, organizations, imis_ids (lists in brackets) and message "
    "(what a refused person reads). Empty: everyone who can sign in to iMIS."
)
ACCESS_EXAMPLE = 'member_types = ["REG", "STAFF"]\nmessage = "This app is for members only."'
CLAIMS_HELP = (
    "Extra claims from iMIS fields, as in the [claims] table of a registration file: one "
    "per line, claim = iMIS field. Empty: none."
)
CLAIMS_EXAMPLE = 'organization = "organization_name"\ntags = "member_type"'


@dataclass
class FormField:
    """One field as the page shows it."""

    name: str
    label: str
    help: str = ""
    #: ``text``, ``list``, ``bool``, ``secret`` (pasted, write-only), ``generated``
    #: (a secret the bridge makes: a "no secret" box), ``table`` (access, claims).
    kind: str = "text"
    required: bool = False
    value: str = ""
    checked: bool = False
    errors: list[str] = field(default_factory=list)
    #: For a table: what a filled-in one looks like.
    example: str = ""

    @property
    def id(self) -> str:
        return f"f-{self.name}"


@dataclass
class RegistrationForm:
    """The fields of one profile's form, in order, and the problems not tied to one."""

    profile: Profile
    adding: bool
    fields: list[FormField]
    problems: list[str] = field(default_factory=list)

    def get(self, name: str) -> FormField | None:
        return next((f for f in self.fields if f.name == name), None)

    @property
    def has_errors(self) -> bool:
        return bool(self.problems) or any(f.errors for f in self.fields)

    def add_problem(self, key: str, reason: str) -> None:
        """Put a problem the registry named (``redirect_uris[0]``, ``access.statuses``)
        next to its field; one no field owns goes above the form."""
        top = re.split(r"[.\[]", key, maxsplit=1)[0]
        target = self.get(top) if top else None
        if target is None:
            self.problems.append(f"{key}: {reason}" if key else reason)
        else:
            target.errors.append(reason if key == top else f"{_where(key, top)}: {reason}")


def _where(key: str, top: str) -> str:
    """``redirect_uris[1]`` -> ``line 2``; ``access.statuses`` -> ``statuses``."""
    rest = key[len(top) :]
    index = re.fullmatch(r"\[(\d+)\]", rest)
    if index:
        return f"line {int(index.group(1)) + 1}"
    return rest.lstrip(".")


# --- building the form -----------------------------------------------------------------


def _option_field(spec: OptionField, *, adding: bool) -> FormField:
    kind: str = spec.kind
    help_text = spec.help
    if spec.secret == "hash":
        kind = "generated"
    elif spec.secret is not None:
        kind = "secret"
        if not adding:
            help_text = f"{help_text.rstrip('.')}. Leave it empty to keep the current one."
    if kind == "list":
        help_text = f"{help_text.rstrip('.')}. One per line." if help_text else "One per line."
    # A pasted secret is required when adding; when editing, empty keeps the current one.
    required = spec.required and (adding or spec.secret is None)
    return FormField(spec.name, spec.label, help_text, kind=kind, required=required)


def blank_form(profile: Profile, *, adding: bool) -> RegistrationForm:
    """The fields of ``profile``'s form, empty."""
    fields = [
        FormField("name", "Name", "Shown to people on the sign-in page", required=True),
    ]
    if adding:
        fields.append(
            FormField(
                "slug",
                "Slug",
                "Part of this registration's addresses: lowercase letters, digits and '-' "
                "(e.g. contoso-helpdesk); it cannot be changed later",
                required=True,
            )
        )
    for spec in profile.schema.fields:
        if spec.secret == "hash" and not adding:
            continue  # a new one is made by "Rotate secret"
        fields.append(_option_field(spec, adding=adding))
    fields += [
        FormField("enabled", "Enabled", "People can sign in to this app", kind="bool"),
        FormField("access", "Access rule", ACCESS_HELP, kind="table", example=ACCESS_EXAMPLE),
        FormField(
            "claims",
            "Claim mapping",
            CLAIMS_HELP,
            kind="table",
            example=getattr(profile.schema, "claims_example", "") or CLAIMS_EXAMPLE,
        ),
    ]
    return RegistrationForm(profile, adding, fields)


def form_with_data(profile: Profile, data: Mapping[str, Any], *, adding: bool) -> RegistrationForm:
    """The form showing a registration's settings (``to_data()``: never a secret)."""
    form = blank_form(profile, adding=adding)
    for item in form.fields:
        value = data.get(item.name)
        if item.kind == "bool":
            item.checked = bool(value) if value is not None else False
        elif item.kind in ("secret", "generated"):
            continue  # write-only: never shown
        elif item.kind == "table":
            item.value = to_toml(value) if isinstance(value, Mapping) else ""
        elif item.kind == "list":
            item.value = "\n".join(map(str, value)) if isinstance(value, list | tuple) else ""
        elif value is not None:
            item.value = str(value)
    return form


def profile_defaults(profile: Profile) -> dict[str, Any]:
    """What a new registration of ``profile`` holds when a key is left out (its parser's
    defaults, as ``to_data()`` shows them), to start the Add form from."""
    try:
        options = profile.schema.parse({}, Problems("", []), lambda secret: "")
        defaults = dict(options.to_data())
    except Exception:  # a plugin's parser may not cope with no data at all: start empty
        defaults = {}
    return {"enabled": True, **{k: v for k, v in defaults.items() if v not in ("", None)}}


def form_from_input(profile: Profile, sent: Mapping[str, str], *, adding: bool) -> RegistrationForm:
    """The form showing what was sent (after a refusal): every value kept, secrets not."""
    form = blank_form(profile, adding=adding)
    for item in form.fields:
        if item.kind in ("bool", "generated"):
            item.checked = sent.get(item.name if item.kind == "bool" else NO_SECRET) == "true"
        elif item.kind != "secret":
            item.value = sent.get(item.name, "")
    return form


# --- reading the form --------------------------------------------------------------------


@dataclass
class Submitted:
    """What a sent form asks for: the changes (None removes a key), a pasted secret, and
    whether no secret is wanted (a public client)."""

    changes: dict[str, Any]
    secret: str | None = None
    no_secret: bool = False
    problems: list[tuple[str, str]] = field(default_factory=list)


def read_form(profile: Profile, sent: Mapping[str, str], *, adding: bool) -> Submitted:
    """The changes the form asks for; only the *form* is checked here (a table that is
    not readable), the registration itself is validated by :mod:`bridge.manage`."""
    out = Submitted(changes={"name": sent.get("name", "").strip()})
    if adding:
        out.changes["profile"] = profile.name
    out.changes["enabled"] = sent.get("enabled") == "true"
    for spec in profile.schema.fields:
        raw = sent.get(spec.name, "")
        if spec.secret == "hash":
            out.no_secret = adding and sent.get(NO_SECRET) == "true"
        elif spec.secret is not None:
            if raw.strip():
                out.secret = raw.strip()
        elif spec.kind == "bool":
            out.changes[spec.name] = raw == "true"
        elif spec.kind == "list":
            lines = [line.strip() for line in raw.splitlines() if line.strip()]
            _set(out.changes, spec.name, lines or None, adding=adding)
        else:
            _set(out.changes, spec.name, raw.strip() or None, adding=adding)
    for name in ("access", "claims"):
        text = sent.get(name, "")
        try:
            table = from_toml(text)
        except ValueError as exc:
            out.problems.append((name, str(exc)))
            continue
        _set(out.changes, name, table or None, adding=adding)
    return out


def _set(changes: dict[str, Any], key: str, value: Any, *, adding: bool) -> None:
    """An empty value leaves a key out of a new registration and removes it from one
    being edited (so its default applies)."""
    if value is not None or not adding:
        changes[key] = value


# --- [access] and [claims] as text -------------------------------------------------------

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _toml_key(key: str) -> str:
    return ".".join(p if _BARE_KEY.match(p) else json.dumps(p) for p in key.split("."))


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value), ensure_ascii=False)


def to_toml(table: Mapping[str, Any]) -> str:
    """``key = value`` lines, as the table would be written in a registration file
    (a claim name with a dot, ``user_fields.plan``, as a dotted key)."""
    return "\n".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in _flat(table))


def _flat(table: Mapping[str, Any], prefix: str = "") -> Iterable[tuple[str, Any]]:
    for key, value in table.items():
        if isinstance(value, Mapping):
            yield from _flat(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def from_toml(text: str) -> dict[str, Any]:
    """The table written as ``key = value`` lines; :class:`ValueError` saying where not."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(
            f"cannot be read as key = value lines ({exc}); write text in double quotes "
            'and lists in brackets: statuses = ["A", "I"]'
        ) from None
