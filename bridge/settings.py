"""Typed server settings, read from ``DIR/bridge.toml`` and ``DIR/registrations/*.toml``.

This module owns the configuration *format*: which keys exist, their types and
defaults, ``${ENV}`` expansion (eager, or left unresolved for a command that
does not use the value) and ``BRIDGE_*`` overrides. It collects every
problem (file, key, reason) before giving up, so an operator fixes a config in
one pass. It does not validate what a registration's profile means: that lives
with the profile (see :mod:`bridge.registry`). Nothing here runs at import time.
"""

from __future__ import annotations

import base64
import ipaddress
import math
import os
import re
import string
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
#: At most 63 characters: the length of the database column (and of a DNS label).
_SLUG = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_UNSAFE_URL_CHARS = re.compile(r"[\s\x00-\x1f\x7f]")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
#: Where the signing keys and the keyring may be kept (``key_store``).
KEY_STORES = ("files", "database")
#: The length of a key-encryption key (AES-256), given in base64.
KEK_BYTES = 32
#: Where problems with ``BRIDGE_*`` environment overrides are reported.
ENVIRONMENT = "environment"
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with the configuration."""

    file: str
    key: str
    reason: str
    #: Set when the key's value named an unset ``${VAR}``: later problems with the
    #: same key are then consequences (an empty value), not news, and are dropped.
    unset_env: bool = field(default=False, compare=False)

    def __str__(self) -> str:
        where = f"{self.file}: {self.key}" if self.key else self.file
        return f"{where}: {self.reason}"


class ConfigurationError(Exception):
    """The configuration cannot be used; ``problems`` says every reason."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


@dataclass(frozen=True, slots=True)
class Unresolved:
    """A value that names an unset ``${VAR}``, left unresolved by a command that may not use it.

    Only :func:`load_settings` with ``resolve_env=False`` makes these. Using the
    value raises :class:`ConfigurationError` with ``problems`` (one per variable).
    """

    problems: tuple[Problem, ...]

    def error(self) -> ConfigurationError:
        return ConfigurationError(list(self.problems))


def find_unresolved(value: Any) -> Unresolved | None:
    """The first :class:`Unresolved` in ``value`` (a string, list or table), if any."""
    if isinstance(value, Unresolved):
        return value
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    for item in items:
        found = find_unresolved(item)
        if found is not None:
            return found
    return None


class Problems:
    """Collects problems for one file while it is being read.

    ``from_env`` maps a key whose value came from a ``BRIDGE_*`` variable to
    that variable, so a bad override is reported where it was made.
    """

    def __init__(
        self, file: str, sink: list[Problem], *, from_env: Mapping[str, str] | None = None
    ) -> None:
        self.file = file
        self._sink = sink
        self._from_env = dict(from_env or {})

    def add(self, key: str, reason: str, *, unset_env: bool = False) -> None:
        if not unset_env and self.has_unset_env(key):
            return
        self._sink.append(self.make(key, reason, unset_env=unset_env))

    def make(self, key: str, reason: str, *, unset_env: bool = False) -> Problem:
        """The problem ``add`` would record, without recording it."""
        if key in self._from_env:
            return Problem(ENVIRONMENT, self._from_env[key], reason, unset_env=unset_env)
        return Problem(self.file, key, reason, unset_env=unset_env)

    def has(self, key: str) -> bool:
        """Whether ``key`` of this file already has a problem."""
        return any(p.file == self.file and p.key == key for p in self._sink)

    def has_unset_env(self, key: str) -> bool:
        return any(p.unset_env and p.file == self.file and p.key == key for p in self._sink)

    @property
    def count(self) -> int:
        return sum(1 for p in self._sink if p.file == self.file)


@dataclass(frozen=True, slots=True)
class ImisSettings:
    #: The iMIS site root; required. "simulator" (the built-in one) only in ``bridge demo``.
    base_url: str = ""
    service_username: str | None = None
    service_password: str | None = field(default=None, repr=False)
    phone_region: str = "US"
    connect_timeout: float = 3.0
    timeout: float = 10.0
    retries: int = 2
    emails_verified: bool = False
    shared_email_cache_seconds: int = 300

    @property
    def uses_simulator(self) -> bool:
        return self.base_url == "simulator"


@dataclass(frozen=True, slots=True)
class AdminSettings:
    users: tuple[str, ...] = ()


#: The line under "Sign in to {app}"; ``{app}`` and ``{organization}`` are filled in.
DEFAULT_SIGN_IN_SUBTITLE = "Use your {organization} iMIS account to continue to {app}."
_SUBTITLE_PLACEHOLDERS = ("app", "organization")


@dataclass(frozen=True, slots=True)
class UiSettings:
    organization_name: str = "Your association"
    logo_url: str | None = None
    forgot_password_url: str | None = None
    support_email: str | None = None
    sign_in_subtitle: str = DEFAULT_SIGN_IN_SUBTITLE

    def sign_in_subtitle_for(self, app: str | None) -> str:
        """The subtitle for signing in to ``app``; on the bridge's own sign-in page
        (no app) ``{app}`` is the organization's name."""
        name = self.organization_name
        return self.sign_in_subtitle.format_map({"app": app or name, "organization": name})


def _subtitle(value: Any, problems: Problems, key: str) -> Any:
    """A text whose only placeholders are ``{app}`` and ``{organization}``."""
    text = _str(value, problems, key)
    if text is None:
        return None
    try:
        parts = list(string.Formatter().parse(text))
    except ValueError:
        problems.add(key, "has a lone '{' or '}': write {{ or }} for a brace")
        return None
    allowed = " or ".join(f"{{{name}}}" for name in _SUBTITLE_PLACEHOLDERS)
    for _, name, spec, conversion in parts:
        if name is None:
            continue
        if name not in _SUBTITLE_PLACEHOLDERS:
            problems.add(key, f"unknown placeholder {{{name}}}: use {allowed}")
            return None
        if spec or conversion:
            problems.add(key, f"placeholders take no format or conversion: write {allowed}")
            return None
    return text


@dataclass(frozen=True, slots=True)
class SessionSettings:
    lifetime_seconds: int = 8 * 3600
    idle_seconds: int = 2 * 3600


@dataclass(frozen=True, slots=True)
class TokenSettings:
    code_seconds: int = 60
    access_token_seconds: int = 600
    id_token_seconds: int = 600
    refresh_token_seconds: int = 30 * 24 * 3600
    refresh_reuse_grace_seconds: int = 0


@dataclass(frozen=True, slots=True)
class LoginSettings:
    """Throttling of failed sign-ins: exponential delay, never a hard lockout."""

    throttle_free_failures: int = 3
    throttle_base_seconds: float = 1.0
    throttle_max_seconds: float = 60.0
    #: How long a device cookie (proof that this browser signed in as a username
    #: before) stays valid; such a browser is throttled only on its own failures.
    device_cookie_seconds: int = 365 * 24 * 3600
    #: Live pending sign-in requests one client address may hold; beyond it the
    #: oldest of that address are dropped (SECURITY D8).
    pending_per_address: int = 50


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    """``/metrics`` (Prometheus): answered only to clients in ``allow``; 404 to others."""

    enabled: bool = True
    allow: tuple[IPNetwork, ...] = (
        ipaddress.ip_network("127.0.0.1/32"),
        ipaddress.ip_network("::1/128"),
    )

    def allows(self, host: str | None) -> bool:
        """Whether a client at ``host`` (an IP address; IPv4-mapped IPv6 counts as its
        IPv4 address) may scrape."""
        if not self.enabled or not host:
            return False
        try:
            address = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.allow)


@dataclass(frozen=True, slots=True)
class RegistrationSource:
    """A registration as written in a file, ``${ENV}`` already expanded (a value naming
    an unset variable is an :class:`Unresolved` when loaded with ``resolve_env=False``)."""

    slug: str
    file: str
    data: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Settings:
    issuer: str
    config_dir: Path
    database_url: str = "sqlite:///bridge.db"
    keys_dir: Path = Path("keys")
    #: Where the signing keys and the keyring live: ``files`` (``keys_dir``, one host)
    #: or ``database`` (sealed with the key-encryption key, shared by every process).
    key_store: str = "files"
    #: The key-encryption key (32 bytes), from ``kek`` (``BRIDGE_KEK``) or ``kek_file``,
    #: base64; None if neither is set. Never shown.
    kek: bytes | None = field(default=None, repr=False)
    #: The KEK before ``kek`` (``kek_previous``, ``BRIDGE_KEK_PREVIOUS``, or
    #: ``kek_previous_file``): it still opens what it sealed while ``bridge keys reseal``
    #: moves the keys to ``kek``. Never shown.
    kek_previous: bytes | None = field(default=None, repr=False)
    log_level: str = "info"
    #: ``json`` (one object per line), ``text`` (readable), or ``auto``: JSON unless
    #: standard error is a terminal (see :func:`bridge.logs.resolve_format`).
    log_format: str = "auto"
    #: Mounts the demo pages (/_demo/...): the built-in iMIS simulator, a demo OIDC
    #: client and a demo Zendesk. Set by ``bridge demo``; refused by ``bridge serve``
    #: and ``check-config`` (see ``load_settings(allow_demo=...)``).
    demo: bool = False
    #: Server-only override of ``https://{subdomain}.zendesk.com`` (demo and tests).
    #: ``{subdomain}`` in it is replaced. Never settable from a registration.
    zendesk_base_url: str | None = None
    #: Expired rows are deleted this often (with jitter) by each bridge process;
    #: 0 turns the scheduled purge off (``bridge db purge`` still works).
    purge_interval_seconds: float = 600.0
    #: Each process keeps the stored registrations it looked up in memory and reads
    #: the database's count of registration changes at most this often: a change
    #: made at another process takes effect here within this time (0: every look-up).
    registry_cache_seconds: float = 2.0
    imis: ImisSettings = ImisSettings()
    admin: AdminSettings = AdminSettings()
    ui: UiSettings = UiSettings()
    sessions: SessionSettings = SessionSettings()
    tokens: TokenSettings = TokenSettings()
    login: LoginSettings = LoginSettings()
    metrics: MetricsSettings = MetricsSettings()
    registrations: tuple[RegistrationSource, ...] = ()
    #: Keys of bridge.toml left unresolved (``load_settings(resolve_env=False)``):
    #: they hold their default here, and :meth:`require` refuses them.
    unresolved: tuple[tuple[str, Unresolved], ...] = ()

    def require(self, *keys: str) -> None:
        """Raise :class:`ConfigurationError` if a key (or section) in ``keys`` named an
        unset ``${VAR}``: a command calls it with every key it reads."""
        problems = [
            problem
            for key, value in self.unresolved
            if any(key == k or key.startswith(f"{k}.") for k in keys)
            for problem in value.problems
        ]
        if problems:
            raise ConfigurationError(problems)

    @property
    def secure_cookies(self) -> bool:
        return urlsplit(self.issuer).scheme == "https"


# --- schema -----------------------------------------------------------------

Converter = Callable[[Any, Problems, str], Any]


def _str(value: Any, problems: Problems, key: str) -> Any:
    if not isinstance(value, str):
        problems.add(key, f"must be a string, not {type(value).__name__}")
        return None
    return value


def _int(value: Any, problems: Problems, key: str) -> Any:
    # Text is accepted because environment variables (overrides, ${VAR}) are text.
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            problems.add(key, f"must be a whole number, not {value!r}")
            return None
    if isinstance(value, bool) or not isinstance(value, int):
        problems.add(key, f"must be a whole number, not {type(value).__name__}")
        return None
    if value < 0:
        problems.add(key, "must not be negative")
        return None
    return value


def _float(value: Any, problems: Problems, key: str) -> Any:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            problems.add(key, f"must be a number, not {value!r}")
            return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        problems.add(key, f"must be a number, not {type(value).__name__}")
        return None
    if not math.isfinite(value):
        problems.add(key, "must be a finite number")
        return None
    if value < 0:
        problems.add(key, "must not be negative")
        return None
    return float(value)


def _bool(value: Any, problems: Problems, key: str) -> Any:
    if isinstance(value, str) and value.lower() in {"true", "false", "1", "0", "yes", "no"}:
        return value.lower() in {"true", "1", "yes"}
    if not isinstance(value, bool):
        problems.add(key, f"must be true or false, not {type(value).__name__}")
        return None
    return value


def _str_list(value: Any, problems: Problems, key: str) -> Any:
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        problems.add(key, "must be a list of strings")
        return None
    return tuple(value)


def _networks(value: Any, problems: Problems, key: str) -> Any:
    """CIDR networks (``10.0.0.0/8``, ``::1/128``; a bare address is one host)."""
    texts = _str_list(value, problems, key)
    if texts is None:
        return None
    networks: list[IPNetwork] = []
    for text in texts:
        try:
            networks.append(ipaddress.ip_network(text.strip()))
        except ValueError:
            problems.add(key, f"{text!r} is not a network such as 10.0.0.0/8 or ::1/128")
            return None
    return tuple(networks)


def _url(value: Any, problems: Problems, key: str) -> Any:
    text = _str(value, problems, key)
    if text is None:
        return None
    if not is_http_url(text):
        problems.add(key, f"must be an http(s) URL, not {text!r}")
        return None
    return text


def _optional_url(value: Any, problems: Problems, key: str) -> Any:
    if value == "":
        return None
    return _url(value, problems, key)


def _optional_str(value: Any, problems: Problems, key: str) -> Any:
    text = _str(value, problems, key)
    return text or None


def _optional_email(value: Any, problems: Problems, key: str) -> Any:
    text = _optional_str(value, problems, key)
    if text is not None and not _EMAIL.match(text):
        problems.add(key, f"must be an email address, not {text!r}")
        return None
    return text


def _non_empty_str(value: Any, problems: Problems, key: str) -> Any:
    text = _str(value, problems, key)
    if text == "":
        problems.add(key, "must not be empty")
        return None
    return text


def has_unsafe_url_chars(text: str) -> bool:
    return bool(_UNSAFE_URL_CHARS.search(text))


def url_problem(text: str, schemes: frozenset[str] = frozenset({"http", "https"})) -> str | None:
    """None if ``text`` is an absolute URL with one of ``schemes`` and a host, else why not."""
    if not text:
        return "must not be empty"
    if has_unsafe_url_chars(text):
        return "must be a URL without spaces or control characters"
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError:
        return "is not a valid URL"
    if parts.scheme not in schemes:
        return f"must be an {'/'.join(sorted(schemes))} URL"
    if not parts.hostname:
        return "must name a host"
    if parts.username is not None or parts.password is not None:
        return "must not contain a user name or password"
    return None


def is_http_url(text: str) -> bool:
    return url_problem(text) is None


def _section(cls: type, fields_: Mapping[str, Converter]) -> tuple[type, Mapping[str, Converter]]:
    return cls, fields_


_SECTIONS: dict[str, tuple[type, Mapping[str, Converter]]] = {
    "imis": _section(
        ImisSettings,
        {
            "base_url": _str,
            "service_username": _optional_str,
            "service_password": _optional_str,
            "phone_region": _str,
            "connect_timeout": _float,
            "timeout": _float,
            "retries": _int,
            "emails_verified": _bool,
            "shared_email_cache_seconds": _int,
        },
    ),
    "admin": _section(AdminSettings, {"users": _str_list}),
    "ui": _section(
        UiSettings,
        {
            "organization_name": _str,
            "logo_url": _optional_url,
            "forgot_password_url": _optional_url,
            "support_email": _optional_email,
            "sign_in_subtitle": _subtitle,
        },
    ),
    "sessions": _section(SessionSettings, {"lifetime_seconds": _int, "idle_seconds": _int}),
    "tokens": _section(
        TokenSettings,
        {
            "code_seconds": _int,
            "access_token_seconds": _int,
            "id_token_seconds": _int,
            "refresh_token_seconds": _int,
            "refresh_reuse_grace_seconds": _int,
        },
    ),
    "login": _section(
        LoginSettings,
        {
            "throttle_free_failures": _int,
            "throttle_base_seconds": _float,
            "throttle_max_seconds": _float,
            "device_cookie_seconds": _int,
            "pending_per_address": _int,
        },
    ),
    "metrics": _section(MetricsSettings, {"enabled": _bool, "allow": _networks}),
}

_TOP: dict[str, Converter] = {
    "issuer": _str,
    "database_url": _non_empty_str,
    "keys_dir": _non_empty_str,
    "key_store": _str,
    "kek": _non_empty_str,
    "kek_file": _non_empty_str,
    "kek_previous": _non_empty_str,
    "kek_previous_file": _non_empty_str,
    "log_level": _str,
    "log_format": _str,
    "demo": _bool,
    "zendesk_base_url": _optional_url,
    "purge_interval_seconds": _float,
    "registry_cache_seconds": _float,
}


# --- loading ----------------------------------------------------------------


def expand_env(
    value: Any, problems: Problems, key: str, env: Mapping[str, str], *, lazy: bool = False
) -> Any:
    """Replace ``${NAME}`` in every string (recursively); a missing variable is a problem.

    ``lazy``: a string naming a missing variable becomes an :class:`Unresolved`
    instead (its problems are raised only if the value is used).
    """
    if isinstance(value, str):
        missing = [m.group(1) for m in _ENV_REF.finditer(value) if m.group(1) not in env]
        if missing and lazy:
            reasons = dict.fromkeys(f"environment variable {name} is not set" for name in missing)
            return Unresolved(tuple(problems.make(key, r, unset_env=True) for r in reasons))
        for name in dict.fromkeys(missing):
            problems.add(key, f"environment variable {name} is not set", unset_env=True)
        return _ENV_REF.sub(lambda m: env.get(m.group(1), ""), value)
    if isinstance(value, list):
        return [expand_env(v, problems, f"{key}[{i}]", env, lazy=lazy) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {k: expand_env(v, problems, _join(key, k), env, lazy=lazy) for k, v in value.items()}
    return value


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def read_toml(path: Path, problems: Problems) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        problems.add("", "file not found")
    except tomllib.TOMLDecodeError as exc:
        problems.add("", f"not valid TOML: {exc}")
    except OSError as exc:
        problems.add("", f"cannot be read: {exc.strerror}")
    return {}


def _env_overrides(
    env: Mapping[str, str], sink: list[Problem]
) -> tuple[dict[str, Any], dict[str, str]]:
    """``BRIDGE_KEY`` overrides a top-level key; ``BRIDGE_SECTION__KEY`` a section key.

    Returns the overrides and, for each dotted key overridden, the variable's name.
    Other ``BRIDGE_*`` variables are not ours to judge (``BRIDGE_CONFIG_DIR``, tests),
    except a misspelt key of a known section, which would otherwise be ignored silently.
    """
    out: dict[str, Any] = {}
    names: dict[str, str] = {}
    for name, value in sorted(env.items()):
        if not name.startswith("BRIDGE_") or name.startswith("BRIDGE_TEST_"):
            continue
        rest = name[len("BRIDGE_") :].lower()
        if "__" in rest:
            section, key = rest.split("__", 1)
            if section not in _SECTIONS:
                continue
            if key not in _SECTIONS[section][1]:
                sink.append(Problem(ENVIRONMENT, name, f"unknown key {section}.{key}"))
                continue
            out.setdefault(section, {})[key] = value
            names[f"{section}.{key}"] = name
        elif rest in _TOP:
            out[rest] = value
            names[rest] = name
    return out, names


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


def _convert(
    raw: Mapping[str, Any],
    schema: Mapping[str, Converter],
    problems: Problems,
    prefix: str,
    unresolved: dict[str, Unresolved],
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in raw.items():
        dotted = _join(prefix, key)
        converter = schema.get(key)
        if converter is None:
            problems.add(dotted, "unknown key")
            continue
        pending = find_unresolved(value)
        if pending is not None:  # left at its default; Settings.require refuses it
            unresolved[dotted] = pending
            continue
        converted = converter(value, problems, dotted)
        if converted is not None or value == "":
            out[key] = converted
    return out


def _resolve(config_dir: Path, text: str) -> Path:
    path = Path(text)
    return path if path.is_absolute() else config_dir / path


def _resolve_database_url(config_dir: Path, url: str, problems: Problems) -> str:
    """A relative SQLite path is relative to the config directory, like keys_dir."""
    prefix = "sqlite:///"
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme == "sqlite":
        path = url[len(prefix) :].split("?", 1)[0] if url.startswith(prefix) else ""
        if not path or path == ":memory:":
            problems.add("database_url", "a SQLite URL needs a file: sqlite:///PATH")
            return url
        if not url.startswith(prefix + "/"):
            return prefix + str((config_dir / url[len(prefix) :]).resolve())
        return url
    if scheme in {"postgres", "postgresql"}:
        # SQLAlchemy would pick psycopg2 for these; psycopg (3) is the driver we ship.
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    if scheme != "postgresql+psycopg":
        problems.add(
            "database_url",
            "must be sqlite:///PATH or postgresql+psycopg://USER@HOST/DB, "
            # never the URL itself: it may carry a password
            f"not {scheme + '://...' if scheme else 'a URL without a scheme'}",
        )
    return url


def _load_kek(
    top: dict[str, Any], config_dir: Path, problems: Problems, unresolved: Mapping[str, Any]
) -> None:
    """``key_store``, the KEK from ``kek`` or ``kek_file``, and the previous one from
    ``kek_previous`` or ``kek_previous_file`` (never echoed)."""
    top["key_store"] = store = str(top.get("key_store") or "files").lower()
    if store not in KEY_STORES:
        problems.add("key_store", "must be one of " + ", ".join(KEY_STORES))
    top["kek_previous"], _ = _read_kek(top, "kek_previous", config_dir, problems)
    top["kek"], key = _read_kek(top, "kek", config_dir, problems)
    given_later = "kek" in unresolved or "kek_file" in unresolved  # a command not using it
    if store == "database" and top["kek"] is None and not problems.has(key) and not given_later:
        problems.add(
            "key_store",
            '"database" needs a key-encryption key: set BRIDGE_KEK, or kek_file '
            "to a file holding one (`openssl rand -base64 32`)",
        )


def _read_kek(
    top: dict[str, Any], key: str, config_dir: Path, problems: Problems
) -> tuple[bytes | None, str]:
    """The KEK given as ``key`` or in the file ``<key>_file``, and which of them said it."""
    text, file = top.pop(key, None), top.pop(f"{key}_file", None)
    if text is not None and file is not None:
        problems.add(f"{key}_file", f"give the key-encryption key once: {key} or {key}_file")
        return None, f"{key}_file"
    if file is not None:
        key, path = f"{key}_file", _resolve(config_dir, file)
        try:
            text = path.read_text(encoding="ascii")
        except (OSError, UnicodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not ASCII text"
            problems.add(key, f"{path}: cannot be read: {reason}")
            return None, key
    if text is None:
        return None, key
    kek = decode_kek(text)
    if kek is None:
        problems.add(
            key,
            f"must be {KEK_BYTES} random bytes in base64 (make one with `openssl rand -base64 32`)",
        )
    return kek, key


def decode_kek(text: str) -> bytes | None:
    """The :data:`KEK_BYTES` bytes of a base64 (or base64url) KEK, or None."""
    raw = text.strip()
    if not raw or len(raw) > 4 * KEK_BYTES:
        return None
    try:
        standard = raw.replace("-", "+").replace("_", "/")
        decoded = base64.b64decode(standard + "=" * (-len(standard) % 4), validate=True)
    except ValueError:
        return None
    return decoded if len(decoded) == KEK_BYTES else None


def _check_issuer(issuer: str, problems: Problems) -> None:
    reason = url_problem(issuer)
    if reason:
        problems.add("issuer", f"{reason} (the public https base URL), not {issuer!r}")
        return
    parts = urlsplit(issuer)
    if parts.scheme == "http" and parts.hostname not in LOCAL_HOSTS:
        problems.add("issuer", "must use https (http is allowed only for localhost/127.0.0.1)")
    elif parts.query or parts.fragment or issuer.endswith(("?", "#")):
        problems.add("issuer", "must not have a query or fragment")


def load_settings(
    config_dir: str | Path,
    env: Mapping[str, str] | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
    check_registrations: Callable[[Sequence[RegistrationSource], list[Problem]], object]
    | None = None,
    allow_demo: bool = False,
    resolve_env: bool = True,
) -> Settings:
    """Read ``bridge.toml`` and ``registrations/*.toml`` under ``config_dir``.

    ``check_registrations(sources, sink)`` validates what the registration files
    mean (see :func:`bridge.registry.check_file_registrations`); it runs even when
    other problems were found, so one run reports them all. Raises
    :class:`ConfigurationError` listing every problem found.

    ``allow_demo`` accepts ``demo = true`` and with it ``[imis] base_url =
    "simulator"``, and ``zendesk_base_url`` (the demo's and the tests' Zendesk):
    only ``bridge demo``, the tests and commands that never serve pass it, so
    ``bridge serve`` can never mount the demo pages. ``resolve_env=False`` leaves a
    value naming an unset ``${VAR}`` unresolved instead of refusing it: a key of
    bridge.toml keeps its default and is listed in ``Settings.unresolved`` (see
    :meth:`Settings.require`), a registration value stays an :class:`Unresolved`.
    """
    env = os.environ if env is None else env
    config_dir = Path(config_dir).resolve()
    sink: list[Problem] = []
    main_file = config_dir / "bridge.toml"
    env_raw, env_names = _env_overrides(env, sink)
    problems = Problems(str(main_file), sink, from_env=env_names)
    raw = read_toml(main_file, problems)
    raw = _merge(raw, env_raw)
    if overrides:
        raw = _merge(raw, overrides)
    raw = expand_env(raw, problems, "", env, lazy=not resolve_env)

    unresolved: dict[str, Unresolved] = {}
    top_raw = {k: v for k, v in raw.items() if k not in _SECTIONS}
    top = _convert(top_raw, _TOP, problems, "", unresolved)
    kwargs: dict[str, Any] = {}
    for name, (cls, schema) in _SECTIONS.items():
        section_raw = raw.get(name, {})
        if not isinstance(section_raw, dict):
            problems.add(name, "must be a table")
            continue
        kwargs[name] = cls(**_convert(section_raw, schema, problems, name, unresolved))

    issuer = top.pop("issuer", None)
    if not issuer:
        if not (problems.has("issuer") or problems.has("") or "issuer" in unresolved):
            # "" : the file is unreadable
            problems.add("issuer", "is required (the public base URL of the bridge)")
        issuer = "http://invalid"
    else:
        _check_issuer(issuer, problems)
    if top.get("demo") and not allow_demo:
        problems.add(
            "demo",
            "is set by `bridge demo` only: `bridge serve` never runs the demo pages "
            "or the iMIS simulator (remove it)",
        )
    if top.get("zendesk_base_url") and not allow_demo and not problems.has("zendesk_base_url"):
        # A signed Zendesk JWT is posted there and its origin is trusted for return_to:
        # outside the demo and the tests it is always https://{subdomain}.zendesk.com.
        problems.add(
            "zendesk_base_url",
            "is for `bridge demo` and tests only: a real bridge always posts to "
            "https://{subdomain}.zendesk.com (remove it)",
        )
    imis: ImisSettings | None = kwargs.get("imis")
    if imis is not None:
        _check_imis(imis, problems, demo=bool(top.get("demo")), unresolved=unresolved)
    login: LoginSettings | None = kwargs.get("login")
    if login is not None and login.pending_per_address < 1:
        problems.add("login.pending_per_address", "must be at least 1")
    tokens: TokenSettings | None = kwargs.get("tokens")
    if tokens is not None:
        _check_tokens(tokens, problems)
    if top.get("registry_cache_seconds", 0) > MAX_REGISTRY_CACHE_SECONDS:
        problems.add(
            "registry_cache_seconds",
            f"must be at most {MAX_REGISTRY_CACHE_SECONDS} (a changed or removed "
            "registration, a rotated secret, must reach every process within seconds)",
        )
    top["keys_dir"] = _resolve(config_dir, top.get("keys_dir") or "keys")
    _load_kek(top, config_dir, problems, unresolved)
    top["database_url"] = _resolve_database_url(
        config_dir, top.get("database_url") or "sqlite:///bridge.db", problems
    )
    top["log_level"] = top.get("log_level", "info").lower()
    if top["log_level"] not in {"debug", "info", "warning", "error"}:
        problems.add("log_level", "must be one of debug, info, warning, error")
    top["log_format"] = top.get("log_format", "auto").lower()
    if top["log_format"] not in LOG_FORMATS:
        problems.add("log_format", "must be one of " + ", ".join(LOG_FORMATS))

    registrations = tuple(
        _load_registrations(config_dir / "registrations", env, sink, lazy=not resolve_env)
    )
    if check_registrations is not None:
        check_registrations(registrations, sink)
    if sink:
        raise ConfigurationError(sink)
    return Settings(
        issuer=issuer.rstrip("/"),
        config_dir=config_dir,
        registrations=registrations,
        unresolved=tuple(unresolved.items()),
        **top,
        **kwargs,
    )


#: The values of ``log_format`` (bridge.logs formats each).
LOG_FORMATS = ("auto", "json", "text")
#: Longest lifetime of an authorization code (SECURITY B2).
MAX_CODE_SECONDS = 60
#: Longest window in which a retrying client may reuse a rotated refresh token
#: (SECURITY B4 allows "a few seconds"; a longer one is a second live token).
MAX_REFRESH_GRACE_SECONDS = 60
#: Longest time a process may keep a stored registration without asking whether it changed.
MAX_REGISTRY_CACHE_SECONDS = 5


def _check_tokens(tokens: TokenSettings, problems: Problems) -> None:
    if tokens.code_seconds > MAX_CODE_SECONDS:
        problems.add("tokens.code_seconds", f"must be at most {MAX_CODE_SECONDS}")
    if tokens.refresh_reuse_grace_seconds > MAX_REFRESH_GRACE_SECONDS:
        problems.add(
            "tokens.refresh_reuse_grace_seconds",
            f"must be at most {MAX_REFRESH_GRACE_SECONDS} (a retry needs seconds, not minutes)",
        )


def is_local_host(host: str | None) -> bool:
    """Whether ``host`` (as :func:`urlsplit` gives it) is this machine: localhost,
    127.0.0.0/8 or ::1. Traffic to it never crosses a network."""
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_imis(
    imis: ImisSettings, problems: Problems, *, demo: bool, unresolved: Mapping[str, Unresolved]
) -> None:
    key = "imis.base_url"
    site = "your iMIS site root (https://...)"
    if key in unresolved or problems.has(key):
        pass
    elif not imis.base_url:
        if not problems.has(""):  # "" : the file is unreadable, so of course it is missing
            problems.add(key, f"is required: {site}")
    elif imis.uses_simulator:
        if not demo:
            problems.add(
                key,
                f"'simulator' (the demo's built-in iMIS) runs only in `bridge demo`: give {site}",
            )
    elif reason := url_problem(imis.base_url):
        problems.add(key, f"{reason}: {site}, not {imis.base_url!r}")
    elif urlsplit(imis.base_url).scheme == "http" and not is_local_host(
        urlsplit(imis.base_url).hostname
    ):
        problems.add(
            key,
            "must use https: passwords would cross the network in clear "
            "(http is allowed only for localhost, 127.0.0.0/8 and ::1)",
        )
    for given, missing in (
        ("service_username", "service_password"),
        ("service_password", "service_username"),
    ):
        key = f"imis.{missing}"
        if key in unresolved or f"imis.{given}" in unresolved:
            continue
        if getattr(imis, given) and not getattr(imis, missing) and not problems.has(key):
            problems.add(key, f"is required when imis.{given} is set (they go together)")


def _load_registrations(
    folder: Path, env: Mapping[str, str], sink: list[Problem], *, lazy: bool = False
) -> list[RegistrationSource]:
    if not folder.is_dir():
        return []
    found: list[RegistrationSource] = []
    for path in sorted(folder.glob("*.toml")):
        problems = Problems(str(path), sink)
        slug = path.stem
        if not is_valid_slug(slug):
            problems.add(
                "",
                f"file name {slug!r} is not a valid slug "
                "(lowercase letters, digits, '-'; at most 63)",
            )
            continue
        data = expand_env(read_toml(path, problems), problems, "", env, lazy=lazy)
        found.append(RegistrationSource(slug=slug, file=str(path), data=data))
    return found


def is_valid_slug(slug: str) -> bool:
    """Whether ``slug`` has the form of a slug. The profiles reserve a few more
    (their fixed paths): :func:`bridge.registry.reserved_slugs`."""
    return bool(_SLUG.match(slug))
