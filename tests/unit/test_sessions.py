"""Instance sessions (auth/sessions.py): execution-role credentials minted and opened in memory."""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime

import pytest

from lamina.auth.sessions import (
    InstanceSessions,
    derived_role_id,
    lambda_may_assume,
    service_may_assume,
)

ROLE = "arn:aws:iam::000000000000:role/service-role/exec"


def _trust(principal: object, effect: str = "Allow", action: str = "sts:AssumeRole") -> str:
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [{"Effect": effect, "Principal": principal, "Action": action}],
        }
    )


def test_mint_shape() -> None:
    creds = InstanceSessions().mint(ROLE, "my-function", 3600)
    assert creds.access_key_id.startswith("ASIA") and len(creds.access_key_id) == 20
    assert creds.access_key_id.isalnum() and creds.access_key_id.isupper()
    assert len(creds.secret_access_key) == 40
    assert creds.session_token and creds.secret_access_key not in creds.session_token
    left = (creds.expires - datetime.now(UTC)).total_seconds()
    assert 3598 <= left <= 3600
    text = repr(creds) + str(creds)
    assert creds.secret_access_key not in text and creds.session_token not in text


def test_round_trip() -> None:
    sessions = InstanceSessions()
    creds = sessions.mint(ROLE, "my-function", 3600, role_id="AROAEXAMPLEEXAMPLE123")
    key = sessions.signing_key(creds.access_key_id, creds.session_token)
    assert key is not None
    assert key.access_key_id == creds.access_key_id
    assert key.secret_access_key == creds.secret_access_key
    assert key.session_token == creds.session_token
    assert key.expires == creds.expires
    p = key.principal
    assert p.kind == "assumed-role"
    assert p.account == "000000000000"
    assert p.arn == "arn:aws:sts::000000000000:assumed-role/exec/my-function"
    assert p.role_arn == ROLE
    assert p.user_id == "AROAEXAMPLEEXAMPLE123:my-function"
    assert p.name == "exec" and p.session_name == "my-function"
    assert p.access_key_id == creds.access_key_id
    assert creds.secret_access_key not in repr(key)


def test_role_id_derived_when_unknown() -> None:
    sessions = InstanceSessions()
    creds = sessions.mint(ROLE, "fn", 900)
    key = sessions.signing_key(creds.access_key_id, creds.session_token)
    assert key is not None
    rid = derived_role_id(ROLE)
    assert rid.startswith("AROA") and len(rid) == 21 and rid == derived_role_id(ROLE)
    assert key.principal.user_id == f"{rid}:fn"


def test_minter_binds_arguments() -> None:
    sessions = InstanceSessions()
    mint = sessions.minter(ROLE, "fn", 900)
    a, b = mint(), mint()
    assert a.access_key_id != b.access_key_id  # a new session per instance
    for creds in (a, b):
        key = sessions.signing_key(creds.access_key_id, creds.session_token)
        assert key is not None and key.principal.session_name == "fn"


def test_tampered_token_does_not_open() -> None:
    sessions = InstanceSessions()
    creds = sessions.mint(ROLE, "fn", 3600)
    blob = bytearray(base64.b64decode(creds.session_token))
    for i in (2, 20, len(blob) // 2, len(blob) - 1):  # nonce, ciphertext, tag
        bad = bytearray(blob)
        bad[i] ^= 0x01
        forged = base64.b64encode(bytes(bad)).decode()
        assert sessions.signing_key(creds.access_key_id, forged) is None
    for junk in ("", "not base64!", creds.session_token[:-8], "TAEA", "IQoJb3JpZ2luX2VjE" * 10):
        assert sessions.signing_key(creds.access_key_id, junk) is None
    assert sessions.signing_key(creds.access_key_id, None) is None


def test_wrong_key_id_does_not_open() -> None:
    sessions = InstanceSessions()
    a = sessions.mint(ROLE, "fn", 3600)
    b = sessions.mint(ROLE, "fn", 3600)
    assert sessions.signing_key(b.access_key_id, a.session_token) is None
    assert sessions.signing_key("AKIA" + a.access_key_id[4:], a.session_token) is None


def test_another_process_key_does_not_open() -> None:
    creds = InstanceSessions().mint(ROLE, "fn", 3600)
    assert InstanceSessions().signing_key(creds.access_key_id, creds.session_token) is None
    key = bytes(range(32))  # the same key (as within one process) does open
    same = InstanceSessions(key).mint(ROLE, "fn", 3600)
    assert InstanceSessions(key).signing_key(same.access_key_id, same.session_token) is not None
    with pytest.raises(ValueError):
        InstanceSessions(b"short")


def test_expiry_is_reported() -> None:
    """An expired session still opens, with its `expires` in the past: SigV4 verification
    answers ExpiredToken (as for an expired AssumeRole session), not "unknown key"."""
    sessions = InstanceSessions()
    creds = sessions.mint(ROLE, "fn", 1)
    time.sleep(1.1)
    key = sessions.signing_key(creds.access_key_id, creds.session_token)
    assert key is not None and key.expires is not None
    assert key.expires <= datetime.now(UTC)
    with pytest.raises(ValueError):
        sessions.mint(ROLE, "fn", 0)


def test_expired_token_refused_by_sigv4() -> None:
    from lamina.auth.sigv4 import SignedRequest, verify
    from lamina.errors import ExpiredTokenException

    botocore = pytest.importorskip("botocore")
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    assert botocore
    sessions = InstanceSessions()
    creds = sessions.mint(ROLE, "fn", 1)
    req = AWSRequest(
        method="POST",
        url="http://127.0.0.1:4850/",
        data=b"Action=GetCallerIdentity&Version=2011-06-15",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    SigV4Auth(
        Credentials(creds.access_key_id, creds.secret_access_key, creds.session_token),
        "sts",
        "us-east-1",
    ).add_auth(req)
    signed = SignedRequest(
        method="POST",
        raw_path="/",
        query_string="",
        headers={"host": "127.0.0.1:4850", **{k.lower(): v for k, v in req.headers.items()}},
        body=req.body,
    )
    token = req.headers["X-Amz-Security-Token"]
    ok = verify(signed, lambda akid: sessions.signing_key(akid, token), datetime.now(UTC))
    assert ok.key.principal.arn.endswith(":assumed-role/exec/fn")
    time.sleep(1.1)
    with pytest.raises(ExpiredTokenException):
        verify(signed, lambda akid: sessions.signing_key(akid, token), datetime.now(UTC))


def test_lambda_trust() -> None:
    assert lambda_may_assume(ROLE, _trust({"Service": "lambda.amazonaws.com"}))
    assert lambda_may_assume(
        ROLE, _trust({"Service": ["ec2.amazonaws.com", "lambda.amazonaws.com"]})
    )
    assert lambda_may_assume(ROLE, _trust("*"))
    assert lambda_may_assume(ROLE, _trust({"Service": "lambda.amazonaws.com"}, action="sts:*"))
    assert not lambda_may_assume(ROLE, _trust({"Service": "ec2.amazonaws.com"}))
    assert not lambda_may_assume(ROLE, _trust({"AWS": "arn:aws:iam::000000000000:root"}))
    assert not lambda_may_assume(
        ROLE, _trust({"Service": "lambda.amazonaws.com"}, action="sts:TagSession")
    )
    deny = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Principal": "*", "Action": "sts:AssumeRole"},
                {
                    "Effect": "Deny",
                    "Principal": {"Service": "lambda.amazonaws.com"},
                    "Action": "sts:AssumeRole",
                },
            ],
        }
    )
    assert not lambda_may_assume(ROLE, deny)
    assert not lambda_may_assume(ROLE, "{not json")
    assert service_may_assume(
        ROLE, _trust({"Service": "edgelambda.amazonaws.com"}), "edgelambda.amazonaws.com"
    )


def test_speed() -> None:
    """Minting sits on the cold-start path and opening on every signed request: microseconds."""
    sessions = InstanceSessions()
    n = 5000
    began = time.perf_counter()
    minted = [sessions.mint(ROLE, "my-function", 21600) for _ in range(n)]
    mint_us = (time.perf_counter() - began) / n * 1e6
    began = time.perf_counter()
    for creds in minted:
        sessions.signing_key(creds.access_key_id, creds.session_token)
    open_us = (time.perf_counter() - began) / n * 1e6
    print(f"\ninstance sessions: mint {mint_us:.1f} µs, open (signing_key) {open_us:.1f} µs")
    assert mint_us < 500 and open_us < 500  # generous: a loaded CI box, not a benchmark
