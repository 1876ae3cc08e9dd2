"""Every security case id cited in tests/ resolves to an entry in docs/security.md.

Test names cite cases as ``test_b4_...`` (several: ``test_b3_g5_...``); docstrings
and comments as ``SECURITY D3``, ``SECURITY B3, G5``, ``SECURITY E1-E6`` or a
parenthesised list such as ``(B1)`` or ``(A1-A6, B1-B5)``. Each id must have a
``**ID: ...**`` entry in the document, so that an id read in the code can be
looked up in the repository.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "security.md"
TESTS = ROOT / "tests"

#: One case id: a section letter A-G and a case number 1-9, not part of a longer word.
_ID = r"(?<![A-Za-z0-9_])[A-G][1-9](?![A-Za-z0-9_])"
#: An id or a range of ids within one section: ``E1``, ``E1-E6`` (also with an en dash).
_ITEM = rf"{_ID}(?:\s*[-\u2013]\s*{_ID})?"
#: A list of items: ``B3, G5``, ``D1-D6 and G1``.
_LIST = rf"{_ITEM}(?:\s*(?:,|\band\b)\s*{_ITEM})*"

#: ``def test_a1_...`` and ``def test_b3_g5_...``: the run of ids right after ``test_``.
_TEST_NAME = re.compile(r"\bdef test_((?:[a-g][1-9]_)+)")
#: ``SECURITY D3``, ``SECURITY.md (A1-A6, B1-B5)``, ``SECURITY\nD1-D6 and G1``.
_AFTER_SECURITY = re.compile(rf"\bSECURITY(?:\.md)?\s*\(?\s*({_LIST})")
#: ``(B1)``, ``(B3, G5)``: a parenthesised group that holds ids and nothing else.
_PARENTHESISED = re.compile(rf"\(\s*({_LIST})\s*\)")
#: A documented entry: ``**D3: throttling without lockout.**`` at the start of a line.
_ENTRY = re.compile(r"^\*\*([A-G][1-9]):", re.MULTILINE)


def _expand(listed: str) -> set[str]:
    """``"A1-A4, A6"`` -> ``{"A1", "A2", "A3", "A4", "A6"}``."""
    found: set[str] = set()
    for item in re.findall(_ITEM, listed):
        ends = re.findall(_ID, item)
        if len(ends) == 1:
            found.add(ends[0])
            continue
        first, last = ends
        assert first[0] == last[0], f"a range crosses sections: {item!r}"
        found.update(f"{first[0]}{n}" for n in range(int(first[1]), int(last[1]) + 1))
    return found


def cited_ids(text: str) -> set[str]:
    """Every case id that ``text`` (the source of a test module) cites."""
    found: set[str] = set()
    for run in _TEST_NAME.findall(text):
        found.update(part.upper() for part in run.split("_") if part)
    for pattern in (_AFTER_SECURITY, _PARENTHESISED):
        for listed in pattern.findall(text):
            found |= _expand(listed)
    return found


def documented_ids() -> set[str]:
    return set(_ENTRY.findall(DOC.read_text(encoding="utf-8")))


def test_the_collector_reads_every_citation_form_and_nothing_else() -> None:
    text = '''
    def test_a1_exact_match() -> None: ...
    def test_b3_g5_bad_basic_header() -> None: ...
    """Refresh rotation (SECURITY B4), over real HTTP."""
    """Covers SECURITY\n    D1-D6 and G1 for /login."""
    """The OIDC cases of SECURITY.md (A1-A3, C1-C2)."""
    """Covers SECURITY E5-E6 and the remote logout."""
    # at_hash (C3) and the per-code locks (F4)
    _PURGE_LOCK_ID = 0x1B41D6F  # hex is not an id
    digest = "deadbeefa1c2"; colour = "#E1E1E1"; ("AB1", "A12", "(A0)", "(H1)")
    def test_helper_a1_is_not_a_citation() -> None: ...
    SECURITY_HEADERS = ()  # neither is a constant's name
    '''
    assert cited_ids(text) == {
        *("A1", "B3", "G5", "B4", "A2", "A3", "C1", "C2", "E5", "E6", "C3", "F4"),
        *("D1", "D2", "D3", "D4", "D5", "D6", "G1"),
    }


def test_every_case_cited_in_the_tests_has_an_entry_in_docs_security_md() -> None:
    citations: dict[str, list[str]] = {}
    for path in sorted(TESTS.rglob("*.py")):
        if path == Path(__file__).resolve():
            continue  # its own examples are not citations
        for case in cited_ids(path.read_text(encoding="utf-8")):
            citations.setdefault(case, []).append(str(path.relative_to(ROOT)))
    assert {"A1", "B4", "D3", "G5"} <= set(citations), "the collector finds nothing: check it"
    missing = {case: files for case, files in citations.items() if case not in documented_ids()}
    assert not missing, f"cited in tests but without an entry in docs/security.md: {missing}"
