"""The project's own metadata: what pip reads from pyproject.toml when it builds the bridge."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).parent.parent / "pyproject.toml"


def test_license_is_an_spdx_expression_that_the_required_setuptools_reads() -> None:
    """A TOML table for project.license is deprecated (setuptools warns on every build);
    a PEP 639 SPDX string needs setuptools 77 or newer."""
    data = tomllib.loads(PYPROJECT.read_text())
    license_ = data["project"]["license"]
    assert isinstance(license_, str)
    assert re.fullmatch(r"LicenseRef-[A-Za-z0-9.-]+|[A-Za-z0-9.+-]+", license_)
    [setuptools] = [r for r in data["build-system"]["requires"] if r.startswith("setuptools")]
    minimum = re.fullmatch(r"setuptools>=(\d+)(?:\.\d+)*", setuptools)
    assert minimum is not None, setuptools
    assert int(minimum.group(1)) >= 77
    # A license classifier next to an SPDX expression is an error for setuptools >= 77.
    assert not any(c.startswith("License ::") for c in data["project"].get("classifiers", []))
