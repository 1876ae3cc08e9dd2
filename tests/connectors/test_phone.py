"""E.164 normalisation of iMIS's free-text phone numbers."""

from __future__ import annotations

import logging

import pytest

from bridge.connectors.phone import to_e164


@pytest.mark.parametrize(
    ("raw", "region", "expected"),
    [
        ("(202) 555-0143", "US", "+12025550143"),
        ("202.555.0143 x12", "US", "+12025550143"),
        ("202-555-0143 ext. 7", "us", "+12025550143"),
        ("+44 20 7946 0958", "US", "+442079460958"),
        ("020 7946 0958", "GB", "+442079460958"),
        ("  +1 202 555 0100  ", "US", "+12025550100"),
    ],
)
def test_numbers_become_e164(raw: str, region: str, expected: str) -> None:
    assert to_e164(raw, region) == expected


@pytest.mark.parametrize(
    "raw",
    [None, "", "   ", "n/a", "call me", "+1 555 0100", "555-0143", "12", "(202) 555-01"],
)
def test_unusable_numbers_are_absent(raw: str | None) -> None:
    assert to_e164(raw, "US") is None


def test_rejected_numbers_are_not_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="bridge.imis")
    assert to_e164("+1 555 0199", "US") is None
    assert to_e164("phone: 0199-555-KLMN", "US") is None
    assert caplog.records
    assert "0199" not in caplog.text
