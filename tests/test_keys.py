"""Signing keys, JWKS, rotation (SECURITY C2, C3), secret keyring, client-secret hashing (B3)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import multiprocessing
import os
import stat
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from bridge import cli
from bridge.keys import (
    KEYRING,
    MANIFEST,
    InvalidToken,
    KeyStore,
    KeyStoreError,
    SecretDecryptionError,
    generate_client_secret,
    hash_secret,
    jwk_thumbprint,
    verify_secret,
)
from tests.support.bridge import write_config

ISSUER = "https://sso.example.org"
AUDIENCE = "member-portal"
PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}
REPO = Path(__file__).resolve().parents[1]


class FakeClock:
    """Drives key lifecycle times; token exp is still checked against real time."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {"iss": ISSUER, "aud": AUDIENCE, "sub": "imis-1001", "iat": now, "exp": now + 600}
    return base | overrides


def verify(store: KeyStore, token: str) -> dict[str, Any]:
    return store.verify_jwt(token, audience=AUDIENCE, issuer=ISSUER)


def kids(jwks: dict[str, list[dict[str, str]]]) -> set[str]:
    return {key["kid"] for key in jwks["keys"]}


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict[str, Any], body: dict[str, Any], hmac_key: bytes | None) -> str:
    """A token built by hand, so no JWT library's own refusals get in the way."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(body).encode())}"
    if hmac_key is None:
        return signing_input + "."
    signature = hmac.new(hmac_key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


@pytest.fixture
def store(tmp_path: Path) -> KeyStore:
    return KeyStore.load_or_create(tmp_path / "keys")


# --- first start ----------------------------------------------------------------


def test_first_start_creates_rs256_es256_and_keyring_readable_by_owner_only(tmp_path: Path) -> None:
    keys_dir = tmp_path / "config" / "keys"
    store = KeyStore.load_or_create(keys_dir)

    assert mode(keys_dir) == 0o700
    files = sorted(p.name for p in keys_dir.iterdir())
    pems = [name for name in files if name.endswith(".pem")]
    assert len(pems) == 2
    assert {name.split("-", 1)[0] for name in pems} == {"RS256", "ES256"}
    assert {MANIFEST, KEYRING} <= set(files)
    for path in keys_dir.iterdir():
        assert mode(path) == 0o600, path.name
    infos = store.list_keys()
    assert sorted((i.alg, i.state) for i in infos) == [("ES256", "current"), ("RS256", "current")]
    assert len(store.keyring_ids()) == 1


def test_checked_out_keys_folder_is_tightened_to_0700(tmp_path: Path) -> None:
    keys_dir = tmp_path / "keys"
    keys_dir.mkdir(mode=0o755)
    os.chmod(keys_dir, 0o755)
    KeyStore.load_or_create(keys_dir)
    assert mode(keys_dir) == 0o700


def test_restart_loads_the_same_keys(tmp_path: Path) -> None:
    first = KeyStore.load_or_create(tmp_path)
    again = KeyStore.load_or_create(tmp_path)
    opened = KeyStore.open(tmp_path)
    assert first.list_keys() == again.list_keys() == opened.list_keys()
    assert first.jwks() == again.jwks()
    assert first.keyring_ids() == again.keyring_ids()
    token = first.sign_jwt(claims())
    assert verify(again, token)["sub"] == "imis-1001"


def test_open_refuses_a_folder_without_keys_and_creates_nothing(tmp_path: Path) -> None:
    with pytest.raises(KeyStoreError, match="created when the bridge first starts"):
        KeyStore.open(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_key_file_that_does_not_match_its_kid_is_refused(tmp_path: Path) -> None:
    store = KeyStore.load_or_create(tmp_path)
    info = next(i for i in store.list_keys() if i.alg == "RS256")
    intruder = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = intruder.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    (tmp_path / info.file_name).write_bytes(pem)
    with pytest.raises(KeyStoreError, match="does not match its kid"):
        KeyStore.open(tmp_path)


def test_lost_manifest_is_refused_and_no_key_file_is_deleted(tmp_path: Path) -> None:
    KeyStore.load_or_create(tmp_path)
    pems = sorted(tmp_path.glob("*.pem"))
    (tmp_path / MANIFEST).unlink()
    with pytest.raises(KeyStoreError, match=r"restore manifest\.json"):
        KeyStore.load_or_create(tmp_path)
    assert sorted(tmp_path.glob("*.pem")) == pems


def test_lost_keyring_is_refused_until_the_operator_says_it_is_gone(tmp_path: Path) -> None:
    first = KeyStore.load_or_create(tmp_path)
    (tmp_path / KEYRING).unlink()
    with pytest.raises(KeyStoreError, match="restore it from a backup"):
        KeyStore.load_or_create(tmp_path)
    (tmp_path / KEYRING).write_text('{"version": 1, "keys": []}')
    again = KeyStore.load_or_create(tmp_path)
    assert again.keyring_ids() != first.keyring_ids()
    assert again.list_keys() == first.list_keys()


def test_leftover_of_a_crashed_writer_is_cleaned_up(tmp_path: Path) -> None:
    store = KeyStore.load_or_create(tmp_path)
    stray_key = tmp_path / f"RS256-{'A' * 43}.pem"
    stray_key.write_bytes(b"half written")
    (tmp_path / ".tmp-abc123").write_bytes(b"half written")
    KeyStore.load_or_create(tmp_path)
    assert not stray_key.exists()
    assert not (tmp_path / ".tmp-abc123").exists()
    assert KeyStore.open(tmp_path).list_keys() == store.list_keys()


def test_importing_the_module_touches_no_disk(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1"}
    subprocess.run([sys.executable, "-c", "import bridge.keys"], cwd=tmp_path, env=env, check=True)
    assert list(tmp_path.iterdir()) == []


# --- kid and JWKS -----------------------------------------------------------------


def test_kid_is_rfc7638_thumbprint_of_the_rfc_example_key() -> None:
    # RFC 7638 §3.1
    example = {
        "kty": "RSA",
        "n": (
            "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6"
            "tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v"
            "-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08q"
            "NLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8aw"
            "apJzKnqDKgw"
        ),
        "e": "AQAB",
        "alg": "RS256",
        "kid": "2011-04-29",
    }
    assert jwk_thumbprint(example) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_every_published_kid_is_the_thumbprint_of_its_key(store: KeyStore) -> None:
    jwks = store.jwks()
    assert len(jwks["keys"]) == 2
    for key in jwks["keys"]:
        assert key["kid"] == jwk_thumbprint(key)


def test_jwks_has_public_members_only(store: KeyStore) -> None:
    by_alg = {key["alg"]: key for key in store.jwks()["keys"]}
    assert set(by_alg["RS256"]) == {"kty", "kid", "use", "alg", "n", "e"}
    assert set(by_alg["ES256"]) == {"kty", "kid", "use", "alg", "crv", "x", "y"}
    assert by_alg["RS256"]["kty"] == "RSA"
    assert by_alg["ES256"]["crv"] == "P-256"
    for key in by_alg.values():
        assert key["use"] == "sig"
        assert not PRIVATE_MEMBERS & set(key)


def test_jwks_result_cannot_alter_the_store(store: KeyStore) -> None:
    store.jwks()["keys"][0]["d"] = "leak"
    assert all("d" not in key for key in store.jwks()["keys"])


def test_published_jwks_verifies_our_tokens_with_a_generic_client(store: KeyStore) -> None:
    token = store.sign_jwt(claims(), alg="ES256")
    jwk_set = jwt.PyJWKSet.from_dict(store.jwks())
    key = next(k for k in jwk_set.keys if k.key_id == jwt.get_unverified_header(token)["kid"])
    decoded = jwt.decode(token, key, algorithms=["ES256"], audience=AUDIENCE, issuer=ISSUER)
    assert decoded["sub"] == "imis-1001"


# --- sign and verify (C2) ---------------------------------------------------------


@pytest.mark.parametrize("alg", ["RS256", "ES256"])
def test_signed_token_verifies_and_names_its_key(store: KeyStore, alg: str) -> None:
    token = store.sign_jwt(claims(nonce="n-1"), alg=alg)
    header = jwt.get_unverified_header(token)
    kid, private = store.signing_key(alg)
    assert header == {"alg": alg, "typ": "JWT", "kid": kid}
    assert verify(store, token)["nonce"] == "n-1"
    public = store.verification_key(kid)
    assert public is not None
    assert public.public_numbers() == private.public_key().public_numbers()


def test_sign_jwt_keeps_a_requested_typ_but_not_a_foreign_kid(store: KeyStore) -> None:
    token = store.sign_jwt(claims(), headers={"typ": "at+jwt"})
    assert jwt.get_unverified_header(token)["typ"] == "at+jwt"
    with pytest.raises(ValueError, match="chosen by the key store"):
        store.sign_jwt(claims(), headers={"kid": "mine"})


def test_c2_alg_none_is_refused(store: KeyStore) -> None:
    kid, _ = store.signing_key("RS256")
    token = forge({"alg": "none", "typ": "JWT", "kid": kid}, claims(), hmac_key=None)
    with pytest.raises(InvalidToken, match="algorithm not accepted"):
        verify(store, token)


@pytest.mark.parametrize("pem_format", ["spki", "pkcs1"])
def test_c2_hs256_signed_with_our_public_key_is_refused(store: KeyStore, pem_format: str) -> None:
    kid, private = store.signing_key("RS256")
    fmt = {
        "spki": serialization.PublicFormat.SubjectPublicKeyInfo,
        "pkcs1": serialization.PublicFormat.PKCS1,
    }[pem_format]
    public_pem = private.public_key().public_bytes(serialization.Encoding.PEM, fmt)
    token = forge({"alg": "HS256", "typ": "JWT", "kid": kid}, claims(), hmac_key=public_pem)
    with pytest.raises(InvalidToken, match="algorithm not accepted"):
        verify(store, token)


def test_c2_unknown_kid_is_refused(store: KeyStore) -> None:
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = jwt.encode(claims(), stranger, algorithm="RS256", headers={"kid": "not-ours"})
    with pytest.raises(InvalidToken, match="unknown key id"):
        verify(store, token)
    assert store.verification_key("not-ours") is None


def test_c2_missing_kid_is_refused(store: KeyStore) -> None:
    _, private = store.signing_key("RS256")
    token = jwt.encode(claims(), private, algorithm="RS256")
    with pytest.raises(InvalidToken, match="no key id"):
        verify(store, token)


def test_c2_foreign_key_claiming_our_kid_fails_the_signature(store: KeyStore) -> None:
    kid, _ = store.signing_key("RS256")
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = jwt.encode(claims(), stranger, algorithm="RS256", headers={"kid": kid})
    with pytest.raises(InvalidToken, match="bad signature"):
        verify(store, token)


def test_c2_kid_of_an_es256_key_in_an_rs256_header_is_refused(store: KeyStore) -> None:
    es_kid, _ = store.signing_key("ES256")
    _, rs_private = store.signing_key("RS256")
    token = jwt.encode(claims(), rs_private, algorithm="RS256", headers={"kid": es_kid})
    with pytest.raises(InvalidToken, match="does not match algorithm"):
        verify(store, token)


def test_c2_algorithm_outside_the_callers_list_is_refused(store: KeyStore) -> None:
    token = store.sign_jwt(claims(), alg="ES256")
    with pytest.raises(InvalidToken, match="algorithm not accepted"):
        store.verify_jwt(token, audience=AUDIENCE, issuer=ISSUER, algorithms=("RS256",))


def test_c2_wrong_issuer_is_refused(store: KeyStore) -> None:
    token = store.sign_jwt(claims(iss="https://evil.example"))
    with pytest.raises(InvalidToken, match="wrong issuer"):
        verify(store, token)


def test_c2_wrong_audience_is_refused(store: KeyStore) -> None:
    token = store.sign_jwt(claims(aud="another-rp"))
    with pytest.raises(InvalidToken, match="wrong audience"):
        verify(store, token)


def test_c2_expired_token_is_refused_and_leeway_is_the_callers_choice(store: KeyStore) -> None:
    now = int(time.time())
    token = store.sign_jwt(claims(iat=now - 700, exp=now - 100))
    with pytest.raises(InvalidToken, match="expired"):
        verify(store, token)
    assert store.verify_jwt(token, audience=AUDIENCE, issuer=ISSUER, leeway=300)["sub"]


def test_c2_token_without_exp_is_refused(store: KeyStore) -> None:
    body = claims()
    del body["exp"]
    with pytest.raises(InvalidToken, match="missing claim exp"):
        verify(store, store.sign_jwt(body))


@pytest.mark.parametrize(
    "garbage", ["", "abc", "a.b.c", "....", "eyJhbGciOiJSUzI1NiJ9.e30.", "e" * 20_000]
)
def test_c2_malformed_token_is_refused_not_crashed(store: KeyStore, garbage: str) -> None:
    with pytest.raises(InvalidToken):
        verify(store, garbage)


def test_c2_altered_payload_is_refused(store: KeyStore) -> None:
    header, _, signature = store.sign_jwt(claims()).split(".")
    payload = b64(json.dumps(claims(sub="imis-9999")).encode())
    with pytest.raises(InvalidToken, match="bad signature"):
        verify(store, f"{header}.{payload}.{signature}")


# --- rotation (C3) ----------------------------------------------------------------


def test_c3_new_key_is_published_before_it_signs_and_old_key_verifies_until_retired(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    store = KeyStore.load_or_create(tmp_path, publish_lead_seconds=3600, clock=clock)
    old_kid, _ = store.signing_key("RS256")
    old_token = store.sign_jwt(claims())

    published = store.rotate("RS256", retire_after_seconds=600)
    new_kid = published.published
    assert new_kid is not None
    assert published.promoted is None
    assert new_kid in kids(store.jwks())
    assert jwt.get_unverified_header(store.sign_jwt(claims()))["kid"] == old_kid

    clock.advance(1800)
    early = store.rotate("RS256", retire_after_seconds=600)
    assert early.promoted is None
    assert early.pending == new_kid
    assert early.ready_at == published.ready_at
    assert store.signing_key("RS256")[0] == old_kid

    clock.advance(1800)
    promoted = store.rotate("RS256", retire_after_seconds=600)
    assert promoted.promoted == new_kid
    assert promoted.retired == old_kid
    assert promoted.retire_until == clock.now + timedelta(seconds=600)
    assert jwt.get_unverified_header(store.sign_jwt(claims()))["kid"] == new_kid
    assert {old_kid, new_kid} <= kids(store.jwks())
    assert verify(store, old_token)["sub"] == "imis-1001"

    clock.advance(599)
    assert old_kid in kids(store.jwks())
    assert verify(store, old_token)["sub"] == "imis-1001"

    clock.advance(1)
    assert old_kid not in kids(store.jwks())
    assert store.verification_key(old_kid) is None
    with pytest.raises(InvalidToken, match="unknown key id"):
        verify(store, old_token)

    old_file = tmp_path / f"RS256-{old_kid}.pem"
    assert old_file.exists()
    cleanup = store.rotate("RS256", retire_after_seconds=600)
    assert cleanup.dropped == (old_kid,)
    assert not old_file.exists()
    assert old_kid not in {i.kid for i in store.list_keys()}


def test_c3_rotating_one_alg_leaves_the_other_alone(tmp_path: Path) -> None:
    store = KeyStore.load_or_create(tmp_path, publish_lead_seconds=0)
    es_before = store.signing_key("ES256")[0]
    store.rotate("RS256", retire_after_seconds=60)
    store.rotate("RS256", retire_after_seconds=60)
    assert store.signing_key("ES256")[0] == es_before
    assert [i.state for i in store.list_keys() if i.alg == "ES256"] == ["current"]


def test_c3_immediate_rotation_signs_at_once_and_still_verifies_old_tokens(tmp_path: Path) -> None:
    store = KeyStore.load_or_create(tmp_path)
    old_kid, _ = store.signing_key("ES256")
    old_token = store.sign_jwt(claims(), alg="ES256")

    result = store.rotate("ES256", retire_after_seconds=600, immediate=True)

    assert result.published is not None
    assert result.promoted == result.published
    assert result.retired == old_kid
    assert "Warning" in result.describe()
    assert store.signing_key("ES256")[0] == result.promoted
    assert {old_kid, result.promoted} <= kids(store.jwks())
    assert verify(store, old_token)["sub"] == "imis-1001"


def test_c3_other_processes_notice_a_rotation_on_reload(tmp_path: Path) -> None:
    server = KeyStore.load_or_create(tmp_path, publish_lead_seconds=0)
    operator = KeyStore.open(tmp_path, publish_lead_seconds=0)
    assert server.reload_if_changed() is False

    step = operator.rotate("RS256", retire_after_seconds=600)
    assert step.published not in kids(server.jwks())
    assert server.reload_if_changed() is True
    assert step.published in kids(server.jwks())
    assert server.reload_if_changed() is False

    operator.rotate("RS256", retire_after_seconds=600)
    server.reload_if_changed()
    assert server.signing_key("RS256")[0] == step.published


def test_c3_cli_rotate_twice_with_lead_time_completes_a_rotation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = KeyStore.load_or_create(tmp_path)
    old_kid, _ = server.signing_key("RS256")

    out = io.StringIO()
    assert cli.keys_rotate(tmp_path, "RS256", False, 900, publish_lead_seconds=0, out=out) == 0
    assert "Published new RS256 key" in out.getvalue()
    server.reload_if_changed()
    assert server.signing_key("RS256")[0] == old_kid

    out = io.StringIO()
    assert cli.keys_rotate(tmp_path, "RS256", False, 900, publish_lead_seconds=0, out=out) == 0
    assert "now signs new tokens" in out.getvalue()
    assert old_kid in out.getvalue()
    server.reload_if_changed()
    assert server.signing_key("RS256")[0] != old_kid
    assert capsys.readouterr().err == ""


def test_cli_rotate_refuses_unknown_alg_and_missing_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.keys_rotate(tmp_path, "RS256", False, 900) == 1
    assert "created when the bridge first starts" in capsys.readouterr().err
    KeyStore.load_or_create(tmp_path)
    assert cli.keys_rotate(tmp_path, "HS256", False, 900) == 1
    assert "unsupported signing algorithm" in capsys.readouterr().err


def keys_config(folder: Path, keys_dir: Path) -> str:
    """A configuration folder whose ``keys_dir`` is ``keys_dir``, for ``bridge keys --config``."""
    write_config(folder, issuer=ISSUER, database_url="sqlite:///bridge.db", imis_url=ISSUER)
    main = folder / "bridge.toml"
    main.write_text(main.read_text().replace('keys_dir = "keys"', f'keys_dir = "{keys_dir}"'))
    return str(folder)


def test_cli_list_shows_a_table_and_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = KeyStore.load_or_create(tmp_path)
    store.rotate("RS256", retire_after_seconds=600)
    config = keys_config(tmp_path / "config", tmp_path)

    assert cli.main(["keys", "list", "--config", config]) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[0].split() == [
        "KID",
        "ALG",
        "STATE",
        "CREATED",
        "ACTIVATED",
        "RETIRED",
        "IN",
        "JWKS",
    ]
    for info in store.list_keys():
        assert info.kid in table
    assert "Keyring: 1 key(s)" in table

    assert cli.main(["keys", "list", "--config", config, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert sorted(k["state"] for k in data["keys"]) == ["current", "current", "next"]
    assert all(k["in_jwks"] for k in data["keys"])
    assert data["keyring"]["encrypts"] == store.keyring_ids()[-1]
    assert "key" not in json.dumps(data["keyring"]).replace('"keyring"', "")


def test_cli_list_on_an_empty_folder_fails_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = keys_config(tmp_path / "config", tmp_path / "nowhere")
    assert cli.main(["keys", "list", "--config", config]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert err.count("\n") == 1
    assert not (tmp_path / "nowhere").exists()


# --- two processes starting at once -----------------------------------------------


def _start_in_child(keys_dir: str, barrier: Any, results: Any) -> None:
    barrier.wait()
    try:
        store = KeyStore.load_or_create(keys_dir)
    except Exception as exc:  # reported to the parent instead of leaving it waiting
        results.put(("failed", repr(exc)))
        raise
    results.put((sorted(i.kid for i in store.list_keys()), store.keyring_ids()))


def test_concurrent_first_start_from_several_processes_yields_one_key_set(tmp_path: Path) -> None:
    keys_dir = tmp_path / "keys"
    ctx = multiprocessing.get_context("spawn")
    count = 4
    barrier = ctx.Barrier(count)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_start_in_child, args=(str(keys_dir), barrier, results))
        for _ in range(count)
    ]
    for proc in procs:
        proc.start()
    try:
        seen = [results.get(timeout=60) for _ in procs]
    finally:
        for proc in procs:
            proc.join(timeout=60)
        results.close()
        results.join_thread()
    assert [proc.exitcode for proc in procs] == [0] * count
    assert all(result == seen[0] for result in seen)
    assert len(seen[0][0]) == 2
    assert len(list(keys_dir.glob("*.pem"))) == 2
    assert not list(keys_dir.glob(".tmp-*"))
    assert KeyStore.open(keys_dir).list_keys() == KeyStore.load_or_create(keys_dir).list_keys()


# --- secrets at rest ----------------------------------------------------------------


def test_encrypted_secret_round_trips_and_hides_the_plaintext(store: KeyStore) -> None:
    plain = "zendesk-shared-secret-ÅÄÖ-123"
    token = store.encrypt_secret(plain)
    assert plain not in token
    assert store.encrypt_secret(plain) != token
    assert store.decrypt_secret(token) == plain


def test_keyring_rotation_encrypts_with_newest_and_decrypts_with_all(tmp_path: Path) -> None:
    store = KeyStore.load_or_create(tmp_path)
    other_process = KeyStore.open(tmp_path)
    old = store.encrypt_secret("old secret")

    new_id = store.rotate_keyring()

    assert store.keyring_ids()[-1] == new_id
    assert len(store.keyring_ids()) == 2
    new = store.encrypt_secret("new secret")
    assert new.startswith(f"fernet:{new_id}:")
    assert store.decrypt_secret(old) == "old secret"
    assert store.decrypt_secret(new) == "new secret"
    assert store.needs_reencrypt(old)
    assert not store.needs_reencrypt(new)
    assert other_process.reload_if_changed() is True
    assert other_process.decrypt_secret(new) == "new secret"
    assert mode(tmp_path / KEYRING) == 0o600


def test_tampered_secret_is_detected(store: KeyStore) -> None:
    token = store.encrypt_secret("s3cret")
    scheme, key_id, body = token.split(":")
    raw = bytearray(base64.urlsafe_b64decode(body))
    raw[40] ^= 0x01
    altered = f"{scheme}:{key_id}:{base64.urlsafe_b64encode(bytes(raw)).decode()}"
    with pytest.raises(SecretDecryptionError, match="altered"):
        store.decrypt_secret(altered)


def test_secret_from_an_unknown_keyring_key_is_refused_clearly(tmp_path: Path) -> None:
    mine = KeyStore.load_or_create(tmp_path / "a")
    theirs = KeyStore.load_or_create(tmp_path / "b")
    with pytest.raises(SecretDecryptionError, match="not in"):
        mine.decrypt_secret(theirs.encrypt_secret("s3cret"))


@pytest.mark.parametrize("garbage", ["", "plain text", "fernet:", "fernet:zz:abc", "aes:1:2"])
def test_value_that_is_not_an_encrypted_secret_is_refused(store: KeyStore, garbage: str) -> None:
    with pytest.raises(SecretDecryptionError):
        store.decrypt_secret(garbage)


# --- client secrets (B3) ------------------------------------------------------------


def test_b3_client_secret_hash_verifies_only_the_right_secret() -> None:
    secret = generate_client_secret()
    stored = hash_secret(secret)
    assert verify_secret(secret, stored)
    assert not verify_secret(secret + "x", stored)
    assert not verify_secret("", stored)
    assert not verify_secret(generate_client_secret(), stored)


def test_b3_stored_hash_contains_no_plaintext_and_is_salted() -> None:
    secret = generate_client_secret()
    stored = hash_secret(secret)
    assert secret not in stored
    assert stored.startswith("hmac-sha256$")
    assert hash_secret(secret) != stored


@pytest.mark.parametrize(
    "stored", ["", "plain", "hmac-sha256$", "hmac-sha256$$", "md5$abc$def", "hmac-sha256$!!$00"]
)
def test_b3_malformed_stored_hash_never_matches(stored: str) -> None:
    assert not verify_secret("anything", stored)


def test_b3_generated_client_secret_has_256_random_bits() -> None:
    secret = generate_client_secret()
    assert len(base64.urlsafe_b64decode(secret + "=")) == 32
    assert generate_client_secret() != secret


def test_b3_empty_client_secret_cannot_be_stored() -> None:
    with pytest.raises(ValueError, match="empty"):
        hash_secret("")


def test_ec_keys_are_p256_and_rsa_keys_2048_bits(store: KeyStore) -> None:
    _, rs = store.signing_key("RS256")
    _, es = store.signing_key("ES256")
    assert isinstance(rs, rsa.RSAPrivateKey)
    assert rs.key_size == 2048
    assert isinstance(es, ec.EllipticCurvePrivateKey)
    assert isinstance(es.curve, ec.SECP256R1)
