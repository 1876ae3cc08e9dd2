"""Raw HTTP/1.1 over a loopback socket, and Hypothesis strategies for fuzzing the bridge.

httpx (rightly) refuses to send what a fuzzer needs: bytes that are not UTF-8
in a path, a header or a cookie, a ``Content-Length`` that lies, a chunked body
that runs on. :func:`exchange` writes any bytes to the server and reads one
answer with h11 (so a response that never ends, or is not HTTP, fails the test
instead of hanging it); the strategies build those bytes.
"""

from __future__ import annotations

import contextlib
import socket
import string
import time
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

import h11
from hypothesis import strategies as st

#: Every wait on the socket is bounded by this (seconds).
TIMEOUT = 10.0

#: The parameter and field names the public endpoints read (so the fuzzer reaches their
#: checks, not only the "unknown field" path), and a few they must ignore.
PARAMETER_NAMES = (
    "response_type",
    "client_id",
    "client_secret",
    "redirect_uri",
    "scope",
    "state",
    "nonce",
    "code_challenge",
    "code_challenge_method",
    "code_verifier",
    "prompt",
    "max_age",
    "login_hint",
    "id_token_hint",
    "response_mode",
    "request",
    "request_uri",
    "post_logout_redirect_uri",
    "grant_type",
    "code",
    "refresh_token",
    "token",
    "token_type_hint",
    "access_token",
    "username",
    "password",
    "csrf_token",
    "confirm",
    "session",
    "next",
    "return_to",
    "brand_id",
    "locale_id",
    "sso",
    "sig",
    "registration",
    "profile",
    "page",
    "done",
    "name",
    "slug",
    "enabled",
    "secret",
    "alg",
    "immediate",
    "redirect_uris",
    "post_logout_redirect_uris",
    "scopes",
    "subdomain",
    "shared_secret",
    "discourse_url",
    "connect_secret",
    "refuse_shared_email",
    "member_types",
    "claims",
    "actor",
    "action",
    "target",
    "__proto__",
)

#: Values with a meaning somewhere (so a check is reached with a known-good neighbour).
MEANINGFUL_VALUES = (
    "",
    "code",
    "token",
    "id_token",
    "code id_token",
    "none",
    "login",
    "consent",
    "openid",
    "openid profile email phone offline_access",
    "S256",
    "plain",
    "authorization_code",
    "refresh_token",
    "client_credentials",
    "password",
    "access_token",
    "query",
    "fragment",
    "form_post",
    "true",
    "false",
    "0",
    "-1",
    "99999999999999999999999999",
    "\u00b2",  # a digit to str.isdigit(), not to int()
    "\u0663",  # ARABIC-INDIC DIGIT THREE: int() reads it
    "1e309",
    "NaN",
    "https://rp.example.org/cb",
    "https://rp.example.org/cb#frag",
    "http://127.0.0.1/",
    "//evil.example",
    "javascript:alert(1)",
    "/admin",
    "/\\evil.example",
    "oidc",
    "zendesk",
    "discourse",
    "RS256",
    "ES256",
    "fuzz-rp",
    "fuzz-desk",
    "fuzz-forum",
    "../../etc/passwd",
    "%00",
    "\x00",
    "\u202e",
    "\ud7ff\ue000\U0010ffff",
    "a=b&c=d",
    "{}",
    "[]",
    '{"a": 1}',
)

#: Methods a browser or client sends, and some nobody should.
METHODS = (
    b"GET",
    b"GET",
    b"POST",
    b"POST",
    b"HEAD",
    b"PUT",
    b"DELETE",
    b"PATCH",
    b"OPTIONS",
    b"TRACE",
    b"PROPFIND",
    b"FUZZ",
    b"get",
)

CONTENT_TYPES = (
    b"application/x-www-form-urlencoded",
    b"application/x-www-form-urlencoded; charset=utf-8",
    b"application/x-www-form-urlencoded; charset=iso-8859-1",
    b"application/x-www-form-urlencoded; charset=utf-16",
    b"application/x-www-form-urlencoded; charset=",
    b'application/x-www-form-urlencoded;;;charset=="',
    b"APPLICATION/X-WWW-FORM-URLENCODED",
    b"application/x-www-form-urlencoded\xff",
    b"application/json",
    b"application/json; charset=utf-8",
    b"multipart/form-data",
    b"multipart/form-data; boundary=",
    b"multipart/form-data; boundary=xyz",
    b"text/plain",
    b"text/html; charset=\xe9",
    b"*/*",
    b";",
    b"",
    b"\xc3\x28",
)


@dataclass(frozen=True)
class Answer:
    """One response, as h11 read it."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def header_values(self, name: str) -> list[str]:
        """Every value of the header ``name`` (``set-cookie`` comes once per cookie)."""
        wanted = name.lower().encode("ascii")
        return [value.decode("latin-1") for key, value in self.headers if key == wanted]

    def header(self, name: str) -> str:
        """The first value of the header ``name``, or ``""``."""
        return next(iter(self.header_values(name)), "")


class NoAnswer(AssertionError):
    """The server closed the connection (or went silent) without a complete response."""


def request_bytes(
    method: bytes,
    target: bytes,
    host: bytes,
    headers: Sequence[tuple[bytes, bytes]] = (),
    body: bytes | None = None,
    *,
    chunked: bool = False,
) -> bytes:
    """An HTTP/1.1 request, byte for byte as given (``Connection: close`` added).

    ``body`` gets a ``Content-Length`` unless a header of the same name is in
    ``headers`` (a declared length may lie) or ``chunked``, which sends it as one
    chunk with ``Transfer-Encoding: chunked``.
    """
    lines = [method + b" " + target + b" HTTP/1.1", b"host: " + host]
    lines += [name + b": " + value for name, value in headers]
    names = {name.lower() for name, _ in headers}
    payload = b""
    if body is not None:
        if chunked:
            lines.append(b"transfer-encoding: chunked")
            payload = (b"%x\r\n" % len(body) + body + b"\r\n" if body else b"") + b"0\r\n\r\n"
        else:
            if b"content-length" not in names:
                lines.append(b"content-length: %d" % len(body))
            payload = body
    lines.append(b"connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + payload


def exchange(base_url: str, raw: bytes, *, head: bool = False) -> Answer:
    """Send ``raw`` to the server at ``base_url`` and read one response (any status).

    The server may answer before it has read everything (413, 431) and close; a
    write that then fails is not an error as long as the answer arrives.
    Raises :class:`NoAnswer` if none does within :data:`TIMEOUT`.
    """
    parts = urlsplit(base_url)
    address = (parts.hostname or "127.0.0.1", parts.port or 80)
    reader = h11.Connection(h11.CLIENT, max_incomplete_event_size=1 << 20)
    # h11 reads a response only after "its" request: a stand-in with the same method
    # class (a HEAD response has no body).
    reader.send(h11.Request(method="HEAD" if head else "GET", target="/", headers=[("host", "x")]))
    reader.send(h11.EndOfMessage())
    deadline = time.monotonic() + TIMEOUT
    with socket.create_connection(address, timeout=TIMEOUT) as sock:
        # It may answer early and close: the write fails, and the answer is still there.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(raw)
        status = 0
        headers: list[tuple[bytes, bytes]] = []
        body = bytearray()
        while True:
            try:
                event = reader.next_event()
            except h11.RemoteProtocolError as exc:
                raise NoAnswer(f"not an HTTP response: {exc}") from exc
            if event is h11.NEED_DATA:
                if time.monotonic() > deadline:
                    raise NoAnswer(f"no complete answer within {TIMEOUT} s")
                try:
                    data = sock.recv(65536)
                except ConnectionResetError:
                    data = b""
                except TimeoutError:
                    raise NoAnswer(f"no complete answer within {TIMEOUT} s") from None
                reader.receive_data(data)
                continue
            if isinstance(event, h11.Response):
                status = event.status_code
                headers = [(bytes(k), bytes(v)) for k, v in event.headers]
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                return Answer(status, headers, bytes(body))
            elif isinstance(event, h11.ConnectionClosed):
                raise NoAnswer("the connection closed without an answer")


# --- strategies -----------------------------------------------------------------------------------

#: Any Unicode text but lone surrogates (which have no UTF-8 form): control characters,
#: NUL, right-to-left marks, astral planes included.
unicode_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)


@st.composite
def long_text(draw: st.DrawFn) -> str:
    """A value over every limit on one (2048 characters), under the body's: one character
    repeated (cheap to generate)."""
    char = draw(st.sampled_from(["a", "%", "\x00", "é", "&", "="]))
    return char * draw(st.integers(2_049, 4_096))


names = st.one_of(
    st.sampled_from(PARAMETER_NAMES),
    st.sampled_from(PARAMETER_NAMES).map(lambda n: n.upper()),
    unicode_text,
)
short_values = st.one_of(
    st.sampled_from(MEANINGFUL_VALUES),
    unicode_text,
    st.text(string.ascii_letters + string.digits + "-._~", min_size=1, max_size=80),
)


@st.composite
def values(draw: st.DrawFn) -> str:
    """A short value, or one time in ten a long one (a request holds a few pairs)."""
    return draw(long_text() if draw(st.integers(0, 9)) == 0 else short_values)


#: Pairs with repeats: a name drawn twice is a duplicate parameter.
pairs = st.lists(st.tuples(names, values()), max_size=8)


def encode_pairs(found: list[tuple[str, str]], *, raw: bool = False) -> bytes:
    """``a=b&c=d``, percent-encoded (``raw``: only ``&``, ``=``, ``%`` and ``#`` escaped, so
    the rest goes out as UTF-8 bytes, spaces and control characters included)."""
    if raw:
        safe = "".join(chr(i) for i in range(0x20, 0x7F) if chr(i) not in "&=%# ")

        def esc(text: str) -> str:
            return quote(text, safe=safe)

        return "&".join(f"{esc(k)}={esc(v)}" for k, v in found).encode("utf-8")
    return "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in found).encode("ascii")


#: Bytes that are not UTF-8: a lone continuation byte, an overlong form, a truncated
#: sequence, an encoded surrogate, Latin-1, and arbitrary bytes.
BAD_UTF8 = (b"\xff", b"\x80", b"\xc0\xaf", b"\xe2\x82", b"\xed\xa0\x80", b"caf\xe9", b"\xfe\xfe")
bad_utf8 = st.one_of(
    st.sampled_from(BAD_UTF8),
    st.binary(min_size=1, max_size=24).filter(lambda b: not _is_utf8(b)),
)


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def percent_bytes(data: bytes) -> bytes:
    """``data`` with every byte percent-encoded (how bad UTF-8 reaches a query or a form)."""
    return b"".join(b"%%%02X" % byte for byte in data)


#: A cookie or header value as garbage bytes: bad UTF-8, Latin-1, a quote, separators.
garbage_header_value = st.one_of(
    bad_utf8,
    st.binary(max_size=64).map(lambda b: bytes(c for c in b if c not in b"\r\n")),
    st.sampled_from([b"", b'"', b";", b"=", b",", b"\\", b" " * 10, b"\t"]),
    unicode_text.map(lambda t: t.encode("utf-8").replace(b"\r", b"").replace(b"\n", b"")),
)
