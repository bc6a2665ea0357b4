"""SigV4 verification against requests signed by botocore's own signers."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest import mock
from urllib.parse import urlsplit

import botocore.session
import pytest
from botocore.auth import S3SigV4QueryAuth, SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest, AWSResponse
from botocore.credentials import Credentials
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lamina.auth import sigv4
from lamina.auth.identity import Principal, SigningKey
from lamina.auth.sigv4 import SignedRequest, credential_scope, verify
from lamina.errors import (
    ExpiredTokenException,
    InvalidSignatureException,
    MissingAuthenticationTokenException,
    UnrecognizedClientException,
)

AUTH_ERRORS = (
    MissingAuthenticationTokenException,
    UnrecognizedClientException,
    InvalidSignatureException,
    ExpiredTokenException,
)
T0 = datetime(2024, 1, 1, 0, 10, 0, tzinfo=UTC)
ENDPOINT = "http://127.0.0.1:4850"
ARN_PATH = (
    "/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-east-1%3A000000000000%3Afunction%3Af/invocations"
)
TOKEN = "FwoGZXIvYXdzEXAMPLE+token/with=odd&chars"


def _key(akid: str, secret: str, **kw: Any) -> SigningKey:
    principal = Principal("user", "000000000000", f"arn:aws:iam::000000000000:user/{akid}",
                          "AIDAEXAMPLE", akid, akid)  # fmt: skip
    return SigningKey(akid, secret, principal, **kw)


KEYS = {
    k.access_key_id: k
    for k in (
        _key("AKIDPERM", "perm/secret+key"),
        _key("ASIATEMP", "temp-secret", session_token=TOKEN, expires=T0 + timedelta(hours=1)),
        _key("ASIAOLD", "old-secret", session_token=TOKEN, expires=T0 - timedelta(seconds=1)),
        _key("AKIDOFF", "off-secret", active=False),
        _key(
            "ASIALIVE", "live-secret", session_token=TOKEN, expires=datetime(2100, 1, 1, tzinfo=UTC)
        ),
    )
}
CREDS = {
    "perm": Credentials("AKIDPERM", "perm/secret+key"),
    "temp": Credentials("ASIATEMP", "temp-secret", TOKEN),
    "old": Credentials("ASIAOLD", "old-secret", TOKEN),
    "off": Credentials("AKIDOFF", "off-secret"),
    "unknown": Credentials("AKIDNOPE", "whatever"),
    "wrongsecret": Credentials("AKIDPERM", "not-the-secret"),
    "wrongtoken": Credentials("ASIATEMP", "temp-secret", "another-token"),
    "notoken": Credentials("ASIATEMP", "temp-secret"),
    "permtoken": Credentials("AKIDPERM", "perm/secret+key", TOKEN),
}


def lookup(akid: str) -> SigningKey | None:
    return KEYS.get(akid)


def _to_signed(req: AWSRequest) -> SignedRequest:
    prepared = req.prepare()
    url = urlsplit(prepared.url)
    headers = {k.lower(): v for k, v in prepared.headers.items()}
    headers.setdefault("host", url.netloc)
    body = prepared.body or b""
    body = body.encode() if isinstance(body, str) else body
    return SignedRequest(prepared.method, url.path, url.query, headers, body)


def sign(
    method: str,
    path: str,
    *,
    service: str = "lambda",
    body: bytes | dict[str, str] = b"",
    headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
    creds: str = "perm",
    when: datetime = T0,
    presign: int | None = None,
) -> SignedRequest:
    req = AWSRequest(method, ENDPOINT + path, dict(headers or {}), body, params or {})
    if presign is None:
        signer: SigV4Auth = SigV4Auth(CREDS[creds], service, "us-east-1")
    else:
        cls = S3SigV4QueryAuth if service == "s3" else SigV4QueryAuth
        signer = cls(CREDS[creds], service, "us-east-1", expires=presign)
    with mock.patch("botocore.auth.get_current_datetime", return_value=when.replace(tzinfo=None)):
        signer.add_auth(req)
    return _to_signed(req)


def ok(req: SignedRequest, now: datetime = T0) -> sigv4.Verified:
    return verify(req, lookup, now)


def fails(req: SignedRequest, exc: type[Exception], now: datetime = T0) -> str:
    with pytest.raises(exc) as info:
        verify(req, lookup, now)
    assert type(info.value) is exc
    return str(info.value)


JSON = {"content-type": "application/json"}
CASES = [
    ("lambda", "GET", "/2015-03-31/functions/", b"", {}),
    ("lambda", "POST", ARN_PATH + "?Qualifier=1", b'{"x": 1}',
     {**JSON, "X-Amz-Invocation-Type": "RequestResponse", "X-Amz-Log-Type": "Tail"}),
    ("lambda", "DELETE", "/2015-03-31/functions/f?Qualifier=%24LATEST", b"", {}),
    ("lambda", "GET", "/2015-03-31/functions/?b=%20x%2Fy&a=2&a=1&c=~._-&empty=&flag&u=%C3%A9",
     b"", {}),
    ("lambda", "GET", "/2015-03-31//functions/./x/../f%2Fg/", b"", {"X-Odd": "  a   b  c "}),
    ("iam", "POST", "/", b"Action=CreateUser&UserName=bob&Version=2010-05-08",
     {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}),
    ("sts", "POST", "/", b"Action=GetCallerIdentity&Version=2011-06-15",
     {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-{c[1]}-{c[2][:30]}")
@pytest.mark.parametrize("creds", ["perm", "temp"])
def test_header_form_verifies(case: tuple[Any, ...], creds: str) -> None:
    service, method, path, body, headers = case
    req = sign(method, path, service=service, body=body, headers=headers, creds=creds)
    got = ok(req)
    assert got.key is KEYS[CREDS[creds].access_key]
    assert (got.region, got.service) == ("us-east-1", service)
    assert credential_scope(req) == (CREDS[creds].access_key, "20240101", "us-east-1", service)


def test_params_dict_and_date_header_and_unsigned_payload() -> None:
    ok(sign("GET", "/x", params={"b": "x y", "a": "é:/"}))  # sent with '+' for the space
    req = sign("GET", "/x", headers={"Date": "placeholder"})  # botocore signs Date instead
    assert "x-amz-date" not in req.headers
    ok(req)
    req = sign("POST", "/x", body=b"abc", headers={"X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"})
    ok(replace(req, body=b"anything"))


def test_declared_payload_hash_is_checked() -> None:
    good = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"  # sha256("abc")
    req = sign("POST", "/x", body=b"abc", headers={"X-Amz-Content-SHA256": good})
    ok(req)
    assert "x-amz-content-sha256" in fails(replace(req, body=b"abd"), InvalidSignatureException)


def test_real_clients_through_botocore() -> None:
    session = botocore.session.get_session()
    captured: list[SignedRequest] = []

    def capture(request: Any, **_: Any) -> AWSResponse:
        url = urlsplit(request.url)
        headers = {
            k.lower(): v.decode("latin-1") if isinstance(v, bytes) else v
            for k, v in request.headers.items()
        }
        headers.setdefault("host", url.netloc)
        body = request.body or b""
        body = body.encode() if isinstance(body, str) else body
        captured.append(SignedRequest(request.method, url.path, url.query, headers, body))
        return AWSResponse(request.url, 599, {}, None)

    kw: dict[str, Any] = dict(region_name="us-east-1", endpoint_url=ENDPOINT,
                              aws_access_key_id="ASIALIVE", aws_secret_access_key="live-secret",
                              aws_session_token=TOKEN)  # fmt: skip
    calls: list[tuple[str, Callable[[Any], object]]] = [
        ("lambda", lambda c: c.invoke(FunctionName="arn:aws:lambda:us-east-1:0:function:f",
                                      Qualifier="1", Payload=b'{"a": "b c"}')),
        ("lambda", lambda c: c.delete_function(FunctionName="f", Qualifier="$LATEST")),
        ("iam", lambda c: c.create_user(UserName="bob", Path="/a b/")),
        ("sts", lambda c: c.get_caller_identity()),
    ]  # fmt: skip
    for service, call in calls:
        client = session.create_client(service, **kw)
        client.meta.events.register("before-send", capture)
        with pytest.raises(Exception):  # noqa: B017 - the fake 599 answer is an error
            call(client)
    assert len(captured) == 4
    assert "%253A" not in captured[0].raw_path and "%3A" in captured[0].raw_path
    now = datetime.now(UTC)
    for req in captured:
        assert ok(req, now).key.access_key_id == "ASIALIVE"
    url = session.create_client("sts", **kw).generate_presigned_url(
        "get_caller_identity", ExpiresIn=60, HttpMethod="GET"
    )  # without HttpMethod botocore signs POST (the operation's method), as AWS rejects too
    parts = urlsplit(url)
    presigned = SignedRequest("GET", parts.path, parts.query, {"host": parts.netloc}, b"")
    assert ok(presigned, now).service == "sts"


def test_presigned_valid_expired_and_not_yet_current() -> None:
    req = sign("GET", ARN_PATH + "?Qualifier=1", presign=600, creds="temp")
    assert "X-Amz-Signature=" in req.query_string and "authorization" not in req.headers
    ok(req)
    ok(req, T0 + timedelta(seconds=600))
    msg = fails(req, InvalidSignatureException, T0 + timedelta(seconds=601))
    assert msg == (
        "Signature expired: 20240101T001000Z is now earlier than 20240101T001001Z "
        "(20240101T002001Z - 600 sec.)"
    )
    msg = fails(req, InvalidSignatureException, T0 - timedelta(minutes=16))
    assert msg.startswith("Signature not yet current: 20240101T001000Z is still later than")
    tampered = req.query_string.replace("Qualifier=1", "Qualifier=2")
    assert fails(replace(req, query_string=tampered), InvalidSignatureException) == sigv4.MISMATCH
    no_token = "&".join(p for p in req.query_string.split("&") if "Security-Token" not in p)
    fails(replace(req, query_string=no_token), UnrecognizedClientException)


def test_presigned_form_body_and_unsigned_payload() -> None:
    req = sign("POST", "/", service="sts", presign=60,
               body={"Action": "GetCallerIdentity", "Version": "2011-06-15"})  # fmt: skip
    assert "Action=GetCallerIdentity" in req.query_string and req.body == b""
    ok(req)
    with mock.patch.object(SigV4QueryAuth, "payload", return_value="UNSIGNED-PAYLOAD"):
        ok(sign("GET", "/x", presign=60))
    ok(sign("GET", "/bucket/a%3Ab", service="s3", presign=60))  # s3 presigns UNSIGNED-PAYLOAD


@pytest.mark.parametrize(
    ("offset", "error"),
    [
        (timedelta(minutes=14), None),
        (timedelta(minutes=-14), None),
        (timedelta(minutes=16), "Signature expired"),
        (timedelta(minutes=-16), "Signature not yet current"),
    ],
)
def test_clock_skew(offset: timedelta, error: str | None) -> None:
    req = sign("GET", "/x")
    if error is None:
        ok(req, T0 + offset)
    else:
        assert fails(req, InvalidSignatureException, T0 + offset).startswith(error)


def test_clock_skew_messages() -> None:
    req = sign("GET", "/x", when=datetime(2024, 1, 1, tzinfo=UTC))
    now = datetime(2024, 1, 1, 0, 25, tzinfo=UTC)
    assert fails(req, InvalidSignatureException, now) == (
        "Signature expired: 20240101T000000Z is now earlier than 20240101T001000Z "
        "(20240101T002500Z - 15 min.)"
    )
    req = sign("GET", "/x", when=datetime(2024, 1, 1, 0, 30, tzinfo=UTC))
    now = datetime(2024, 1, 1, 0, 5, tzinfo=UTC)
    assert fails(req, InvalidSignatureException, now) == (
        "Signature not yet current: 20240101T003000Z is still later than 20240101T002000Z "
        "(20240101T000500Z + 15 min.)"
    )


@pytest.mark.parametrize(
    ("creds", "error", "message"),
    [
        ("unknown", UnrecognizedClientException, sigv4.INVALID_TOKEN),
        ("off", UnrecognizedClientException, sigv4.INVALID_TOKEN),
        ("wrongtoken", UnrecognizedClientException, sigv4.INVALID_TOKEN),
        ("notoken", UnrecognizedClientException, sigv4.INVALID_TOKEN),
        ("permtoken", UnrecognizedClientException, sigv4.INVALID_TOKEN),
        ("old", ExpiredTokenException, sigv4.EXPIRED_TOKEN),
        ("wrongsecret", InvalidSignatureException, sigv4.MISMATCH),
    ],
)
def test_key_and_token_failures(creds: str, error: type[Exception], message: str) -> None:
    assert fails(sign("POST", "/x", body=b"{}", creds=creds), error) == message
    assert message == str(error(message))  # sanity: message reaches the client unchanged


def test_tampering_is_rejected() -> None:
    req = sign("POST", ARN_PATH + "?Qualifier=1", body=b'{"a": 1}', headers=JSON)
    ok(req)
    h = dict(req.headers)
    for bad in [
        replace(req, body=b'{"a": 2}'),
        replace(req, headers={**h, "content-type": "text/plain"}),
        replace(req, raw_path=req.raw_path.replace("%3Af/", "%3Ag/")),
        replace(req, raw_path=req.raw_path.replace("%3A", ":")),  # different bytes on the wire
        replace(req, query_string="Qualifier=2"),
        replace(req, query_string="Qualifier=1&extra=1"),
        replace(req, method="PUT"),
        replace(req, headers={**h, "x-amz-date": "20240101T001001Z"}),
        replace(req, headers={**h, "host": "evil:4850"}),
    ]:
        assert fails(bad, InvalidSignatureException) == sigv4.MISMATCH
    ok(replace(req, headers={**h, "user-agent": "other", "x-unsigned": "1"}))


def _with_auth(req: SignedRequest, authorization: str | None, **extra: str) -> SignedRequest:
    headers = {k: v for k, v in req.headers.items() if k != "authorization"}
    if authorization is not None:
        headers["authorization"] = authorization
    return replace(req, headers={**headers, **extra})


def test_malformed_authorization() -> None:
    req = sign("GET", "/x")
    auth = req.headers["authorization"]
    cred = auth.split("Credential=")[1].split(",")[0]
    sig = auth.split("Signature=")[1]
    cases = {
        auth.replace("AWS4-HMAC-SHA256", "AWS4-HMAC-SHA512"): "Unsupported Authorization",
        f"AWS4-HMAC-SHA256 SignedHeaders=host, Signature={sig}": "requires 'Credential'",
        f"AWS4-HMAC-SHA256 Credential={cred}": "requires 'SignedHeaders' parameter. Auth",
        f"AWS4-HMAC-SHA256 Credential={cred}, SignedHeaders=host": "requires 'Signature'",
        auth.replace("Credential=", "Credential "): "key=value",
        auth.replace("/aws4_request", "/aws5_request"): "valid terminator",
        auth.replace("/aws4_request", ""): "exactly 5 slash-delimited",
        auth.replace("/20240101/", "/20240102/"): "'20240102' != '20240101'",
        auth.replace("/20240101/", "/2024-1-1/"): "YYYYMMDD",
        auth.replace("/us-east-1/", "/us east/"): "valid region",
        auth.replace("SignedHeaders=host;", "SignedHeaders="): "'Host' or ':authority'",
        auth.replace("SignedHeaders=host;", "SignedHeaders=host;x-nope;"): "'x-nope' is missing",
        auth.replace(sig, sig.upper()): "does not match",
    }
    for value, fragment in cases.items():
        msg = fails(_with_auth(req, value), InvalidSignatureException)
        assert fragment in msg, (value, msg)
        assert sig not in msg and sig.upper() not in msg
    no_date = {k: v for k, v in req.headers.items() if k != "x-amz-date"}
    msg = fails(replace(req, headers=no_date), InvalidSignatureException)
    assert "'X-Amz-Date' or a 'Date'" in msg
    for bad_date in ["2024-01-01T00:10:00Z", "20241301T001000Z", "99999999T999999Z"]:
        fails(_with_auth(req, auth, **{"x-amz-date": bad_date}), InvalidSignatureException)
    fails(_with_auth(req, auth, date="not a date", **{"x-amz-date": ""}), InvalidSignatureException)
    both = replace(req, query_string="X-Amz-Algorithm=AWS4-HMAC-SHA256")
    assert "Only one auth mechanism" in fails(both, InvalidSignatureException)


def test_missing_authentication() -> None:
    req = _with_auth(sign("GET", "/x?a=1"), None)
    assert fails(req, MissingAuthenticationTokenException) == "Missing Authentication Token"
    assert fails(_with_auth(req, "  "), MissingAuthenticationTokenException)
    assert credential_scope(req) is None


def test_malformed_presigned_query() -> None:
    q = sign("GET", "/x", presign=60).query_string
    for bad, fragment in [
        (q.replace("X-Amz-Expires=60", "X-Amz-Expires=604801"), "X-Amz-Expires"),
        (q.replace("X-Amz-Expires=60", "X-Amz-Expires=0"), "X-Amz-Expires"),
        (q.replace("X-Amz-Expires=60", "X-Amz-Expires=" + "9" * 5000), "X-Amz-Expires"),
        (q.replace("X-Amz-Algorithm=AWS4-HMAC-SHA256", "X-Amz-Algorithm=HMAC"), "only supports"),
        (q.replace("&X-Amz-Expires=60", ""), "must include"),
        (q + "&X-Amz-Date=20240101T001000Z", "Duplicate X-Amz-Date"),
        (q.replace("X-Amz-Date=20240101T001000Z", "X-Amz-Date=20240101"), "ISO8601"),
        (q.replace("X-Amz-Credential=AKIDPERM", "X-Amz-Credential=%FF%FE"), "could not be parsed"),
    ]:
        req = SignedRequest("GET", "/x", bad, {"host": "127.0.0.1:4850"}, b"")
        assert fragment in fails(req, InvalidSignatureException), bad


def test_credential_scope_is_cheap_and_total() -> None:
    assert credential_scope(sign("GET", "/x", presign=60, service="sts")) == (
        "AKIDPERM", "20240101", "us-east-1", "sts",
    )  # fmt: skip
    garbage = SignedRequest("GET", "/", "", {"authorization": "AWS4-HMAC-SHA256 x"}, b"")
    assert credential_scope(garbage) is None


def test_signing_key_cache_is_bounded_and_used() -> None:
    info = sigv4._signing_key.cache_info()
    assert info.maxsize is not None and 0 < info.maxsize <= 1024
    req = sign("GET", "/x")
    ok(req)
    before = sigv4._signing_key.cache_info().hits
    ok(req)
    assert sigv4._signing_key.cache_info().hits == before + 1


def test_lookup_errors_propagate() -> None:
    def broken(_: str) -> SigningKey | None:
        raise RuntimeError("database down")

    with pytest.raises(RuntimeError):
        verify(sign("GET", "/x"), broken, T0)


# --- fuzz -------------------------------------------------------------------------------------

_VALID = sign("POST", ARN_PATH + "?Qualifier=1", body=b"{}", headers=JSON)
_text = st.text(max_size=80)
_piece = st.one_of(
    _text,
    st.sampled_from(["AWS4-HMAC-SHA256", "Credential=", "SignedHeaders=", "Signature=", ",",
                     " ", "=", "/", ";", "host", "AKIDPERM/20240101/us-east-1/lambda/aws4_request",
                     "ASIATEMP/20240101/us-east-1/lambda/aws4_request", "%", "%zz", "é", "\ud800",
                     "x-amz-date", "a" * 64, "9" * 5000]),
)  # fmt: skip
_compound = st.lists(_piece, max_size=12).map("".join)
_auth = st.one_of(_compound, st.just(_VALID.headers["authorization"]))
_qkeys = st.sampled_from(
    ["X-Amz-" + p for p in ("Algorithm", "Credential", "Date", "Expires", "SignedHeaders",
                            "Signature", "Security-Token")] + ["Qualifier", "a%20b", "+"]
)  # fmt: skip
_query = st.one_of(
    _compound,
    st.lists(st.tuples(st.one_of(_qkeys, _text), _compound), max_size=8).map(
        lambda kv: "&".join(f"{k}={v}" for k, v in kv)
    ),
)
_hname = st.one_of(
    st.sampled_from(["host", "x-amz-date", "date", "x-amz-security-token", "content-type",
                     "x-amz-content-sha256", "authorization"]),
    _text,
)  # fmt: skip
_hvalue = st.one_of(
    _compound,
    st.sampled_from(["20240101T001000Z", "Mon, 01 Jan 2024 00:10:00 GMT", TOKEN, "UNSIGNED-PAYLOAD",
                     "99991231T235959Z", "00000101T000000Z", "a" * 64]),
)  # fmt: skip


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    auth=st.one_of(st.none(), _auth),
    query=_query,
    headers=st.dictionaries(_hname, _hvalue, max_size=6),
    body=st.binary(max_size=64),
    path=st.one_of(_compound, st.just(_VALID.raw_path)),
    method=st.sampled_from(["GET", "POST", "DELETE", "", "gét"]),
)
def test_fuzz_only_auth_errors(
    auth: str | None, query: str, headers: dict[str, str], body: bytes, path: str, method: str
) -> None:
    if auth is not None:
        headers = {**headers, "authorization": auth}
    req = SignedRequest(method, path, query, headers, body)
    credential_scope(req)  # never raises
    for now in (T0, datetime.max.replace(tzinfo=UTC), datetime.min.replace(tzinfo=UTC)):
        try:
            verify(req, lookup, now)
        except AUTH_ERRORS as e:
            assert "perm/secret" not in str(e) and "temp-secret" not in str(e)


def test_fuzz_near_valid_requests() -> None:
    """Mutate every single character of a valid request: always an auth error, never a crash."""
    h = _VALID.headers
    for name, value in h.items():
        for i in range(len(value)):
            for ch in ("\x00", "é", "%", " "):
                mutated = {**h, name: value[:i] + ch + value[i + 1 :]}
                with contextlib.suppress(*AUTH_ERRORS):
                    ok(replace(_VALID, headers=mutated))
    assert json.loads(_VALID.body) == {}
