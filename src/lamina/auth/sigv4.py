"""Server-side AWS Signature Version 4 verification (pure: no I/O, no web framework).

The web middleware builds a `SignedRequest` from the ASGI scope and calls `verify`:

1. **Parse.** Either the `Authorization: AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…,
   Signature=…` header (date from `X-Amz-Date`, else `Date`) or a presigned query
   (`X-Amz-Algorithm`, `X-Amz-Credential`, `X-Amz-Date`, `X-Amz-Expires`, `X-Amz-SignedHeaders`,
   `X-Amz-Signature`, optional `X-Amz-Security-Token`). Neither → MissingAuthenticationToken;
   anything malformed → InvalidSignatureException saying what is wrong.
2. **Time.** Header form: the request date must lie within 15 minutes of `now`. Presigned: `now`
   must not be past date + X-Amz-Expires, nor the date more than 15 minutes in the future.
3. **Key.** `lookup(access_key_id)`; unknown/inactive keys and wrong/missing/unexpected session
   tokens → UnrecognizedClientException; temporary keys past `expires` → ExpiredTokenException.
4. **Signature.** Rebuild the canonical request exactly as botocore does (non-S3 services:
   the received, already-encoded path is dot-normalized and percent-encoded once more; query
   pairs decoded, RFC 3986 re-encoded and sorted; signed headers trimmed; payload hash from
   `x-amz-content-sha256` or SHA-256 of the body — presigned requests also accept
   UNSIGNED-PAYLOAD), derive the signing key (LRU-cached per secret/date/region/service) and
   compare HMACs in constant time.

`credential_scope` is the cheap, never-raising parse used to dispatch by service before
verification. Exception messages never contain secrets, signatures or derived keys.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from functools import lru_cache
from typing import NamedTuple
from urllib.parse import quote, unquote_to_bytes

from lamina.auth.identity import SigningKey
from lamina.errors import (
    ExpiredTokenException,
    InvalidSignatureException,
    MissingAuthenticationTokenException,
    UnrecognizedClientException,
)

ALGORITHM = "AWS4-HMAC-SHA256"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
_STREAMING_UNSIGNED = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
MAX_SKEW = timedelta(minutes=15)
MAX_EXPIRES = 604800  # seven days
AMZ_DATE_FORMAT = "%Y%m%dT%H%M%SZ"
MISMATCH = ("The request signature we calculated does not match the signature you provided. "
            "Check your AWS Secret Access Key and signing method. Consult the service "
            "documentation for details.")  # fmt: skip
INVALID_TOKEN = "The security token included in the request is invalid."
MISSING = "Missing Authentication Token"
EXPIRED_TOKEN = "The security token included in the request is expired"
# Services whose clients sign the path as sent (botocore's S3 signers skip normalization).
SINGLE_ENCODED_SERVICES = frozenset({"s3", "s3express", "s3-object-lambda"})
_FIELDS = ("Credential", "SignedHeaders", "Signature")
_QUERY_PARAMS = ("Algorithm", "Date", "Expires", *_FIELDS, "Security-Token")
_MISSING_QUERY = ("AWS query-string parameters must include 'X-Amz-Algorithm', "
                  "'X-Amz-Credential', 'X-Amz-Signature', 'X-Amz-Date', 'X-Amz-SignedHeaders', "
                  "and 'X-Amz-Expires'. Re-examine the query-string parameters.")  # fmt: skip
_AMZ_DATE = re.compile(r"([0-9]{4})([0-9]{2})([0-9]{2})T([0-9]{2})([0-9]{2})([0-9]{2})Z")
_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
# access key id (printable ASCII but '/'), date, region, service, terminator
_SCOPE_CHECKS = (re.compile(r"[!-.0-~]{1,128}"), re.compile(r"[0-9]{8}"), _NAME, _NAME,
                 re.compile(r"aws4_request"))  # fmt: skip
_SCOPE_WHAT = ("name a valid access key id", "be scoped to a date in the form YYYYMMDD",
               "be scoped to a valid region", "be scoped to a valid service",
               "be scoped with a valid terminator: 'aws4_request'")  # fmt: skip
_HEADER = re.compile(r"[!-~]{1,256}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_EXPIRES = re.compile(r"[0-9]{1,6}")
_RESERVED = re.compile(rb"[^A-Za-z0-9_.~-]")
_PLAIN_PATH = re.compile(r"[A-Za-z0-9_.~/%-]*")


@dataclass(frozen=True, slots=True)
class SignedRequest:
    """What the middleware hands over. Header values should be decoded as latin-1 (what
    http.client sends for str values), repeated headers joined with ','."""

    method: str
    raw_path: str  # as received on the wire, still percent-encoded (ASGI raw_path)
    query_string: str  # raw, no leading '?'
    headers: Mapping[str, str]  # lower-case names
    body: bytes = b""


@dataclass(frozen=True, slots=True)
class Verified:
    key: SigningKey
    region: str
    service: str  # credential-scope service: "lambda", "iam", "sts", …


class CredentialScope(NamedTuple):
    access_key_id: str
    date: str  # YYYYMMDD
    region: str
    service: str


@dataclass(frozen=True, slots=True)
class _Auth:
    presigned: bool
    scope: CredentialScope
    signed_headers: list[str]
    signature: str
    amz_date: str
    when: datetime
    expires: int  # presigned only
    token: str | None
    query: list[tuple[bytes, bytes]]  # decoded pairs for the canonical query


_bad = InvalidSignatureException


def _utc(dt: datetime) -> datetime:
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def _fmt(dt: datetime) -> str:
    return dt.strftime(AMZ_DATE_FORMAT)


def _unquote(text: str) -> bytes:
    # '+' is a space (form encoding): botocore sends AWSRequest.params via urlencode, which
    # writes '+', while signing them as %20. SDKs always send a literal '+' as %2B.
    return unquote_to_bytes(text.replace("+", " ")) if "%" in text or "+" in text else text.encode()


def _decoded_query(query_string: str) -> list[tuple[bytes, bytes]]:
    pairs = []
    for part in query_string.split("&"):
        if part:
            key, _, value = part.partition("=")
            pairs.append((_unquote(key), _unquote(value)))
    return pairs


def _parse_scope(credential: str) -> CredentialScope:
    parts = credential.split("/")
    if len(parts) != 5:
        raise _bad(
            "Credential should have exactly 5 slash-delimited elements, "
            "e.g. keyid/date/region/service/term."
        )
    for pattern, part, what in zip(_SCOPE_CHECKS, parts, _SCOPE_WHAT, strict=True):
        if not pattern.fullmatch(part):
            raise _bad(f"Credential should {what}.")
    return CredentialScope(*parts[:4])


def _header_fields(authorization: str) -> dict[str, str]:
    algorithm, _, rest = authorization.partition(" ")
    if algorithm != ALGORITHM:
        raise _bad(f"Unsupported Authorization algorithm: only {ALGORITHM} is accepted.")
    fields: dict[str, str] = {}
    for part in rest.split(","):
        if part := part.strip():
            name, eq, value = part.partition("=")
            if not eq:
                raise _bad("Authorization header component is not a valid key=value pair.")
            fields[name.strip()] = value.strip()
    missing = [n for n in _FIELDS if not fields.get(n)]
    if missing:
        raise _bad(" ".join(f"Authorization header requires '{n}' parameter." for n in missing))
    return fields


def _parse_amz_date(value: str) -> datetime:
    m = _AMZ_DATE.fullmatch(value)
    if m is None:
        raise _bad("X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\".")
    try:
        y, mo, d, h, mi, s = map(int, m.groups())
        return datetime(y, mo, d, h, mi, s, tzinfo=UTC)
    except ValueError:
        raise _bad("X-Amz-Date is not a valid date.") from None


def _parse(req: SignedRequest) -> _Auth:
    headers = req.headers
    authorization = headers.get("authorization", "").strip()
    query = _decoded_query(req.query_string)
    params: dict[str, str] = {}
    for k, v in query:
        if k.startswith(b"X-Amz-") and (name := k[6:].decode("latin-1")) in _QUERY_PARAMS:
            if name in params:
                raise _bad(f"Duplicate X-Amz-{name} query parameter.")
            params[name] = v.decode("utf-8")
    presigned = any(p in params for p in ("Algorithm", "Credential", "Signature"))
    if authorization and presigned:
        raise _bad(
            "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter or "
            "the Authorization header should be specified."
        )
    expires = 0
    if authorization:
        fields = _header_fields(authorization)
        credential, signed, signature = (fields[n] for n in _FIELDS)
        token = headers.get("x-amz-security-token")
        if (amz_date := headers.get("x-amz-date")) is not None:
            amz_date = amz_date.strip()
            when = _parse_amz_date(amz_date)
        elif (http_date := headers.get("date")) is not None:
            try:
                when = _utc(parsedate_to_datetime(http_date))
            except (TypeError, ValueError, IndexError):
                raise _bad("The Date header is not a valid HTTP date.") from None
            amz_date = _fmt(when)
        else:
            raise _bad(
                "Authorization header requires existence of either a 'X-Amz-Date' or a "
                "'Date' header."
            )
    elif presigned:
        if any(not params.get(p) for p in _QUERY_PARAMS[:6]):
            raise _bad(_MISSING_QUERY)
        if params["Algorithm"] != ALGORITHM:
            raise _bad(f'X-Amz-Algorithm only supports "{ALGORITHM}".')
        credential, signed, signature = (params[n] for n in _FIELDS)
        amz_date = params["Date"]
        when = _parse_amz_date(amz_date)
        if not _EXPIRES.fullmatch(params["Expires"]) or not (
            1 <= (expires := int(params["Expires"])) <= MAX_EXPIRES
        ):
            raise _bad(f"X-Amz-Expires must be an integer between 1 and {MAX_EXPIRES}.")
        token = params.get("Security-Token", headers.get("x-amz-security-token"))
        query = [(k, v) for k, v in query if k != b"X-Amz-Signature"]
    else:
        raise MissingAuthenticationTokenException(MISSING)
    scope = _parse_scope(credential)
    if scope.date != amz_date[:8]:
        raise _bad(
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date "
            f"from HTTP: '{scope.date}' != '{amz_date[:8]}', from '{amz_date}'."
        )
    names = signed.split(";")
    if "host" not in names:
        raise _bad("'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.")
    for name in names:
        if name not in headers:
            shown = name if _HEADER.fullmatch(name) else "(invalid name)"
            raise _bad(f"Signed header '{shown}' is missing from the request.")
    return _Auth(presigned, scope, names, signature, amz_date, when, expires, token, query)


def _parse_safely(req: SignedRequest) -> _Auth:
    try:
        return _parse(req)
    except (ValueError, UnicodeError, OverflowError):  # bad bytes, surrogates, huge dates
        raise _bad("The request's signature fields could not be parsed.") from None


def credential_scope(req: SignedRequest) -> CredentialScope | None:
    """Access key id, date, region and service the request claims, or None; never raises
    and verifies nothing (for dispatch by service name)."""
    try:
        return _parse_safely(req).scope
    except (InvalidSignatureException, MissingAuthenticationTokenException):
        return None


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 §5.2.4, plus AWS's collapsing of empty segments (as botocore signs)."""
    out: list[str] = []
    for seg in path.split("/"):
        if seg == "..":
            if out:
                out.pop()
        elif seg and seg != ".":
            out.append(seg)
    lead = "/" if path.startswith("/") else ""
    trail = "/" if path.endswith("/") and out else ""
    return lead + "/".join(out) + trail


def _encode(data: bytes) -> str:
    """RFC 3986 percent-encoding: everything but unreserved characters, upper-case hex."""
    return _RESERVED.sub(lambda m: b"%%%02X" % m[0][0], data).decode("ascii")


def _canonical_uri(raw_path: str, service: str) -> str:
    if not raw_path:
        return "/"
    if service in SINGLE_ENCODED_SERVICES:
        return raw_path
    path = _remove_dot_segments(raw_path)
    if _PLAIN_PATH.fullmatch(path):  # the usual case: only '%' needs encoding (again)
        return path.replace("%", "%25")
    return quote(path, safe="/~")


def _canonical_query(pairs: list[tuple[bytes, bytes]]) -> str:
    encoded = sorted((_encode(k), _encode(v)) for k, v in pairs)
    return "&".join(f"{k}={v}" for k, v in encoded)


def _payload_hashes(req: SignedRequest, auth: _Auth) -> tuple[str, ...]:
    declared = req.headers.get("x-amz-content-sha256")
    if declared is not None:
        if (declared := declared.strip()) in (UNSIGNED_PAYLOAD, _STREAMING_UNSIGNED):
            return (declared,)
        if not _HEX64.fullmatch(declared.lower()):
            raise _bad("x-amz-content-sha256 must be UNSIGNED-PAYLOAD or a hex SHA-256.")
        if declared.lower() != hashlib.sha256(req.body).hexdigest():
            raise _bad("The provided 'x-amz-content-sha256' header does not match the body.")
        return (declared,)
    if auth.presigned and auth.scope.service in SINGLE_ENCODED_SERVICES:
        return (UNSIGNED_PAYLOAD,)
    actual = hashlib.sha256(req.body).hexdigest()
    # presigned: botocore hashes the (usually empty) body unless payload signing is off
    return (actual, UNSIGNED_PAYLOAD) if auth.presigned else (actual,)


@lru_cache(maxsize=512)
def _signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    key = hmac.digest(f"AWS4{secret}".encode(), date.encode(), "sha256")
    for part in (region, service, "aws4_request"):
        key = hmac.digest(key, part.encode(), "sha256")
    return key


def _expected_signatures(req: SignedRequest, auth: _Auth, secret: str) -> Iterator[bytes]:
    scope = auth.scope
    headers = "".join(f"{n}:{' '.join(req.headers[n].split())}\n" for n in auth.signed_headers)
    uri = _canonical_uri(req.raw_path, scope.service)
    query = _canonical_query(auth.query)
    prefix = f"{req.method.upper()}\n{uri}\n{query}\n{headers}\n{';'.join(auth.signed_headers)}\n"
    key = _signing_key(secret, scope.date, scope.region, scope.service)
    head = f"{ALGORITHM}\n{auth.amz_date}\n{'/'.join(scope[1:])}/aws4_request\n"
    for payload in _payload_hashes(req, auth):
        digest = hashlib.sha256((prefix + payload).encode()).hexdigest()
        yield hmac.new(key, (head + digest).encode(), "sha256").hexdigest().encode()


def _check_time(auth: _Auth, now: datetime) -> None:
    window, span = (
        (timedelta(seconds=auth.expires), f"{auth.expires} sec.")
        if auth.presigned
        else (MAX_SKEW, "15 min.")
    )
    if auth.when < now - window:
        raise _bad(
            f"Signature expired: {auth.amz_date} is now earlier than {_fmt(now - window)} "
            f"({_fmt(now)} - {span})"
        )
    if auth.when > now + MAX_SKEW:
        raise _bad(
            f"Signature not yet current: {auth.amz_date} is still later than "
            f"{_fmt(now + MAX_SKEW)} ({_fmt(now)} + 15 min.)"
        )


def _check_key(key: SigningKey | None, token: str | None, now: datetime) -> SigningKey:
    if key is None or not key.active:
        raise UnrecognizedClientException(INVALID_TOKEN)
    if key.session_token is None:
        if token is not None:  # a long-term key presenting a session token
            raise UnrecognizedClientException(INVALID_TOKEN)
    elif token is None or not hmac.compare_digest(
        token.encode("utf-8", "surrogatepass"), key.session_token.encode()
    ):
        raise UnrecognizedClientException(INVALID_TOKEN)
    if key.expires is not None and now >= _utc(key.expires):
        raise ExpiredTokenException(EXPIRED_TOKEN)
    return key


def verify(
    req: SignedRequest, lookup: Callable[[str], SigningKey | None], now: datetime
) -> Verified:
    """Check `req`'s SigV4 signature; return the signing key and scope, or raise one of
    MissingAuthenticationToken / UnrecognizedClient / InvalidSignature / ExpiredToken.
    Exceptions raised by `lookup` itself propagate unchanged."""
    now = _utc(now)
    auth = _parse_safely(req)
    try:
        _check_time(auth, now)
    except OverflowError:
        raise _bad("X-Amz-Date is out of range.") from None
    key = _check_key(lookup(auth.scope.access_key_id), auth.token, now)
    if _HEX64.fullmatch(auth.signature):
        provided = auth.signature.encode()
        try:
            for expected in _expected_signatures(req, auth, key.secret_access_key):
                if hmac.compare_digest(expected, provided):
                    return Verified(key, auth.scope.region, auth.scope.service)
        except (ValueError, UnicodeError):  # e.g. lone surrogates: not what was signed
            pass
    raise _bad(MISMATCH)
