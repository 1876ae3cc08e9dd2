"""No log line of the test run holds a secret (SECURITY D6), checked over the whole suite.

A pytest plugin (registered by tests/conftest.py). For the whole session
a handler on the root logger keeps every record of every logger of the test
process, formatted twice (the text and the JSON formatter of bridge.logs), and
the ``bridge serve`` subprocesses' logs are added when they stop
(:func:`add_log_file`, called by tests/support/process.py). At the end of the
session every line is checked against

- the secrets the tests know: :func:`register` (the helpers and the constants
  call it), and every quoted value given to a name ending in ``password``,
  ``secret`` or ``shared_secret`` in the test sources (:func:`scan_sources`);
- what the bridge handed out in responses: session cookies, codes, access,
  refresh and ID tokens (:func:`register_response`, an httpx event hook of the
  harness's clients, and the sign-in helpers);
- :data:`PATTERNS`: ``Bearer <anything>`` and ``password=``.

A line holding one fails the run (exit status 1) and the summary names it.
The root logger is at DEBUG; libraries' loggers keep the levels ``bridge serve``
gives them (bridge.logs.QUIET), asyncio's is at INFO: the check is of what an
operator's log would hold at its most verbose.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest

from bridge.logs import QUIET, JsonFormatter, RequestIdFilter, TextFormatter

#: Shorter values are too likely to occur by chance (and are no real secret).
MIN_LENGTH = 6
PATTERNS = (re.compile(r"Bearer \S+"), re.compile(r"password=", re.IGNORECASE))
#: A quoted value given to a secret-looking name in a test source.
_ASSIGNED = re.compile(
    r"""\b\w*(?:password|secret)\w*["']?\s*[:=]\s*(?:f?["'])([^"'\s{}$]{6,})["']""",
    re.IGNORECASE,
)
#: What the scan of the sources picks up that is no secret: a username (``MEMBER,
#: PASSWORD = "bsmith", "password1"``), a label, an option's kind, a stored hash
#: stand-in, a secret refused for being too short.
NOT_SECRETS = frozenset({"bsmith", "Password", "encrypt", "hashed", "0123456789"})
#: Runs of characters a token is made of: a token in a line is one of these runs.
_RUNS = (re.compile(r"[A-Za-z0-9_-]+"), re.compile(r"[A-Za-z0-9._~+/=-]+"))
_TOKEN_FIELDS = ("access_token", "refresh_token", "id_token", "code")

#: Secrets the tests chose: found anywhere in a line.
_known: set[str] = set()
#: Random values the bridge handed out: found as a whole token of a line (a set look-up,
#: so thousands of them cost the check little).
_handed_out: set[str] = set()
_files: list[Path] = []


def register(*values: str | None) -> None:
    """Make each value (a password, a client or shared secret) one no log line may hold."""
    _known.update(v for v in values if v and len(v) >= MIN_LENGTH)


def register_token(*values: str | None) -> None:
    """Make each value (a cookie, a code, a token) one no log line may hold."""
    _handed_out.update(v for v in values if v and len(v) >= MIN_LENGTH)


def register_response(response: httpx.Response) -> None:
    """Register what a bridge answer hands out: cookies, a code in a redirect, tokens."""
    for header in response.headers.get_list("set-cookie"):
        register_token(header.split(";", 1)[0].partition("=")[2].strip('"'))
    location = response.headers.get("location")
    if location:
        parts = urlsplit(location)
        for key, value in parse_qsl(parts.query) + parse_qsl(parts.fragment):
            if key in _TOKEN_FIELDS:
                register_token(value)
    if response.headers.get("content-type", "").startswith("application/json"):
        try:
            response.read()
            data = response.json()
        except (ValueError, httpx.HTTPError):
            return
        if isinstance(data, dict):
            register_token(*(v for k in _TOKEN_FIELDS if isinstance(v := data.get(k), str)))


def add_log_file(path: Path) -> None:
    """Check this file's lines too (a subprocess's standard error)."""
    _files.append(path)


def scan_sources(folder: Path) -> None:
    """Register the quoted values the tests give to secret-looking names."""
    for source in folder.rglob("*.py"):
        found = _ASSIGNED.findall(source.read_text(errors="replace"))
        register(*(v for v in found if v not in NOT_SECRETS and "://" not in v))


def leaks(lines: Iterable[str], known: Iterable[str], handed_out: set[str]) -> list[str]:
    """The lines holding a secret (``known``: anywhere; ``handed_out``: as a whole token)
    or matching :data:`PATTERNS`, each with what it holds."""
    known = list(known)
    found: list[str] = []
    for line in lines:
        runs = {run for pattern in _RUNS for run in pattern.findall(line)}
        held = sorted(runs & handed_out) + [s for s in known if s in line]
        held += [m.group(0) for p in PATTERNS if (m := p.search(line))]
        if held:
            found.append(f"{line}\n    holds: {', '.join(held)}")
    return found


class CapturingHandler(logging.Handler):
    """Keeps every record, formatted as text and as JSON."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.addFilter(RequestIdFilter())
        self._text = TextFormatter()
        self._json = JsonFormatter()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(self._text.format(record))
            self.lines.append(self._json.format(record))
        except Exception:
            self.handleError(record)


class LeakCheck:
    """The plugin: installs the handler, checks the lines at the end of the session."""

    def __init__(self) -> None:
        self.handler = CapturingHandler()
        self.found: list[str] = []

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        root = logging.getLogger()
        root.addHandler(self.handler)
        root.setLevel(logging.DEBUG)
        for name, level in QUIET.items():
            logging.getLogger(name).setLevel(level)
        # Every event loop announces its selector at DEBUG: noise in the tests' caplog.
        logging.getLogger("asyncio").setLevel(logging.INFO)
        scan_sources(Path(__file__).parent.parent)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        logging.getLogger().removeHandler(self.handler)
        lines = list(self.handler.lines)
        for path in _files:
            if path.exists():
                lines.extend(path.read_text(errors="replace").splitlines())
        self.found = leaks(lines, _known, _handed_out)
        if self.found and session.exitstatus == 0:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if self.found:
            terminalreporter.section("secrets in log lines (SECURITY D6)", red=True)
            for line in self.found[:50]:
                terminalreporter.line(line)
            terminalreporter.line(f"{len(self.found)} line(s) hold a secret")
