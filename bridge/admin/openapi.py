"""The OpenAPI 3.1 document of the admin JSON API (``/admin/api/openapi.json``).

Built from the installed profiles, so a new profile's registrations are
described without a change here: the body of ``POST /registrations`` is one
schema per profile (``oneOf``, told apart by ``profile``), each made of the
keys every registration has and the profile's own options schema
(:class:`~bridge.schema.OptionField`: a secret is ``writeOnly``). Every
operation lists each status it can answer, errors included, and the bearer
scheme of admin API tokens. This module describes; :mod:`bridge.admin.api`
serves.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bridge.plugin import Profile
from bridge.schema import OptionField

#: Where the API is served.
PREFIX = "/admin/api"
#: Bounds of the audit listing.
AUDIT_MAX_LIMIT = 1000
AUDIT_MAX_OFFSET = 1_000_000_000
#: The same form as :func:`bridge.settings.is_valid_slug`.
SLUG_PATTERN = r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$"
#: Error codes of the ``error`` member, by HTTP status.
ERROR_CODES = {
    400: ("invalid_request", "invalid_registration", "change_refused"),
    401: ("unauthorized", "invalid_token"),
    404: ("not_found",),
    405: ("method_not_allowed",),
    409: ("conflict", "read_only", "unreadable_registration"),
    413: ("payload_too_large",),
    415: ("unsupported_media_type",),
    503: ("unavailable",),
}

#: The keys every registration has, whatever its profile (forms show them first).
COMMON_OPTIONS: tuple[OptionField, ...] = (
    OptionField(
        "name",
        "Name",
        "Shown to people on the sign-in page (at most 200 characters)",
        required=True,
    ),
    OptionField(
        "enabled", "Enabled", "Whether people can sign in to it (default true)", kind="bool"
    ),
)
#: The two tables every registration may have (see the README's registration format).
ACCESS_HELP = (
    "Who may sign in: empty lets everyone with an iMIS account in; imis_ids are always "
    "allowed; anyone else must match every other list given"
)
CLAIMS_HELP = "Claim (or the app's attribute) = iMIS field; a dotted name or a nested table"

_STRING = {"type": "string"}
_NULLABLE_STRING = {"type": ["string", "null"]}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _response(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/responses/{name}"}


def field_schema(spec: OptionField) -> dict[str, Any]:
    """The JSON Schema of one option's value."""
    schema: dict[str, Any]
    if spec.kind == "list":
        schema = {"type": "array", "items": dict(_STRING)}
    elif spec.kind == "bool":
        schema = {"type": "boolean"}
    else:
        schema = dict(_STRING)
    if spec.secret is not None:
        schema["writeOnly"] = True
    schema["title"] = spec.label
    if spec.help:
        schema["description"] = spec.help
    return schema


def _option_description(spec: OptionField) -> dict[str, Any]:
    return {
        "name": spec.name,
        "label": spec.label,
        "help": spec.help,
        "required": spec.required,
        "kind": spec.kind,
        "secret": spec.secret,
    }


def profile_data(profile: Profile) -> dict[str, Any]:
    """What ``GET /profiles`` says of one profile: the source of the admin forms."""
    return {
        "name": profile.name,
        "display_name": profile.display_name,
        "options": [_option_description(f) for f in profile.schema.fields],
    }


def common_options() -> list[dict[str, Any]]:
    """The keys every registration has, as ``GET /profiles`` lists them."""
    return [
        *(_option_description(f) for f in COMMON_OPTIONS),
        {
            "name": "access",
            "label": "Access rule",
            "help": ACCESS_HELP,
            "required": False,
            "kind": "table",
            "secret": None,
        },
        {
            "name": "claims",
            "label": "Claim mapping",
            "help": CLAIMS_HELP,
            "required": False,
            "kind": "table",
            "secret": None,
        },
    ]


def _access_schema() -> dict[str, Any]:
    entry = {"oneOf": [{"type": "string", "pattern": r"\S"}, {"type": "integer"}]}
    listed = {"type": "array", "minItems": 1, "items": entry}
    return {
        "type": "object",
        "description": ACCESS_HELP,
        "properties": {
            "member_types": {**listed, "description": "iMIS member types (e.g. REG)"},
            "statuses": {**listed, "description": "iMIS status ids or names"},
            "organizations": {**listed, "description": "organization ids or names"},
            "imis_ids": {**listed, "description": "iMIS IDs always allowed"},
            "message": {
                "type": "string",
                "pattern": r"\S",
                "description": "what a refused person reads",
            },
        },
        "additionalProperties": False,
    }


def _claims_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "description": CLAIMS_HELP,
        "additionalProperties": {"oneOf": [{"type": "string"}, {"type": "object"}]},
    }


def _registration_properties(profile: Profile, *, changes: bool) -> dict[str, Any]:
    def value(schema: Mapping[str, Any]) -> dict[str, Any]:
        if not changes:
            return dict(schema)
        # A change: null removes the key (the registration is validated again).
        return {"oneOf": [dict(schema), {"type": "null"}]}

    props: dict[str, Any] = {}
    if not changes:
        props["slug"] = {
            "type": "string",
            "pattern": SLUG_PATTERN,
            "description": "Its address: lowercase letters, digits and '-' (at most 63)",
        }
        props["profile"] = {"const": profile.name, "description": profile.display_name}
    for spec in COMMON_OPTIONS:
        props[spec.name] = value(field_schema(spec))
    props["access"] = value(_access_schema())
    props["claims"] = value(_claims_schema())
    for spec in profile.schema.fields:
        props[spec.name] = value(field_schema(spec))
    hashed = profile.schema.secret("hash")
    if hashed is not None and not changes:
        props["public"] = {
            "type": "boolean",
            "description": f"No {hashed.name}: a public client (PKCE only); default false",
        }
    return props


def new_registration_schema(profile: Profile) -> dict[str, Any]:
    """The body that adds a registration of ``profile``."""
    required = ["slug", "profile", "name"]
    required += [
        f.name for f in profile.schema.fields if f.required and f.secret != "hash"
    ]  # a secret the bridge only verifies is generated when not given
    hashed = profile.schema.secret("hash")
    note = (
        f" Without {hashed.name} (and without public), the bridge generates one and "
        "returns it once as generated_secret."
        if hashed is not None
        else ""
    )
    return {
        "type": "object",
        "title": f"New {profile.display_name} registration",
        "description": f"A registration of profile {profile.name!r}.{note}",
        "properties": _registration_properties(profile, changes=False),
        "required": required,
        "additionalProperties": False,
    }


def registration_changes_schema(profile: Profile) -> dict[str, Any]:
    """The body that changes a registration of ``profile``: the keys given replace
    the stored ones (a table as a whole), null removes one."""
    secret = profile.schema.secret()
    note = (
        f" {secret.name} is write-only: leave it out to keep the stored one."
        if secret is not None
        else ""
    )
    return {
        "type": "object",
        "title": f"Changes to a {profile.display_name} registration",
        "description": "Given keys replace the stored ones; null removes one." + note,
        "properties": _registration_properties(profile, changes=True),
        "additionalProperties": False,
    }


def _error_schema() -> dict[str, Any]:
    codes = sorted({code for group in ERROR_CODES.values() for code in group})
    return {
        "type": "object",
        "required": ["error", "message"],
        "properties": {
            "error": {"type": "string", "enum": codes},
            "message": {"type": "string", "description": "for a person to read"},
            "problems": {
                "type": "array",
                "description": "invalid_registration: each key refused and why",
                "items": {
                    "type": "object",
                    "required": ["key", "reason"],
                    "properties": {"key": _STRING, "reason": _STRING},
                },
            },
            "reason": {
                "type": "string",
                "description": "change_refused: public, no_secret, secret_from_app, public_client",
            },
        },
    }


def _registration_schema(profiles: Mapping[str, Profile]) -> dict[str, Any]:
    return {
        "type": "object",
        "description": (
            "A registration as stored and shown: its common keys, its profile's options "
            "(never a secret: a profile says whether one is set, e.g. client_type, "
            "shared_secret_set) and the endpoints its profile publishes for it."
        ),
        "required": ["slug", "name", "profile", "enabled", "source", "endpoints"],
        "properties": {
            "slug": _STRING,
            "name": _STRING,
            "profile": {"type": "string", "enum": sorted(profiles)},
            "enabled": {"type": "boolean"},
            "source": {"enum": ["file", "database"]},
            "file": {"type": "string", "description": "a file registration's file (read-only)"},
            "access": {"type": "object"},
            "claims": {"type": "object"},
            "endpoints": {"type": "array", "items": _ref("Endpoint")},
        },
        "additionalProperties": True,
    }


def _schemas(profiles: Mapping[str, Profile]) -> dict[str, Any]:
    option = {
        "type": "object",
        "required": ["name", "label", "help", "required", "kind", "secret"],
        "properties": {
            "name": _STRING,
            "label": _STRING,
            "help": _STRING,
            "required": {"type": "boolean"},
            "kind": {"enum": ["text", "list", "bool", "secret", "table"]},
            "secret": {"enum": ["hash", "encrypt", None]},
        },
    }
    schemas: dict[str, Any] = {
        "Error": _error_schema(),
        "Endpoint": {
            "type": "object",
            "required": ["label", "url"],
            "properties": {"label": _STRING, "url": _STRING},
        },
        "Registration": _registration_schema(profiles),
        "RegistrationList": {
            "type": "object",
            "required": ["registrations", "unreadable"],
            "properties": {
                "registrations": {"type": "array", "items": _ref("Registration")},
                "unreadable": {
                    "type": "array",
                    "items": _STRING,
                    "description": "stored registrations that cannot be read, and why",
                },
            },
        },
        "RegistrationResult": {
            "type": "object",
            "required": ["registration"],
            "properties": {
                "registration": _ref("Registration"),
                "generated_secret": {
                    "type": "string",
                    "description": "a secret the bridge generated: shown this once only",
                },
                "secret_field": {
                    "type": "string",
                    "description": "the option generated_secret is (e.g. client_secret)",
                },
            },
        },
        "RotateSecret": {
            "type": "object",
            "properties": {
                "secret": {
                    "type": "string",
                    "writeOnly": True,
                    "description": (
                        "The new secret. Required for a secret that comes from the app's "
                        "side (a Zendesk shared secret); left out, a secret the bridge "
                        "only verifies (a client secret) is generated and returned once."
                    ),
                },
            },
            "additionalProperties": False,
        },
        "Option": option,
        "Profile": {
            "type": "object",
            "required": ["name", "display_name", "options"],
            "properties": {
                "name": _STRING,
                "display_name": _STRING,
                "options": {"type": "array", "items": _ref("Option")},
            },
        },
        "ProfileList": {
            "type": "object",
            "required": ["profiles", "common_options"],
            "properties": {
                "profiles": {"type": "array", "items": _ref("Profile")},
                "common_options": {"type": "array", "items": _ref("Option")},
            },
        },
        "AuditEvent": {
            "type": "object",
            "required": ["id", "at", "time", "actor", "action", "target", "detail", "ip"],
            "properties": {
                "id": {"type": "integer"},
                "at": {"type": "integer", "description": "Unix seconds"},
                "time": {"type": "string", "format": "date-time"},
                "actor": {"type": "string", "description": "cli:USER, api:TOKEN NAME, ..."},
                "action": _STRING,
                "target": _STRING,
                "detail": {"type": "object", "description": "never a secret value"},
                "ip": _NULLABLE_STRING,
            },
        },
        "AuditList": {
            "type": "object",
            "required": ["events", "limit", "offset"],
            "properties": {
                "events": {"type": "array", "items": _ref("AuditEvent")},
                "limit": {"type": "integer"},
                "offset": {"type": "integer"},
            },
        },
        "SigningKey": {
            "type": "object",
            "required": [
                "kid",
                "alg",
                "state",
                "created_at",
                "activated_at",
                "retired_at",
                "retire_until",
                "in_jwks",
            ],
            "properties": {
                "kid": _STRING,
                "alg": _STRING,
                "state": {"enum": ["next", "current", "retired"]},
                "created_at": {"type": "string", "format": "date-time"},
                "activated_at": _NULLABLE_STRING,
                "retired_at": _NULLABLE_STRING,
                "retire_until": _NULLABLE_STRING,
                "in_jwks": {"type": "boolean"},
            },
        },
        "KeyList": {
            "type": "object",
            "required": ["keys", "keyring"],
            "properties": {
                "keys": {"type": "array", "items": _ref("SigningKey")},
                "keyring": {
                    "type": "object",
                    "required": ["ids", "encrypts"],
                    "properties": {
                        "ids": {"type": "array", "items": _STRING},
                        "encrypts": _STRING,
                    },
                },
            },
        },
        "SignInSeries": {
            "type": "object",
            "required": ["title", "step_seconds", "totals", "buckets"],
            "properties": {
                "title": _STRING,
                "step_seconds": {"type": "integer"},
                "totals": {"type": "object", "additionalProperties": {"type": "integer"}},
                "buckets": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["start", "counts"],
                        "properties": {
                            "start": {"type": "integer"},
                            "counts": {
                                "type": "object",
                                "additionalProperties": {"type": "integer"},
                            },
                        },
                    },
                },
            },
        },
        "SignInStats": {
            "type": "object",
            "required": ["registration", "now", "hours", "days"],
            "properties": {
                "registration": {"type": ["string", "null"]},
                "now": {"type": "integer"},
                "hours": _ref("SignInSeries"),
                "days": _ref("SignInSeries"),
            },
        },
    }
    new = []
    changes = []
    for name, profile in profiles.items():
        schemas[f"New_{name}"] = new_registration_schema(profile)
        schemas[f"Changes_{name}"] = registration_changes_schema(profile)
        new.append(_ref(f"New_{name}"))
        changes.append(_ref(f"Changes_{name}"))
    schemas["NewRegistration"] = {
        "oneOf": new,
        "discriminator": {
            "propertyName": "profile",
            "mapping": {name: f"#/components/schemas/New_{name}" for name in profiles},
        },
    }
    # Which profile a change is for is the stored registration's: any one fits.
    schemas["RegistrationChanges"] = {"anyOf": changes}
    return schemas


def _error_response(description: str, *, headers: Mapping[str, Any] | None = None) -> Any:
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": _ref("Error")}},
    }
    if headers:
        response["headers"] = dict(headers)
    return response


def _responses() -> dict[str, Any]:
    return {
        "BadRequest": _error_response(
            "Refused: bad JSON, a wrong type, an unknown field or parameter, or a "
            "registration its profile refuses (the registry's messages)"
        ),
        "Unauthorized": _error_response(
            "No admin API token, or one that is unknown or revoked",
            headers={
                "WWW-Authenticate": {"required": True, "schema": {"type": "string"}},
            },
        ),
        "NotFound": _error_response("No such registration"),
        "Conflict": _error_response(
            "The slug or client_id is taken, the registration comes from a (read-only) "
            "file, or a stored one cannot be read"
        ),
        "PayloadTooLarge": _error_response("The body is over 64 KiB"),
        "UnsupportedMediaType": _error_response("The body is not application/json (UTF-8)"),
        "Unavailable": _error_response(
            "The database cannot answer right now",
            headers={"Retry-After": {"required": True, "schema": {"type": "string"}}},
        ),
    }


def _json_body(schema: Mapping[str, Any], *, required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": dict(schema)}}}


def _ok(description: str, schema: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(schema)}}}


def _errors(*statuses: int) -> dict[str, Any]:
    names = {
        400: "BadRequest",
        401: "Unauthorized",
        404: "NotFound",
        409: "Conflict",
        413: "PayloadTooLarge",
        415: "UnsupportedMediaType",
        503: "Unavailable",
    }
    return {str(s): _response(names[s]) for s in (*statuses, 401, 503)}


_SLUG_PARAMETER = {
    "name": "slug",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "The registration's slug",
}
#: What every operation that takes a JSON body may also answer.
_BODY_ERRORS = (400, 413, 415)


def _paths() -> dict[str, Any]:
    registration_ok = _ok("The registration", "RegistrationResult")
    audit_filters = [
        {
            "name": name,
            "in": "query",
            "required": False,
            "schema": {"type": "string"},
            "description": f"only events whose {name} is exactly this",
        }
        for name in ("actor", "action", "target")
    ]
    return {
        "/registrations": {
            "get": {
                "operationId": "listRegistrations",
                "summary": "Every registration, from files and the database (no secret)",
                "responses": {"200": _ok("The registrations", "RegistrationList"), **_errors(400)},
            },
            "post": {
                "operationId": "addRegistration",
                "summary": "Add a stored registration (validated by its profile, audited)",
                "requestBody": _json_body(_ref("NewRegistration")),
                "responses": {
                    "201": {
                        **_ok(
                            "Added; a generated secret is in this answer only", "RegistrationResult"
                        ),
                        "headers": {
                            "Location": {"required": True, "schema": {"type": "string"}},
                        },
                    },
                    **_errors(*_BODY_ERRORS, 409),
                },
            },
        },
        "/registrations/{slug}": {
            "parameters": [_SLUG_PARAMETER],
            "get": {
                "operationId": "getRegistration",
                "summary": "One registration and its endpoints (no secret)",
                "responses": {"200": registration_ok, **_errors(400, 404, 409)},
            },
            "patch": {
                "operationId": "editRegistration",
                "summary": "Change a stored registration (validated again, audited)",
                "requestBody": _json_body(_ref("RegistrationChanges")),
                "responses": {"200": registration_ok, **_errors(*_BODY_ERRORS, 404, 409)},
            },
            "delete": {
                "operationId": "removeRegistration",
                "summary": "Remove a stored registration (audited)",
                "responses": {"204": {"description": "Removed"}, **_errors(400, 404, 409)},
            },
        },
        "/registrations/{slug}/rotate-secret": {
            "parameters": [_SLUG_PARAMETER],
            "post": {
                "operationId": "rotateSecret",
                "summary": "A new secret: generated (returned once) or given (audited)",
                "requestBody": _json_body(_ref("RotateSecret"), required=False),
                "responses": {"200": registration_ok, **_errors(*_BODY_ERRORS, 404, 409)},
            },
        },
        "/registrations/{slug}/enable": {
            "parameters": [_SLUG_PARAMETER],
            "post": {
                "operationId": "enableRegistration",
                "summary": "Let people sign in to it again (audited)",
                "responses": {"200": registration_ok, **_errors(400, 404, 409)},
            },
        },
        "/registrations/{slug}/disable": {
            "parameters": [_SLUG_PARAMETER],
            "post": {
                "operationId": "disableRegistration",
                "summary": "Stop sign-ins to it, keeping its settings (audited)",
                "responses": {"200": registration_ok, **_errors(400, 404, 409)},
            },
        },
        "/profiles": {
            "get": {
                "operationId": "listProfiles",
                "summary": "The installed profiles and their options (the forms' source)",
                "responses": {"200": _ok("The profiles", "ProfileList"), **_errors(400)},
            },
        },
        "/audit": {
            "get": {
                "operationId": "listAudit",
                "summary": "The audit trail, newest first",
                "parameters": [
                    *audit_filters,
                    {
                        "name": "limit",
                        "in": "query",
                        "required": False,
                        "schema": {
                            "type": "integer",
                            "minimum": 1,
                            "maximum": AUDIT_MAX_LIMIT,
                            "default": 100,
                        },
                    },
                    {
                        "name": "offset",
                        "in": "query",
                        "required": False,
                        "schema": {
                            "type": "integer",
                            "minimum": 0,
                            "maximum": AUDIT_MAX_OFFSET,
                            "default": 0,
                        },
                    },
                ],
                "responses": {"200": _ok("The events", "AuditList"), **_errors(400)},
            },
        },
        "/keys": {
            "get": {
                "operationId": "listKeys",
                "summary": "The signing keys' state and dates, and the keyring's ids",
                "responses": {"200": _ok("The keys", "KeyList"), **_errors(400)},
            },
        },
        "/stats": {
            "get": {
                "operationId": "signInStats",
                "summary": "Sign-ins by outcome: the last 24 hours by hour, 30 days by UTC day",
                "parameters": [
                    {
                        "name": "registration",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string", "maxLength": 63},
                        "description": "a registration's slug, or - for the bridge's own "
                        "sign-in page; all registrations together when left out",
                    }
                ],
                "responses": {"200": _ok("The counts", "SignInStats"), **_errors(400)},
            },
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document (no token needed)",
                "security": [],
                "responses": {
                    "200": {
                        "description": "The OpenAPI document",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    },
                },
            },
        },
    }


def document(profiles: Mapping[str, Profile], issuer: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the API served under ``issuer`` with ``profiles``."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "imis-bridge admin API",
            "version": "1",
            "description": (
                "App registrations, the installed profiles, the audit trail and the signing "
                "keys. Every request but this document's needs an admin API token "
                "(`bridge admin token create --name NAME`) as `Authorization: Bearer bat_…`. "
                "Every change goes through the same validation as the CLI and the admin "
                "pages and is audited as api:<token name>. A stored secret is never "
                "returned; a secret the bridge generates is returned once."
            ),
        },
        "servers": [{"url": issuer.rstrip("/") + PREFIX}],
        "security": [{"adminToken": []}],
        "paths": _paths(),
        "components": {
            "securitySchemes": {
                "adminToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "bat_ and 43 base64url characters",
                    "description": "An admin API token (`bridge admin token create`)",
                },
            },
            "schemas": _schemas(profiles),
            "responses": _responses(),
        },
    }
