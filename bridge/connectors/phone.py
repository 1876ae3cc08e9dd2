"""Phone numbers from iMIS's free-text fields, normalised to E.164.

This module owns turning whatever a member typed into iMIS ("(202) 555-0143",
"202.555.0143 x12", "+44 20 7946 0958") into one canonical E.164 string, or
None when it is not a valid number. It must not log the number itself (it is
personal data) and must not guess: anything ``phonenumbers`` does not accept
as a valid number for the region is treated as absent.
"""

from __future__ import annotations

import logging

import phonenumbers

log = logging.getLogger("bridge.imis")


def to_e164(raw: str | None, region: str) -> str | None:
    """``raw`` as E.164 (``+12025550143``), extensions dropped; None if not a valid number.

    ``region`` (ISO 3166 alpha-2, e.g. ``US``) is used for numbers written
    without a leading ``+country`` code.
    """
    if raw is None or not raw.strip():
        return None
    try:
        number = phonenumbers.parse(raw, region.upper())
    except phonenumbers.NumberParseException as exc:
        log.debug("phone number not parseable (region %s, reason %s)", region, exc.error_type)
        return None
    if not phonenumbers.is_valid_number(number):
        log.debug("phone number not valid (region %s)", region)
        return None
    e164: str = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return e164
