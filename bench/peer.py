"""The benchmark peer: panva's oidc-provider (npm, major 9), installed, started, prepared.

``install`` puts oidc-provider into ``bench/peer/`` (git-ignored, never committed)
with ``peer_server.mjs`` beside it; ``start`` runs that one Node process on
loopback; ``prepare`` signs in once over real HTTP and returns the
:class:`~bench.target.Target` the load generator drives: a live session cookie
(authorize answers with a code, no interaction), refresh tokens to start
rotation chains from, and an access token to introspect.

The peer's storage is memory (a plain ``Map`` adapter, see peer_server.mjs); its
access and refresh tokens are opaque, as the bridge's are.

``python -m bench.peer`` is the self-test: install, start, prepare, then one full
flow (authorize with the cookie -> token with client_secret_basic and the PKCE
verifier -> userinfo), one refresh with rotation and one introspection.
"""

from __future__ import annotations

import base64
import collections
import hashlib
import json
import os
import queue
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx
import jwt

from bench.target import Target

HERE = Path(__file__).resolve().parent
DEFAULT_DEST = HERE / "peer"
SERVER_SOURCE = HERE / "peer_server.mjs"
#: The npm range installed; the exact version is read back by installed_version().
VERSION_RANGE = "^9"

CLIENT_ID = "bench-peer"
#: A loopback-only benchmark client: its secret need not be secret.
CLIENT_SECRET = "bench-peer-secret-0123456789abcdef"
SCOPE = "openid profile email phone"
#: The names of the provider's session cookies (path /); the interaction
#: cookies (paths /interaction/<uid> and /auth/<uid>) are not kept.
SESSION_COOKIES = ("_session", "_session.sig")
STORAGE = "memory (Map adapter)"


class PeerError(RuntimeError):
    """The peer could not be installed, started or prepared."""


# --- install -------------------------------------------------------------------------


def _package_json() -> str:
    package = {
        "name": "imis-bridge-bench-peer",
        "private": True,
        "type": "module",
        "description": "panva oidc-provider as the benchmark peer (installed by bench/peer.py)",
        "dependencies": {"oidc-provider": VERSION_RANGE},
    }
    return json.dumps(package, indent=2) + "\n"


def installed_version(dest: Path = DEFAULT_DEST) -> str:
    """The exact oidc-provider version installed in ``dest`` (PeerError when none is)."""
    manifest = dest / "node_modules" / "oidc-provider" / "package.json"
    try:
        version = json.loads(manifest.read_text())["version"]
    except (OSError, ValueError, KeyError) as exc:
        raise PeerError(f"oidc-provider is not installed in {dest}: {exc}") from exc
    return str(version)


def _up_to_date(dest: Path, package_json: str) -> bool:
    try:
        if (dest / "package.json").read_text() != package_json:
            return False
        return installed_version(dest).split(".")[0] == VERSION_RANGE.lstrip("^")
    except (OSError, PeerError):
        return False


def install(dest: Path = DEFAULT_DEST) -> None:
    """Install oidc-provider into ``dest`` (npm, only when missing or outdated) with the server."""
    npm = shutil.which("npm")
    if npm is None:
        raise PeerError("npm is not on PATH: the peer (oidc-provider) needs Node.js and npm")
    dest.mkdir(parents=True, exist_ok=True)
    package_json = _package_json()
    if not _up_to_date(dest, package_json):
        (dest / "package.json").write_text(package_json)
        done = subprocess.run(
            [npm, "install", "--no-audit", "--no-fund"],
            cwd=dest,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise PeerError(f"npm install failed in {dest}:\n{done.stdout}\n{done.stderr}")
        installed_version(dest)  # raises when npm said yes and installed nothing
    # ES modules resolve imports next to the file, not through NODE_PATH: the
    # server runs from beside its node_modules.
    shutil.copyfile(SERVER_SOURCE, dest / SERVER_SOURCE.name)


# --- start / stop --------------------------------------------------------------------


def _drain(stream: IO[str], lines: queue.Queue[str] | None, keep: collections.deque[str]) -> None:
    """Read a pipe of the peer to its end (so it never blocks on a full pipe)."""
    for line in stream:
        keep.append(line)
        if lines is not None:
            lines.put(line)
    if lines is not None:
        lines.put("")  # end of stream


def start(
    port: int, redirect_uri: str, *, dest: Path = DEFAULT_DEST, timeout: float = 30.0
) -> subprocess.Popen[str]:
    """Start the peer on 127.0.0.1:``port`` and return once it prints "ready"."""
    node = shutil.which("node")
    if node is None:
        raise PeerError("node is not on PATH: the peer (oidc-provider) needs Node.js")
    server = dest / SERVER_SOURCE.name
    if not server.exists():
        raise PeerError(f"{server} is missing: run bench.peer.install() first")
    env = {
        **os.environ,
        "NODE_ENV": "production",
        "PEER_CLIENT_ID": CLIENT_ID,
        "PEER_CLIENT_SECRET": CLIENT_SECRET,
    }
    proc = subprocess.Popen(
        [node, str(server), str(port), redirect_uri],
        cwd=dest,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    lines: queue.Queue[str] = queue.Queue()
    out: collections.deque[str] = collections.deque(maxlen=50)
    err: collections.deque[str] = collections.deque(maxlen=50)
    readers = [
        threading.Thread(target=_drain, args=(proc.stdout, lines, out), daemon=True),
        threading.Thread(target=_drain, args=(proc.stderr, None, err), daemon=True),
    ]
    for reader in readers:
        reader.start()
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        try:
            line = lines.get(timeout=max(left, 0.01)) if left > 0 else None
        except queue.Empty:
            line = None
        if line is not None and line.strip() == "ready":
            return proc
        if line is None or line == "":  # timed out, or the peer closed stdout (exited)
            why = "exited" if proc.poll() is not None else f"did not say ready in {timeout:.0f} s"
            stop(proc)
            readers[1].join(timeout=2)
            raise PeerError(
                f"the peer (oidc-provider) {why} (exit code {proc.returncode}); "
                f"stderr:\n{''.join(err)}stdout:\n{''.join(out)}"
            )


def stop(proc: subprocess.Popen[str]) -> None:
    """Stop the peer: SIGTERM, then SIGKILL after 5 seconds."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --- prepare -------------------------------------------------------------------------


def pkce_pair() -> tuple[str, str]:
    """A PKCE verifier and its S256 challenge."""
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _authorize(
    http: httpx.Client,
    authorize_url: str,
    redirect_uri: str,
    scope: str,
    challenge: str,
    extra: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[str, int]:
    """Follow authorize (and any interaction) to the redirect_uri: (code, redirects seen)."""
    params = {
        "response_type": "code",
        "client_id": CLIENT_ID,
        "redirect_uri": redirect_uri,
        "scope": scope,
        "state": secrets.token_urlsafe(12),
        "nonce": secrets.token_urlsafe(12),
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        **(extra or {}),
    }
    response = http.get(authorize_url, params=params, headers=headers)
    for hop in range(1, 11):
        location = response.headers.get("location")
        if response.status_code not in (302, 303) or not location:
            raise PeerError(
                f"authorize: expected a redirect, got {response.status_code}: {response.text[:500]}"
            )
        if location.startswith(redirect_uri):
            query = parse_qs(urlsplit(location).query)
            if "code" not in query:
                raise PeerError(f"authorize answered without a code: {location}")
            if query.get("state") != [params["state"]]:
                raise PeerError(f"authorize answered another state: {location}")
            return query["code"][0], hop
        response = http.get(urljoin(str(response.url), location), headers=headers)
    raise PeerError("authorize: more than 10 redirects")


def redeem(
    http: httpx.Client, token_url: str, code: str, verifier: str, redirect_uri: str
) -> dict[str, Any]:
    """The token response for ``code`` (client_secret_basic, PKCE verifier)."""
    response = http.post(
        token_url,
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": verifier,
        },
        auth=(CLIENT_ID, CLIENT_SECRET),
    )
    if response.status_code != 200:
        raise PeerError(f"token: {response.status_code} {response.text[:500]}")
    body: dict[str, Any] = response.json()
    return body


def prepare(
    proc: subprocess.Popen[str],
    port: int,
    redirect_uri: str,
    refresh_chains: int,
    *,
    dest: Path = DEFAULT_DEST,
) -> Target:
    """Sign in once and collect what the measured window needs.

    1. An interactive sign-in: authorize -> /interaction/<uid> (the fixed member
       is signed in and granted the scopes) -> /auth/<uid> -> a code. The
       provider's session cookies (``_session``, ``_session.sig``) are kept.
    2. ``refresh_chains`` code flows with ``offline_access``, each with
       ``prompt=consent`` (oidc-provider drops offline_access otherwise), so
       each goes through the interaction again and gets a grant of its own;
       each code is redeemed for one refresh token.
    3. One more consent (without offline_access): the session's grant becomes
       a fresh one that no refresh chain shares, so a chain's grant being
       revoked (refresh-token reuse) cannot touch the code flows.
    4. A plain authorize carrying only the cookie header must answer a code at
       once; it is redeemed for the access token to introspect.
    """
    base_url = f"http://127.0.0.1:{port}"
    if proc.poll() is not None:
        raise PeerError(f"the peer has exited (exit code {proc.returncode})")
    with httpx.Client(follow_redirects=False, timeout=30.0) as http:
        meta = http.get(f"{base_url}/.well-known/openid-configuration").raise_for_status().json()
        authorize_url = meta["authorization_endpoint"]
        token_url = meta["token_endpoint"]

        verifier, challenge = pkce_pair()
        code, _ = _authorize(http, authorize_url, redirect_uri, SCOPE, challenge)
        redeem(http, token_url, code, verifier, redirect_uri)

        refresh_tokens: list[str] = []
        for _ in range(refresh_chains):
            verifier, challenge = pkce_pair()
            code, _ = _authorize(
                http,
                authorize_url,
                redirect_uri,
                f"{SCOPE} offline_access",
                challenge,
                extra={"prompt": "consent"},
            )
            tokens = redeem(http, token_url, code, verifier, redirect_uri)
            if "refresh_token" not in tokens:
                raise PeerError(f"no refresh token for offline_access: {tokens}")
            refresh_tokens.append(tokens["refresh_token"])

        verifier, challenge = pkce_pair()
        code, _ = _authorize(
            http, authorize_url, redirect_uri, SCOPE, challenge, extra={"prompt": "consent"}
        )
        redeem(http, token_url, code, verifier, redirect_uri)

        jar = {c.name: c.value for c in http.cookies.jar if c.path == "/"}
    missing = [name for name in SESSION_COOKIES if name not in jar]
    if missing:
        raise PeerError(f"the peer set no {', '.join(missing)} cookie; it set {sorted(jar)}")
    session_cookie = "; ".join(f"{name}={jar[name]}" for name in SESSION_COOKIES)

    # A client with no cookie jar content: only the header, as the load generator sends it.
    with httpx.Client(follow_redirects=False, timeout=30.0) as http:
        verifier, challenge = pkce_pair()
        code, hops = _authorize(
            http,
            authorize_url,
            redirect_uri,
            SCOPE,
            challenge,
            headers={"Cookie": session_cookie},
        )
        if hops != 1:
            raise PeerError(f"authorize with the session cookie needed {hops} redirects, not 1")
        access_token = str(redeem(http, token_url, code, verifier, redirect_uri)["access_token"])

    return Target(
        name=f"oidc-provider {installed_version(dest)}",
        pid=proc.pid,
        base_url=base_url,
        authorize_url=authorize_url,
        token_url=token_url,
        userinfo_url=meta["userinfo_endpoint"],
        introspection_url=meta["introspection_endpoint"],
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        redirect_uri=redirect_uri,
        scope=SCOPE,
        session_cookie=session_cookie,
        refresh_tokens=tuple(refresh_tokens),
        access_token=access_token,
        authorize_extra={},
        storage=STORAGE,
    )


# --- self-test -----------------------------------------------------------------------


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _refresh(http: httpx.Client, target: Target, refresh_token: str) -> httpx.Response:
    return http.post(
        target.token_url,
        data={"grant_type": "refresh_token", "refresh_token": refresh_token},
        auth=(target.client_id, target.client_secret),
    )


def self_test(target: Target) -> None:
    """One S2 flow, one S3 refresh, one S6 introspection against a prepared peer."""

    def ok(what: str) -> None:
        print(f"OK  {what}", flush=True)

    with httpx.Client(follow_redirects=False, timeout=30.0) as http:
        jwks = http.get(f"{target.base_url}/jwks").raise_for_status().json()

        # S2: authorize with the session cookie -> token -> userinfo.
        verifier, challenge = pkce_pair()
        params = {
            "response_type": "code",
            "client_id": target.client_id,
            "redirect_uri": target.redirect_uri,
            "scope": target.scope,
            "state": "s2-state",
            "nonce": "s2-nonce",
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            **target.authorize_extra,
        }
        response = http.get(
            target.authorize_url, params=params, headers={"Cookie": target.session_cookie}
        )
        location = response.headers.get("location", "")
        query = parse_qs(urlsplit(location).query)
        if response.status_code not in (302, 303) or not location.startswith(target.redirect_uri):
            raise PeerError(f"authorize: {response.status_code} {location or response.text}")
        if "code" not in query:
            raise PeerError(f"authorize: no code in {location}")
        ok(f"authorize with the session cookie: {response.status_code} -> redirect_uri?code=...")

        tokens = redeem(http, target.token_url, query["code"][0], verifier, target.redirect_uri)
        id_token = tokens["id_token"]
        header = jwt.get_unverified_header(id_token)
        key = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
        claims = jwt.decode(
            id_token,
            jwt.PyJWK(key).key,
            algorithms=["RS256"],
            audience=target.client_id,
            issuer=target.base_url,
        )
        if header["alg"] != "RS256" or claims.get("nonce") != "s2-nonce":
            raise PeerError(f"ID token: header {header}, claims {claims}")
        bits = jwt.PyJWK(key).key.key_size
        ok(
            f"token (client_secret_basic + PKCE): {tokens['token_type']} access token "
            f"({len(tokens['access_token'])} chars, opaque), RS256 ID token "
            f"({bits}-bit key) for sub={claims['sub']} email={claims.get('email')}"
        )

        response = http.get(
            target.userinfo_url, headers={"Authorization": f"Bearer {tokens['access_token']}"}
        )
        if response.status_code != 200 or response.json().get("email") != "jane.doe@example.org":
            raise PeerError(f"userinfo: {response.status_code} {response.text}")
        ok(f"userinfo: {response.json()}")

        # S3: refresh with rotation.
        first = target.refresh_tokens[0]
        response = _refresh(http, target, first)
        if response.status_code != 200:
            raise PeerError(f"refresh: {response.status_code} {response.text}")
        rotated = response.json().get("refresh_token")
        if not rotated or rotated == first:
            raise PeerError(f"refresh did not rotate the refresh token: {response.json()}")
        ok("refresh: 200, a new refresh token (rotated)")
        response = _refresh(http, target, rotated)
        if response.status_code != 200:
            raise PeerError(f"refresh of the rotated token: {response.status_code} {response.text}")
        ok("refresh of the rotated token: 200 (a chain goes on)")
        response = _refresh(http, target, first)
        if response.status_code != 400 or response.json().get("error") != "invalid_grant":
            raise PeerError(f"reusing a rotated refresh token: {response.status_code}")
        ok("reusing the rotated-away refresh token: 400 invalid_grant")

        # S6: introspection.
        response = http.post(
            target.introspection_url,
            data={"token": target.access_token},
            auth=(target.client_id, target.client_secret),
        )
        body = response.json()
        if response.status_code != 200 or body.get("active") is not True:
            raise PeerError(f"introspection: {response.status_code} {response.text}")
        ok(f"introspection: active={body['active']} sub={body.get('sub')} exp={body.get('exp')}")

        # The reuse above revoked that chain's grant only: the others and the session live.
        for i, other in enumerate(target.refresh_tokens[1:], start=1):
            if _refresh(http, target, other).status_code != 200:
                raise PeerError(f"refresh chain {i} died with chain 0's grant")
        response = http.get(
            target.authorize_url,
            params={**params, "code_challenge": pkce_pair()[1]},
            headers={"Cookie": target.session_cookie},
        )
        if "code=" not in response.headers.get("location", ""):
            raise PeerError("the session lost its grant with chain 0's")
        ok("the other refresh chains and the session's grant are untouched")


def main() -> int:
    started = time.monotonic()
    install()
    print(f"OK  installed oidc-provider {installed_version()} in {DEFAULT_DEST}", flush=True)
    port = free_port()
    redirect_uri = "http://127.0.0.1:9/callback"  # never contacted: the code is read off it
    proc = start(port, redirect_uri)
    try:
        print(f"OK  started: pid {proc.pid}, http://127.0.0.1:{port}", flush=True)
        target = prepare(proc, port, redirect_uri, refresh_chains=3)
        cookie_names = [c.split("=")[0] for c in target.session_cookie.split("; ")]
        print(
            f"OK  prepared: session cookie {cookie_names}, "
            f"{len(target.refresh_tokens)} refresh chains, storage {target.storage}",
            flush=True,
        )
        self_test(target)
    except (PeerError, httpx.HTTPError, KeyError, ValueError, jwt.PyJWTError) as exc:
        print(f"FAIL {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        stop(proc)
    print(f"OK  self-test passed in {time.monotonic() - started:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
