"""The ``bridge`` command line: serve, demo, config checks, registrations, keys, database,
audit trail, admin API tokens.

Each sub-command parses its arguments, calls one function of the package and
prints a short human answer (or JSON with ``--json``). Exit status is 0 on
success and non-zero with a one-line reason otherwise; configuration problems
are printed one per line, naming file, key and reason. Secrets are read from
standard input (``--secret-stdin``) so they never land in shell history, and
are never printed back, except a newly generated client secret, shown once.
Only ``serve`` and ``check-config`` need every ``${ENV}`` of the configuration
set; every other command names the keys it reads and needs only their variables.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import re
import sys
import tempfile
import tomllib
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, cast

from bridge.connectors import UserStore
from bridge.errors import BridgeError
from bridge.settings import ConfigurationError, Problem, Settings, load_settings

if TYPE_CHECKING:  # only types, of modules below this one (imported for real where used)
    from bridge.keys import Vault
    from bridge.plugin import ProfileCatalog
    from bridge.registry import Registration
    from bridge.services import Services
    from bridge.storage.db import Database

EXIT_OK = 0
EXIT_FAIL = 1
EXIT_CONFIG = 2


def _fail(message: str, code: int = EXIT_FAIL) -> int:
    print(f"bridge: {message}", file=sys.stderr)
    return code


def _settings(args: argparse.Namespace, uses: Sequence[str] | None = None) -> Settings:
    """The settings of ``--config``, registration files included: every problem at once.

    ``uses``: the keys (or sections) of bridge.toml the command reads. Only their
    ``${ENV}`` must be set, and a registration's secret may stay unset (the
    command fails naming the variable if it does use it). None, for ``serve``
    and ``check-config``: every variable must be set and the demo is refused.
    """
    from bridge.plugin import load_profiles

    settings = load_settings(
        args.config,
        check_registrations=load_profiles().check_files,
        allow_demo=uses is not None,
        resolve_env=uses is None,
    )
    if uses is not None:
        settings.require(*uses)
    return settings


def _print_problems(exc: ConfigurationError) -> int:
    print("bridge: the configuration cannot be used:", file=sys.stderr)
    for problem in exc.problems:
        print(f"  {problem}", file=sys.stderr)
    return EXIT_CONFIG


# --- serve / demo / checks ----------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from bridge.app import create_app, open_services
    from bridge.logs import configure_logging, logging_config

    settings = _settings(args)
    configure_logging(settings.log_level, settings.log_format)
    # Fail before binding the port: bad registrations, a schema that is behind.
    services = open_services(settings, users=cast(UserStore, _NoUsers()))
    services.db.dispose()
    print(f"imis-bridge serving {settings.issuer} on http://{args.host}:{args.port}", flush=True)
    common: dict[str, Any] = {
        "host": args.host,
        "port": args.port,
        "proxy_headers": True,
        "forwarded_allow_ips": args.forwarded_allow_ips,
        "server_header": False,
        "log_level": settings.log_level,
        # Applied by uvicorn in every worker process, not only in this one.
        "log_config": logging_config(settings.log_level, settings.log_format),
        "access_log": False,
        "timeout_graceful_shutdown": 10,
    }
    if args.workers > 1:
        os.environ["BRIDGE_CONFIG_DIR"] = str(settings.config_dir)
        with _multiprocess_metrics():
            uvicorn.run(
                "bridge.app:create_app_from_env", factory=True, workers=args.workers, **common
            )
    else:
        uvicorn.run(create_app(settings), **common)
    return EXIT_OK


@contextlib.contextmanager
def _multiprocess_metrics() -> Iterator[None]:
    """Workers write their metrics to files one scrape adds up: in the operator's
    ``PROMETHEUS_MULTIPROC_DIR`` (emptied first), else in a private temporary folder
    (0700, removed at exit). Set before uvicorn starts the workers, which inherit it."""
    from bridge.metrics import MULTIPROC_ENV, clear_multiprocess_dir, remove_multiprocess_dir

    given = os.environ.get(MULTIPROC_ENV)
    if given:
        clear_multiprocess_dir(Path(given))
        yield
        return
    folder = Path(tempfile.mkdtemp(prefix="bridge-metrics-"))  # mode 0700
    os.environ[MULTIPROC_ENV] = str(folder)
    try:
        yield
    finally:
        os.environ.pop(MULTIPROC_ENV, None)
        remove_multiprocess_dir(folder)


def cmd_demo(args: argparse.Namespace) -> int:
    from bridge.app import create_app
    from bridge.demo.run import run_demo

    return run_demo(
        port=args.port, folder=Path(args.dir), client_port=args.client_port, create_app=create_app
    )


def cmd_check_config(args: argparse.Namespace) -> int:
    from bridge.keys import hash_secret
    from bridge.plugin import load_profiles
    from bridge.registry import load_file_registrations

    settings = _settings(args)
    profiles = load_profiles()
    sink: list[Problem] = []
    files = load_file_registrations(
        settings.registrations, sink, profiles=profiles, hash_secret=hash_secret
    )
    if sink:
        raise ConfigurationError(sink)
    notes = _check_database(settings, files, profiles) if args.database else []
    print(f"configuration OK: issuer {settings.issuer}, {len(files)} registration(s) in files")
    for reg in files:
        print(f"  {reg.slug:<24} {reg.profile:<8} {reg.name}")
    for note in notes:
        print(note)
    return EXIT_OK


def _check_database(
    settings: Settings, files: Sequence[Registration], profiles: ProfileCatalog
) -> list[str]:
    """``check-config --database``: schema, keys and stored registrations, as the
    server would find them at start. Creates nothing; returns notes to print."""
    from sqlalchemy.engine import make_url

    from bridge.keys import KeyStore, hash_secret
    from bridge.registry import Registry
    from bridge.storage.db import Database, SchemaAhead, SchemaBehind
    from bridge.storage.repo import Store

    notes: list[str] = []
    in_database = settings.key_store == "database"
    if in_database:
        pass  # checked below, once the schema is known to be current
    elif settings.keys_dir.exists():
        KeyStore.open(settings.keys_dir)  # readable, or a KeyStoreError naming the problem
    else:
        notes.append(f"keys: {settings.keys_dir} is created on first start")
    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite" and not Path(url.database or "").exists():
        notes.append(f"database: {url.database} is created on first start")
        return notes
    db = Database(settings.database_url)
    try:
        state = db.schema_state()
        if state == "ahead":
            raise SchemaAhead
        if state != "current":
            if db.backend != "sqlite":
                raise SchemaBehind
            notes.append(f"database: schema {state}; SQLite upgrades it on first start")
            return notes
        if in_database:
            notes.extend(_check_key_vault(settings, db))
        # Stored registrations that clash with a file (no secret is read for this).
        registry = Registry(
            files,
            Store(db),
            profiles=profiles,
            hash_secret=hash_secret,
            encrypt=_unused,
            decrypt=_unused,
        )
        clashes = registry.conflicts()
        if clashes:
            raise ConfigurationError(clashes)
    finally:
        db.dispose()
    return notes


def _check_key_vault(settings: Settings, db: Database) -> list[str]:
    """The keys in the database open with the configured KEK (or are yet to be made)."""
    from bridge.app import key_vault
    from bridge.keys import KeyStore, KeyStoreError

    vault = key_vault(settings, db)
    try:
        KeyStore.open(vault)  # opens with this KEK, or a KeyStoreError naming the problem
    except KeyStoreError:
        if not vault.load()[1]:  # read again only when it did not open: empty, or the error
            return ["keys: created in the database on first start (or `bridge keys migrate`)"]
        raise
    return []


def _unused(secret: str) -> str:
    raise AssertionError("check-config reads no stored secret")


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from bridge.storage.db import Database

    settings = _settings(args, uses=("database_url",))
    db = Database(settings.database_url)
    try:
        before = db.schema_state()
        db.upgrade()
        print(f"database schema upgraded (was {before}, now {db.schema_state()})")
    finally:
        db.dispose()
    return EXIT_OK


def cmd_db_purge(args: argparse.Namespace) -> int:
    import time

    from bridge.storage.db import Database
    from bridge.storage.repo import Store

    settings = _settings(args)
    db = Database(settings.database_url)
    try:
        db.ensure_schema(auto_upgrade=False)
        counts = Store(db).purge_expired(
            now=int(time.time()), session_idle_seconds=settings.sessions.idle_seconds
        )
    finally:
        db.dispose()
    if counts is None:
        return _fail("another bridge process is purging right now; nothing to do")
    if args.json:
        print(json.dumps(counts))
        return EXIT_OK
    print(f"removed {sum(counts.values())} expired row(s); the audit trail is kept")
    for kind, count in counts.items():
        print(f"  {kind:<18} {count}")
    return EXIT_OK


def _printable(text: str) -> str:
    """``text`` with control characters escaped, so a stored value cannot drive the terminal."""
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)


def cmd_audit_list(args: argparse.Namespace) -> int:
    from bridge.storage.audit import event_data
    from bridge.storage.db import Database
    from bridge.storage.repo import Store

    settings = _settings(args, uses=("database_url",))
    db = Database(settings.database_url)
    try:
        db.ensure_schema(auto_upgrade=False)
        events = Store(db).list_audit(limit=args.limit)
    finally:
        db.dispose()
    rows = [event_data(event) for event in events]
    if args.json:
        print(json.dumps(rows, indent=2, sort_keys=True))
        return EXIT_OK
    if not rows:
        print("no audit events")
        return EXIT_OK
    print(f"{'TIME (UTC)':<21} {'ACTOR':<20} {'ACTION':<24} {'TARGET':<20} DETAIL")
    for row in rows:
        detail = json.dumps(row["detail"], separators=(",", ":"), sort_keys=True)
        line = (
            f"{row['time']:<21} {row['actor']:<20} {row['action']:<24} {row['target']:<20} "
            f"{'' if detail == '{}' else detail}"
        )
        print(_printable(line.rstrip()))
    return EXIT_OK


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, not {text!r}")
    return value


def cmd_imis_check(args: argparse.Namespace) -> int:
    from bridge.connectors.check import run_check

    settings = _settings(args, uses=("imis",))
    simulator = None
    if settings.imis.uses_simulator:  # the demo's built-in one, checked in-process
        from bridge.demo.simulator import create_simulator

        simulator = create_simulator()
    return run_check(settings.imis, args.user, simulator=simulator)


def cmd_imis_simulator(args: argparse.Namespace) -> int:
    from bridge.demo.simulator import serve_simulator

    return serve_simulator(args.port, args.people, args.latency_ms)


# --- registrations ------------------------------------------------------------


def _open_services(args: argparse.Namespace) -> Services:
    from bridge.app import open_services

    settings = _settings(args, uses=("database_url", "keys_dir"))
    return open_services(settings, users=cast(UserStore, _NoUsers()))


class _NoUsers:
    """The CLI never signs anyone in; it needs no connection to iMIS."""

    async def aclose(self) -> None:
        return None


def _parse_value(text: str) -> Any:
    """``--set key=value``: a TOML value if it parses (lists, booleans), else a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _read_registration_file(path: str, *, without: frozenset[str]) -> dict[str, Any]:
    """A registration file for ``--file``, ``${ENV}`` expanded as at start-up.

    Keys in ``without`` are dropped first (a secret given on standard input instead).
    """
    from bridge.settings import Problems, expand_env, read_toml

    sink: list[Problem] = []
    problems = Problems(path, sink)
    raw = {k: v for k, v in read_toml(Path(path), problems).items() if k not in without}
    data: dict[str, Any] = expand_env(raw, problems, "", os.environ)
    if sink:
        raise ConfigurationError(sink)
    return data


def _collect(
    args: argparse.Namespace, current: Mapping[str, Any], profiles: ProfileCatalog
) -> dict[str, Any]:
    """The changes ``--file``, ``--set`` and ``--unset`` ask for, as registration keys.

    A dotted key (``access.member_types``, ``claims.tags``) changes one entry of a
    table and keeps the rest of it as ``current`` (the registration's data) has it.
    ``--set`` keys are checked against the profile's options schema first: an
    unknown key is named with the keys the profile knows, and a secret is refused
    (it would land in shell history; ``--secret-stdin`` reads it).
    """
    from bridge.schema import COMMON_KEYS

    secret_keys = frozenset(n for p in profiles.values() for n in p.schema.secret_names)
    data: dict[str, Any] = {}
    if getattr(args, "file", None):
        without = secret_keys if getattr(args, "secret_stdin", False) else frozenset()
        data.update(_read_registration_file(args.file, without=without))

    def table(name: str) -> dict[str, Any]:
        if not isinstance(data.get(name), dict):
            existing = current.get(name)
            data[name] = dict(existing) if isinstance(existing, Mapping) else {}
        result: dict[str, Any] = data[name]
        return result

    pairs: list[str] = list(getattr(args, "set", None) or [])
    for item in pairs:
        if "=" not in item:
            raise BridgeError(f"--set needs key=value, not {item!r}")
    profile_name = data.get("profile") or current.get("profile")
    for item in pairs:
        key, _, value = item.partition("=")
        if key.strip() == "profile":
            profile_name = _parse_value(value.strip())
    profile = profiles.get(profile_name) if isinstance(profile_name, str) else None
    for item in pairs:
        key, value = (part.strip() for part in item.split("=", 1))
        top, _, rest = key.partition(".")
        if top in secret_keys:
            raise BridgeError(f"--set {top}: give a secret on standard input (--secret-stdin)")
        if profile is not None and top not in COMMON_KEYS and top not in profile.schema.keys:
            known = ", ".join(f.name for f in profile.schema.fields)
            raise BridgeError(
                f"--set {top}: not a key of profile {profile.name!r} "
                f"({profile.display_name}: {known}; and {', '.join(sorted(COMMON_KEYS))})"
            )
        if rest:  # claim names may contain dots themselves (user_fields.x)
            table(top)[rest] = _parse_value(value)
        else:
            data[top] = _parse_value(value)
    for key in getattr(args, "unset", None) or []:
        top, _, rest = key.strip().partition(".")
        if rest:
            entries = table(top)
            entries.pop(rest, None)
            if not entries:
                data[top] = None
        else:
            data[top] = None
    return data


def _read_secret(args: argparse.Namespace) -> str | None:
    if not getattr(args, "secret_stdin", False):
        return None
    secret = sys.stdin.readline().strip()
    if not secret:
        raise BridgeError("--secret-stdin: no secret on standard input")
    return secret


def _show(reg: Registration, as_json: bool, services: Services) -> None:
    """The registration (never a secret) and the endpoints its profile publishes for it."""
    data = reg.to_data()
    profile = services.profiles.get(reg.profile)
    found = profile.endpoints(services.settings.issuer, reg) if profile is not None else ()
    endpoints = [{"label": e.label, "url": e.url} for e in found]
    if as_json:
        print(json.dumps({**data, "endpoints": endpoints}, indent=2, sort_keys=True))
        return
    for key, value in data.items():
        print(f"{key:<28} {value}")
    for endpoint in endpoints:
        print(f"{'endpoint: ' + endpoint['label']:<28} {endpoint['url']}")


def cmd_registrations(args: argparse.Namespace) -> int:
    services = _open_services(args)
    try:
        return _registrations(args, services)
    finally:
        services.db.dispose()


#: What the CLI adds to a refusal of :mod:`bridge.manage`, by its reason.
_CLI_HINTS = {
    "public": ("--public: ", ""),
    "no_secret": ("--secret-stdin: ", ""),
    "secret_from_app": ("", " with --secret-stdin"),
    "public_client": ("", ""),
}


def _registrations(args: argparse.Namespace, services: Services) -> int:
    from bridge.manage import DEFAULT_PROFILE, Changed, ChangeRefused

    registry = services.registry
    manage = services.registrations
    action = args.action
    actor = f"cli:{os.environ.get('USER', 'unknown')}"
    if action == "list":
        unreadable: list[Problem] = []
        regs = registry.all(unreadable=unreadable)
        if args.json:
            print(json.dumps([r.to_data() for r in regs], indent=2, sort_keys=True))
        elif not regs:
            print("no registrations")
        else:
            print(f"{'SLUG':<24} {'PROFILE':<8} {'SOURCE':<9} NAME")
            for r in regs:
                print(f"{r.slug:<24} {r.profile:<8} {r.source:<9} {r.name}")
        for problem in unreadable:
            _fail(f"cannot be read: {problem}")
        return EXIT_FAIL if unreadable else EXIT_OK
    if action == "show":
        found = registry.get(args.slug)
        if found is None:
            return _fail(f"no registration {args.slug!r}")
        _show(found, args.json, services)
        return EXIT_OK
    current = None if action == "add" else manage.target(args.slug)
    if action != "add":
        if current is None:
            return _fail(f"no registration {args.slug!r}")
        if current.read_only:
            return _fail(f"{args.slug!r} is defined in {current.file}; files are read-only")
    try:
        changed: Changed
        if action == "add":
            changes = _collect(args, {}, services.profiles)
            changes.setdefault("profile", DEFAULT_PROFILE)
            changed = manage.add(
                args.slug,
                changes,
                actor=actor,
                secret=_read_secret(args),
                public=getattr(args, "public", False),
            )
        elif action == "edit":
            assert current is not None  # checked above for every action but add
            changed = manage.edit(
                args.slug,
                _collect(args, current.data, services.profiles),
                actor=actor,
                secret=_read_secret(args),
                public=getattr(args, "public", False),
            )
        elif action == "rotate-secret":
            changed = manage.rotate_secret(args.slug, actor=actor, secret=_read_secret(args))
        elif action == "remove":
            manage.remove(args.slug, actor=actor)
            print(f"removed {args.slug}")
            return EXIT_OK
        else:  # pragma: no cover - argparse restricts the choices
            return _fail(f"unknown action {action!r}")
    except ChangeRefused as refused:
        before, after = _CLI_HINTS.get(refused.reason, ("", ""))
        return _fail(f"{before}{refused.message}{after}")
    _show(changed.registration, args.json, services)
    if changed.generated_secret:
        print(
            f"\nclient_secret (shown once, store it in the app now): {changed.generated_secret}",
            file=sys.stderr if args.json else sys.stdout,
        )
    return EXIT_OK


# --- admin API tokens ------------------------------------------------------------

#: An admin token's name: a word an operator can type (not only digits: those are ids).
_TOKEN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def _time(epoch: int | None) -> str:
    return (
        "-" if epoch is None else datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    )


def cmd_admin_token(args: argparse.Namespace) -> int:
    """``bridge admin token create|list|revoke``: tokens of the admin JSON API (SECURITY F4).

    Only a token's hash is stored; ``create`` prints the token once, alone on its
    last line. Creating and revoking are audited (actor ``cli:$USER``).
    """
    import time

    from bridge.storage.db import Database
    from bridge.storage.repo import Store

    settings = _settings(args, uses=("database_url",))
    db = Database(settings.database_url)
    try:
        db.ensure_schema()  # SQLite upgrades itself, as at start; PostgreSQL must be current
        store = Store(db)
        actor = f"cli:{os.environ.get('USER', 'unknown')}"
        now = int(time.time())
        if args.action == "create":
            name = args.name.strip()
            if not _TOKEN_NAME.match(name) or name.isdigit():
                return _fail(
                    f"--name {_printable(name)!r}: letters, digits, '.', '_' and '-' "
                    "(at most 64, starting with a letter or digit, not only digits)"
                )
            raw, row = store.create_admin_token(name, created_by=actor, now=now)
            store.audit(
                actor=actor,
                action="admin-token.create",
                target=name,
                detail={"id": row.id},
                now=now,
            )
            print(f"admin API token {row.id} ({name}) created; it is shown once, store it now:")
            print(raw)
            return EXIT_OK
        if args.action == "revoke":
            revoked = store.revoke_admin_token(args.token, now=now)
            if revoked is None:
                return _fail(f"no admin token {_printable(args.token)!r} that is not revoked")
            store.audit(
                actor=actor,
                action="admin-token.revoke",
                target=revoked.name,
                detail={"id": revoked.id},
                now=now,
            )
            print(f"revoked admin API token {revoked.id} ({revoked.name})")
            return EXIT_OK
        tokens = store.list_admin_tokens()
    finally:
        db.dispose()
    rows = [
        {
            "id": t.id,
            "name": t.name,
            "created_at": t.created_at,
            "created_by": t.created_by,
            "last_used_at": t.last_used_at,
            "revoked_at": t.revoked_at,
        }
        for t in tokens
    ]
    if args.json:
        print(json.dumps(rows, indent=2, sort_keys=True))
        return EXIT_OK
    if not rows:
        print("no admin API tokens (create one with `bridge admin token create --name NAME`)")
        return EXIT_OK
    table = [("ID", "NAME", "CREATED (UTC)", "BY", "LAST USED (UTC)", "REVOKED (UTC)")]
    for t in tokens:
        table.append(
            (
                str(t.id),
                t.name,
                _time(t.created_at),
                t.created_by,
                _time(t.last_used_at),
                _time(t.revoked_at),
            )
        )
    widths = [max(len(row[c]) for row in table) for c in range(len(table[0]))]
    for line in table:
        text = "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True))
        print(_printable(text.rstrip()))
    return EXIT_OK


# --- keys -----------------------------------------------------------------------


def cmd_keys(args: argparse.Namespace) -> int:
    settings = _settings(args, uses=("keys_dir", "key_store", "tokens"))
    if args.action == "migrate":
        return keys_migrate(settings, as_json=args.json)
    if args.action == "reseal":
        return keys_reseal(settings, as_json=args.json)
    from bridge.keys import retire_after_seconds

    with _key_source(settings) as source:
        if args.action == "list":
            return keys_list(source, args.json)
        retire_after = retire_after_seconds(
            settings.tokens.id_token_seconds, settings.tokens.access_token_seconds
        )
        return keys_rotate(
            source,
            args.alg,
            args.immediate,
            retire_after,
            publish_lead_seconds=args.publish_lead,
            as_json=args.json,
        )


@contextlib.contextmanager
def _key_source(settings: Settings) -> Iterator[Path | Vault]:
    """Where the configured keys are: ``keys_dir``, or the database's vault (its
    schema must be current: the commands here change no schema)."""
    if settings.key_store != "database":
        yield settings.keys_dir
        return
    from bridge.app import key_vault

    settings.require("database_url", "kek", "kek_file")
    with _database(settings) as db:
        yield key_vault(settings, db)


@contextlib.contextmanager
def _database(settings: Settings) -> Iterator[Database]:
    """The configured database, at the current schema (else SchemaBehind/Ahead)."""
    from bridge.storage.db import Database

    db = Database(settings.database_url)
    try:
        db.ensure_schema(auto_upgrade=False)
        yield db
    finally:
        db.dispose()


def keys_reseal(settings: Settings, *, as_json: bool = False, out: TextIO | None = None) -> int:
    """``bridge keys reseal``: seal with the KEK every key blob the previous KEK sealed."""
    from bridge.app import key_vault
    from bridge.keys import KeyStore, KeyStoreError, SealedVault

    out = out or sys.stdout
    if settings.key_store != "database":
        return _keys_error('reseal works on the keys in the database: key_store = "database"')
    settings.require("database_url", "kek", "kek_file", "kek_previous", "kek_previous_file")
    try:
        with _database(settings) as db:
            vault = key_vault(settings, db)
            assert isinstance(vault, SealedVault)
            resealed, blobs = vault.reseal()
            KeyStore.open(vault)  # everything opens with the KEK now
    except KeyStoreError as exc:
        return _keys_error(str(exc))
    kek_id = vault.kek.id.hex()
    if as_json:
        summary = {"resealed": resealed, "blobs": blobs, "kek_id": kek_id}
        print(json.dumps(summary, indent=2), file=out)
        return EXIT_OK
    print(
        f"Resealed {resealed} of {blobs} key blob(s) with key-encryption key {kek_id}.\n"
        "Every process opens them with either KEK meanwhile: once all run with the new "
        "one, remove the previous KEK (kek_previous, BRIDGE_KEK_PREVIOUS) everywhere.",
        file=out,
    )
    return EXIT_OK


def keys_migrate(settings: Settings, *, as_json: bool = False, out: TextIO | None = None) -> int:
    """``bridge keys migrate``: copy the keys of ``keys_dir`` into the database, sealed
    with the key-encryption key; idempotent. Then ``key_store = "database"``."""
    from bridge.app import key_vault
    from bridge.keys import KeyStore, KeyStoreError, SealedVault

    out = out or sys.stdout
    settings.require("database_url", "kek", "kek_file")
    if settings.kek is None:
        return _keys_error(
            "set the key-encryption key first: BRIDGE_KEK, or kek_file in bridge.toml "
            "(make one with `openssl rand -base64 32`, and keep it apart from database backups)"
        )
    database_settings = dataclasses.replace(settings, key_store="database")
    try:
        source = KeyStore.open(settings.keys_dir)
        with _database(settings) as db:
            target = key_vault(database_settings, db)
            assert isinstance(target, SealedVault)
            store, copied = source.copy_into(target)
    except KeyStoreError as exc:
        return _keys_error(str(exc))
    infos = store.list_keys()
    summary = {
        "copied": copied,
        "from": str(settings.keys_dir),
        "signing_keys": len(infos),
        "keyring_keys": len(store.keyring_ids()),
        "kek_id": target.kek.id.hex(),
    }
    if as_json:
        print(json.dumps(summary, indent=2), file=out)
        return EXIT_OK
    verb = "Copied" if copied else "Already in the database, nothing copied:"
    print(
        f"{verb} {len(infos)} signing key(s) and the keyring ({summary['keyring_keys']} "
        f"key(s)) from {settings.keys_dir}, sealed with key-encryption key {summary['kek_id']}.\n"
        'Next: set key_store = "database" in bridge.toml and restart every bridge process. '
        f"Keep {settings.keys_dir} as a backup until all of them run on the database.",
        file=out,
    )
    return EXIT_OK


def _keys_error(reason: str) -> int:
    """How ``bridge keys`` has always said it failed: ``error: <reason>`` on stderr."""
    print(f"error: {reason}", file=sys.stderr)
    return EXIT_FAIL


def keys_list(source: Path | Vault, as_json: bool, *, out: TextIO | None = None) -> int:
    """``bridge keys list``: the signing keys and keyring ids as a table or JSON."""
    from bridge.keys import KeyStore, KeyStoreError, human_time

    out = out or sys.stdout
    try:
        store = KeyStore.open(source)
    except KeyStoreError as exc:
        return _keys_error(str(exc))
    now = datetime.now(UTC)
    infos = store.list_keys()
    if as_json:
        payload = {
            "keys": [{**i.to_json(), "in_jwks": i.published(now)} for i in infos],
            "keyring": {"ids": store.keyring_ids(), "encrypts": store.keyring_ids()[-1]},
        }
        print(json.dumps(payload, indent=2), file=out)
        return EXIT_OK
    rows = [("KID", "ALG", "STATE", "CREATED", "ACTIVATED", "RETIRED", "IN JWKS")]
    for i in infos:
        if i.state != "retired":
            in_jwks = "yes"
        elif i.published(now):
            in_jwks = f"until {human_time(i.retire_until)}"
        else:
            in_jwks = "no (expired)"
        rows.append(
            (
                i.kid,
                i.alg,
                i.state,
                human_time(i.created_at),
                human_time(i.activated_at),
                human_time(i.retired_at),
                in_jwks,
            )
        )
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip(), file=out
        )
    ids = store.keyring_ids()
    print(f"\nKeyring: {len(ids)} key(s); {ids[-1]} encrypts, all decrypt.", file=out)
    return EXIT_OK


def keys_rotate(
    source: Path | Vault,
    alg: str,
    immediate: bool,
    retire_after_seconds: int,
    *,
    publish_lead_seconds: int | None = None,
    as_json: bool = False,
    out: TextIO | None = None,
) -> int:
    """``bridge keys rotate``: one rotation step for ``alg`` (see ``KeyStore.rotate``).

    Pass ``retire_after_seconds`` = the longest JWT lifetime in settings plus a
    margin for process reload and clock skew (a few minutes).
    ``publish_lead_seconds`` None keeps the key store's default.
    """
    from bridge.keys import DEFAULT_PUBLISH_LEAD_SECONDS, KeyStore, KeyStoreError, check_alg

    out = out or sys.stdout
    lead = DEFAULT_PUBLISH_LEAD_SECONDS if publish_lead_seconds is None else publish_lead_seconds
    try:
        check_alg(alg)
        store = KeyStore.open(source, publish_lead_seconds=lead)
        result = store.rotate(alg, retire_after_seconds=retire_after_seconds, immediate=immediate)
    except (KeyStoreError, ValueError) as exc:
        return _keys_error(str(exc))
    print(json.dumps(result.to_json(), indent=2) if as_json else result.describe(), file=out)
    return EXIT_OK


# --- parser -------------------------------------------------------------------


def _with_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        default="config",
        metavar="DIR",
        help="configuration folder with bridge.toml and registrations/ (default: ./config)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bridge",
        description="imis-bridge: OpenID Connect and Zendesk sign-in for people in iMIS.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(
        name: str, handler: Callable[[argparse.Namespace], int], help_: str, config: bool = True
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        if config:
            _with_config(p)
        p.set_defaults(handler=handler)
        return p

    p = command("serve", cmd_serve, "run the bridge for real from a configuration folder")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port to bind (default 8000)")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument(
        "--forwarded-allow-ips",
        default="127.0.0.1",
        help="reverse proxies whose X-Forwarded-* headers are trusted",
    )

    p = command(
        "demo", cmd_demo, "run a self-contained demo (simulated iMIS, demo apps)", config=False
    )
    p.add_argument("--port", type=int, default=8000, help="port on 127.0.0.1 (default 8000)")
    p.add_argument(
        "--client-port",
        type=int,
        help="port of the demo OIDC client, on http://localhost (default: --port + 1)",
    )
    p.add_argument("--dir", default=".bridge-demo", help="where the demo keeps its data")

    p = command("check-config", cmd_check_config, "validate the configuration and exit")
    p.add_argument(
        "--database",
        action="store_true",
        help="also check the database schema and stored registrations",
    )

    db = sub.add_parser("db", help="database schema and housekeeping").add_subparsers(
        dest="action", required=True
    )
    p = db.add_parser("upgrade", help="bring the database schema up to date")
    _with_config(p)
    p.set_defaults(handler=cmd_db_upgrade)
    purge_help = "delete expired sessions, sign-in requests, codes, tokens and throttle counters"
    p = db.add_parser("purge", help=purge_help, description=purge_help)
    _with_config(p)
    p.add_argument("--json", action="store_true", help="print the counts as JSON")
    p.set_defaults(handler=cmd_db_purge)

    audit = sub.add_parser("audit", help="the audit trail (who changed what)").add_subparsers(
        dest="action", required=True
    )
    audit_help = "list the newest audit events first"
    p = audit.add_parser("list", help=audit_help, description=audit_help)
    _with_config(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument(
        "--limit", type=_positive, default=100, metavar="N", help="at most N events (default 100)"
    )
    p.set_defaults(handler=cmd_audit_list)

    admin = sub.add_parser("admin", help="the admin JSON API").add_subparsers(
        dest="area", required=True
    )
    tokens = admin.add_parser(
        "token", help="admin API tokens (only their hashes are stored)"
    ).add_subparsers(dest="action", required=True)
    token_help = "create a token; prints it once, alone on the last line"
    p = tokens.add_parser("create", help=token_help, description=token_help)
    _with_config(p)
    p.add_argument("--name", required=True, help="what the token is for (e.g. ci, terraform)")
    p.set_defaults(handler=cmd_admin_token)
    token_help = "list the tokens (never the tokens themselves)"
    p = tokens.add_parser("list", help=token_help, description=token_help)
    _with_config(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=cmd_admin_token)
    token_help = "revoke a token at once"
    p = tokens.add_parser("revoke", help=token_help, description=token_help)
    _with_config(p)
    p.add_argument("token", metavar="ID_OR_NAME", help="the token's id or name (see list)")
    p.set_defaults(handler=cmd_admin_token)

    imis = sub.add_parser("imis", help="iMIS connection").add_subparsers(
        dest="action", required=True
    )
    p = imis.add_parser("check", help="sign the service account in and read a user")
    _with_config(p)
    p.add_argument("--user", help="an iMIS username to read as a test")
    p.set_defaults(handler=cmd_imis_check)

    p = command(
        "imis-simulator", cmd_imis_simulator, "run the iMIS REST simulator alone", config=False
    )
    p.add_argument("--port", type=int, default=8100, help="port on 127.0.0.1 (default 8100)")
    p.add_argument("--people", help="TOML or JSON file of people (default: the demo people)")
    p.add_argument("--latency-ms", type=int, default=0, help="added latency per request")

    regs = sub.add_parser(
        "registrations",
        help="app registrations (files are read-only; add/edit act on the database)",
    ).add_subparsers(dest="action", required=True)
    for action, help_ in (
        ("list", "list every registration"),
        ("show", "show one registration (never its secret)"),
        ("add", "add a stored registration"),
        ("edit", "change a stored registration"),
        ("remove", "remove a stored registration"),
        ("rotate-secret", "new client secret (printed once) or paste a new Zendesk secret"),
    ):
        p = regs.add_parser(action, help=help_, description=help_)
        _with_config(p)
        p.add_argument("--json", action="store_true", help="print JSON")
        p.set_defaults(handler=cmd_registrations)
        if action != "list":
            p.add_argument("slug", help="the registration's slug")
        if action in {"add", "edit"}:
            p.add_argument("--file", help="read settings from a TOML file (registration format)")
            p.add_argument(
                "--set",
                action="append",
                metavar="KEY=VALUE",
                help="set one key; VALUE is TOML (e.g. '[\"https://a/cb\"]') or text",
            )
        if action == "edit":
            p.add_argument("--unset", action="append", metavar="KEY", help="remove one key")
        if action == "add":
            p.add_argument(
                "--public", action="store_true", help="OIDC: a public PKCE client without a secret"
            )
        if action in {"add", "edit", "rotate-secret"}:
            p.add_argument(
                "--secret-stdin",
                action="store_true",
                help="read the client or shared secret from standard input",
            )

    keys = sub.add_parser("keys", help="signing keys").add_subparsers(dest="action", required=True)
    for action, keys_help in (
        ("list", "list signing keys and their state"),
        (
            "migrate",
            "copy the keys of keys_dir into the database, sealed with the key-encryption "
            'key (BRIDGE_KEK or kek_file); then set key_store = "database"',
        ),
        (
            "reseal",
            "seal the keys in the database with the KEK (BRIDGE_KEK) that the previous "
            "one (BRIDGE_KEK_PREVIOUS) sealed: the second step of changing the KEK",
        ),
    ):
        p = keys.add_parser(action, help=keys_help, description=keys_help)
        _with_config(p)
        p.add_argument("--json", action="store_true", help="print JSON")
        p.set_defaults(handler=cmd_keys)
    p = keys.add_parser("rotate", help="publish a new key, then (next run) sign with it")
    _with_config(p)
    p.add_argument(
        "--alg", choices=["RS256", "ES256"], default="RS256", help="key type (default RS256)"
    )
    p.add_argument(
        "--immediate",
        "--now",
        dest="immediate",
        action="store_true",
        help="publish and start signing at once (RPs caching JWKS may lag)",
    )
    p.add_argument(
        "--publish-lead",
        type=int,
        metavar="SECONDS",
        help="how long a new key is published before it may sign: longer than relying "
        "parties cache the JWKS (default 86400)",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=cmd_keys)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # --help exits here, before the heavy imports

    from bridge.keys import KeyStoreError
    from bridge.plugin import ProfileError
    from bridge.storage.db import DatabaseUnavailable, SchemaBehind

    try:
        return int(args.handler(args))
    except ConfigurationError as exc:
        return _print_problems(exc)
    except SchemaBehind:
        return _fail(
            "the database schema is behind this version of imis-bridge: "
            f"run `bridge db upgrade --config {getattr(args, 'config', 'DIR')}`"
        )
    except DatabaseUnavailable as exc:
        return _fail(f"the database cannot be reached: {exc.detail or exc.message}")
    except BridgeError as exc:
        return _fail(exc.message)
    except KeyStoreError as exc:
        return _fail(f"signing keys: {exc}")
    except ProfileError as exc:
        return _fail(f"profiles: {exc}")
    except OSError as exc:
        return _fail(f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": "))
    except KeyboardInterrupt:
        return EXIT_FAIL
