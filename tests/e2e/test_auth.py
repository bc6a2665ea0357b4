"""Authentication and authorization on a real server: SigV4 on every route, IAM policies on
every operation, AWS's error codes for each way a request can fail."""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import boto3
import pytest
from botocore.auth import SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.routing import Route

from lamina.api.access import DispatchRoute, GuardedRoute, PublicRoute
from lamina.api.app import route_table
from tests.e2e.server import ROLE, ROOT_KEY_ENV, Server, create, raw, signed

ACCOUNT = "000000000000"
ROOT = Credentials(ROOT_KEY_ENV["LAMINA_ACCESS_KEY_ID"], ROOT_KEY_ENV["LAMINA_SECRET_ACCESS_KEY"])
ECHO = "def handler(event, context):\n    return event\n"


def _concrete(path: str) -> str:
    """A route's path with its parameters filled in."""
    return re.sub(r"\{(\w+)(:[^}]*)?\}", lambda m: f"x-{m.group(1)}", path)


ROUTES = [(r, m) for r in route_table() if isinstance(r, Route) for m in sorted(r.methods or ())]


def test_every_route_is_guarded_or_declared_public() -> None:
    """A new route cannot be added without a permission check: it must be a GuardedRoute
    (one action, checked before its endpoint), the query dispatcher (checks each action) or
    explicitly public (lamina's health check and its self-signed code URLs)."""
    kinds = {type(r) for r in route_table()}
    assert kinds <= {GuardedRoute, DispatchRoute, PublicRoute}, kinds
    public = sorted(r.path for r in route_table() if isinstance(r, PublicRoute))
    assert public == ["/_lamina/code/{sha}", "/_lamina/health"]


@pytest.mark.parametrize(
    ("route", "method"),
    [(r, m) for r, m in ROUTES if not isinstance(r, PublicRoute) and m != "HEAD"],
    ids=lambda x: x if isinstance(x, str) else x.path,
)
def test_every_route_refuses_an_unsigned_request(server: Server, route: Route, method: str) -> None:
    url = server.url + _concrete(route.path)
    body = b"{}" if method in ("POST", "PUT") else b""
    if isinstance(route, DispatchRoute):
        query = "Action=ListUsers&Version=2010-05-08"
        body = query.encode() if method == "POST" else b""
        url += "" if method == "POST" else "?" + query
    status, headers, payload = raw(url, method, body)
    assert status == 403, (route.path, method, status, payload[:200])
    if isinstance(route, DispatchRoute):
        assert b"<Code>MissingAuthenticationToken</Code>" in payload
    else:
        assert headers["x-amzn-errortype"] == "MissingAuthenticationTokenException"
        assert json.loads(payload)["message"] == "Missing Authentication Token"


def _client(server: Server, service: str, key: str, secret: str, token: str | None = None) -> Any:
    return boto3.client(
        service,
        endpoint_url=server.url,
        region_name="us-east-1",
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        aws_session_token=token,
        config=Config(retries={"total_max_attempts": 1}),
    )


def _code(exc: pytest.ExceptionInfo[ClientError]) -> tuple[str, int]:
    err = exc.value.response
    return err["Error"]["Code"], err["ResponseMetadata"]["HTTPStatusCode"]


def test_unknown_key_and_wrong_secret(server: Server) -> None:
    stranger = _client(server, "lambda", "AKIAUNKNOWNUNKNOWN00", "whatever")
    with pytest.raises(ClientError) as exc:
        stranger.list_functions()
    assert _code(exc) == ("UnrecognizedClientException", 403)
    assert "security token included in the request is invalid" in str(exc.value)

    wrong = _client(server, "lambda", ROOT_KEY_ENV["LAMINA_ACCESS_KEY_ID"], "not-the-secret")
    with pytest.raises(ClientError) as exc:
        wrong.list_functions()
    assert _code(exc) == ("InvalidSignatureException", 403)
    assert "signature we calculated does not match" in str(exc.value)

    iam = _client(server, "iam", ROOT_KEY_ENV["LAMINA_ACCESS_KEY_ID"], "not-the-secret")
    with pytest.raises(ClientError) as exc:
        iam.list_users()
    assert _code(exc) == ("SignatureDoesNotMatch", 403)  # the query protocol's spelling


def test_clock_skew_window(server: Server) -> None:
    creds = Credentials(
        ROOT_KEY_ENV["LAMINA_ACCESS_KEY_ID"], ROOT_KEY_ENV["LAMINA_SECRET_ACCESS_KEY"]
    )
    url = server.url + "/2015-03-31/functions"

    def at(offset: timedelta) -> tuple[int, bytes]:
        request = AWSRequest(method="GET", url=url)
        skewed = (datetime.now(UTC) + offset).replace(tzinfo=None)
        # a client whose clock is off by `offset` (botocore reads its clock through this)
        with mock.patch("botocore.auth.get_current_datetime", return_value=skewed):
            SigV4Auth(creds, "lambda", "us-east-1").add_auth(request)
        status, _, body = raw(url, "GET", b"", dict(request.headers))
        return status, body

    assert at(timedelta(minutes=-14))[0] == 200
    assert at(timedelta(minutes=14))[0] == 200
    status, body = at(timedelta(minutes=-16))
    assert status == 403 and b"Signature expired" in body
    status, body = at(timedelta(minutes=16))
    assert status == 403 and b"Signature not yet current" in body


def test_presigned_query_form(server: Server) -> None:
    creds = Credentials(
        ROOT_KEY_ENV["LAMINA_ACCESS_KEY_ID"], ROOT_KEY_ENV["LAMINA_SECRET_ACCESS_KEY"]
    )
    request = AWSRequest(method="GET", url=server.url + "/2015-03-31/functions")
    SigV4QueryAuth(creds, "lambda", "us-east-1", expires=60).add_auth(request)
    status, _, body = raw(request.url)
    assert status == 200 and b"Functions" in body
    status, _, _ = raw(request.url.replace("X-Amz-Expires=60", "X-Amz-Expires=61"))
    assert status == 403


@pytest.fixture(scope="module")
def people(server: Server, lam: Any) -> Iterator[dict[str, Any]]:
    """An IAM user with no policies, one allowed to read function `auth-a` only, and a role
    the second may assume."""
    iam = server.client("iam")
    create(lam, "auth-a", ECHO)
    create(lam, "auth-b", ECHO)
    made: dict[str, Any] = {}
    for name in ("auth-nobody", "auth-reader"):
        iam.create_user(UserName=name)
        made[name] = iam.create_access_key(UserName=name)["AccessKey"]
    a_arn = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:auth-a"
    iam.put_user_policy(
        UserName="auth-reader",
        PolicyName="read-a",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Action": ["lambda:Get*", "lambda:InvokeFunction"],
                        "Resource": a_arn,
                    },
                    {"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": "*"},
                    {
                        "Effect": "Deny",
                        "Action": "lambda:InvokeFunction",
                        "Resource": a_arn,
                        "Condition": {"StringEquals": {"aws:username": "nobody-matches"}},
                    },
                ],
            }
        ),
    )
    iam.create_role(
        RoleName="auth-lister",
        AssumeRolePolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
                        "Action": "sts:AssumeRole",
                    }
                ],
            }
        ),
    )
    iam.put_role_policy(
        RoleName="auth-lister",
        PolicyName="list",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {"Effect": "Allow", "Action": "lambda:ListFunctions", "Resource": "*"}
                ],
            }
        ),
    )
    time.sleep(0)  # policies apply at once (IAM's eventual consistency is not imitated)
    yield made


def _as(server: Server, key: dict[str, Any], service: str = "lambda") -> Any:
    return _client(server, service, key["AccessKeyId"], key["SecretAccessKey"])


def test_user_without_policies_is_denied_everything(server: Server, people: dict[str, Any]) -> None:
    nobody = _as(server, people["auth-nobody"])
    with pytest.raises(ClientError) as exc:
        nobody.get_function(FunctionName="auth-a")
    assert _code(exc) == ("AccessDeniedException", 403)
    assert exc.value.response["Error"]["Message"] == (
        f"User: arn:aws:iam::{ACCOUNT}:user/auth-nobody is not authorized to perform: "
        f"lambda:GetFunction on resource: arn:aws:lambda:us-east-1:{ACCOUNT}:function:auth-a "
        "because no identity-based policy allows the lambda:GetFunction action"
    )
    with pytest.raises(ClientError) as exc:
        nobody.list_functions()
    assert _code(exc) == ("AccessDeniedException", 403)
    iam = _as(server, people["auth-nobody"], "iam")
    with pytest.raises(ClientError) as exc:
        iam.create_user(UserName="auth-escalated")
    assert _code(exc) == ("AccessDenied", 403)
    # who am I needs no permission
    sts = _as(server, people["auth-nobody"], "sts")
    assert sts.get_caller_identity()["Arn"] == f"arn:aws:iam::{ACCOUNT}:user/auth-nobody"


def test_policy_allows_exactly_what_it_names(server: Server, people: dict[str, Any]) -> None:
    reader = _as(server, people["auth-reader"])
    assert reader.get_function(FunctionName="auth-a")["Configuration"]["FunctionName"] == "auth-a"
    assert reader.get_function_configuration(FunctionName="auth-a")["FunctionName"] == "auth-a"
    out = reader.invoke(FunctionName="auth-a", Payload=b'{"hi": 1}')
    assert json.loads(out["Payload"].read()) == {"hi": 1}
    for call in (
        lambda: reader.get_function(FunctionName="auth-b"),
        lambda: reader.invoke(FunctionName="auth-b", Payload=b"{}"),
        lambda: reader.update_function_configuration(FunctionName="auth-a", Timeout=5),
        lambda: reader.delete_function(FunctionName="auth-a"),
    ):
        with pytest.raises(ClientError) as exc:
            call()
        assert _code(exc) == ("AccessDeniedException", 403)
    # a qualified ARN is a different resource from the unqualified one
    with pytest.raises(ClientError) as exc:
        reader.invoke(FunctionName="auth-a", Qualifier="$LATEST", Payload=b"{}")
    assert _code(exc) == ("AccessDeniedException", 403)


def test_explicit_deny_wins(server: Server, people: dict[str, Any]) -> None:
    iam = server.client("iam")
    iam.put_user_policy(
        UserName="auth-reader",
        PolicyName="deny-invoke",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Deny", "Action": "lambda:Invoke*", "Resource": "*"}],
            }
        ),
    )
    try:
        reader = _as(server, people["auth-reader"])
        with pytest.raises(ClientError) as exc:
            reader.invoke(FunctionName="auth-a", Payload=b"{}")
        assert _code(exc) == ("AccessDeniedException", 403)
        assert "with an explicit deny in an identity-based policy" in str(exc.value)
        assert reader.get_function(FunctionName="auth-a")  # the rest still allowed
    finally:
        iam.delete_user_policy(UserName="auth-reader", PolicyName="deny-invoke")
    assert _as(server, people["auth-reader"]).invoke(FunctionName="auth-a", Payload=b"{}")


def test_assumed_role_session_has_the_roles_permissions(
    server: Server, people: dict[str, Any]
) -> None:
    sts = _as(server, people["auth-reader"], "sts")
    role = f"arn:aws:iam::{ACCOUNT}:role/auth-lister"
    creds = sts.assume_role(RoleArn=role, RoleSessionName="s1", DurationSeconds=900)["Credentials"]
    assert creds["AccessKeyId"].startswith("ASIA")
    session = _client(
        server, "lambda", creds["AccessKeyId"], creds["SecretAccessKey"], creds["SessionToken"]
    )
    names = {f["FunctionName"] for f in session.list_functions()["Functions"]}
    assert {"auth-a", "auth-b"} <= names
    with pytest.raises(ClientError) as exc:
        session.get_function(FunctionName="auth-a")  # the role, not the user who assumed it
    assert _code(exc) == ("AccessDeniedException", 403)
    assert "assumed-role/auth-lister/s1 is not authorized" in str(exc.value)
    me = _client(
        server, "sts", creds["AccessKeyId"], creds["SecretAccessKey"], creds["SessionToken"]
    ).get_caller_identity()
    assert me["Arn"] == f"arn:aws:sts::{ACCOUNT}:assumed-role/auth-lister/s1"
    # the session token is part of the credentials: without it, or altered, nothing
    for token in (None, creds["SessionToken"][:-4] + "AAAA"):
        broken = _client(server, "lambda", creds["AccessKeyId"], creds["SecretAccessKey"], token)
        with pytest.raises(ClientError) as exc:
            broken.list_functions()
        assert _code(exc) == ("UnrecognizedClientException", 403)


def test_inactive_key_is_refused(server: Server, people: dict[str, Any]) -> None:
    iam = server.client("iam")
    key = iam.create_access_key(UserName="auth-nobody")["AccessKey"]
    sts = _as(server, key, "sts")
    assert sts.get_caller_identity()["Arn"].endswith(":user/auth-nobody")
    iam.update_access_key(UserName="auth-nobody", AccessKeyId=key["AccessKeyId"], Status="Inactive")
    with pytest.raises(ClientError) as exc:
        _as(server, key, "sts").get_caller_identity()
    assert _code(exc) == ("InvalidClientTokenId", 403)
    iam.delete_access_key(UserName="auth-nobody", AccessKeyId=key["AccessKeyId"])


def test_no_secret_reaches_the_log(server: Server, people: dict[str, Any]) -> None:
    secrets = [k["SecretAccessKey"] for k in people.values()]
    secrets.append(ROOT_KEY_ENV["LAMINA_SECRET_ACCESS_KEY"])
    assert not [s for s in secrets if s in server.log]
    assert "Signature=" not in server.log


_HEADER = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=300)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    authorization=st.one_of(
        _HEADER,
        st.builds(
            lambda a, b, c: f"AWS4-HMAC-SHA256 Credential={a}, SignedHeaders={b}, Signature={c}",
            _HEADER,
            _HEADER,
            _HEADER,
        ),
    ),
    date=_HEADER,
    token=st.one_of(st.none(), _HEADER),
)
def test_malformed_signatures_never_cause_a_server_error(
    server: Server, authorization: str, date: str, token: str | None
) -> None:
    headers = {"Authorization": authorization, "X-Amz-Date": date}
    if token is not None:
        headers["X-Amz-Security-Token"] = token
    status, _, _ = raw(server.url + "/2015-03-31/functions", "GET", b"", headers)
    assert status == 403
    status, _, _ = raw(server.url + "/", "POST", b"Action=ListUsers&Version=2010-05-08", headers)
    assert status == 403


def test_no_auth_mode_says_so(tmp_path: Path) -> None:
    server = Server(tmp_path / "data", "--no-auth", "--isolation", "process").start()
    try:
        status, _, body = raw(server.url + "/_lamina/health")
        assert status == 200 and json.loads(body)["auth"].startswith("OFF")
        assert "AUTH IS OFF" in server.log
        status, _, body = raw(server.url + "/2015-03-31/functions")  # unsigned, and answered
        assert status == 200 and json.loads(body)["Functions"] == []
        status, _, body = signed(server.url + "/2015-03-31/functions")  # signed works too
        assert status == 200
    finally:
        server.stop()


def test_create_function_needs_pass_role(server: Server, people: dict[str, Any]) -> None:
    """Naming an execution role takes iam:PassRole on it, besides lambda:CreateFunction."""
    iam = server.client("iam")
    iam.create_user(UserName="auth-deployer")
    key = iam.create_access_key(UserName="auth-deployer")["AccessKey"]
    allow = {
        "Effect": "Allow",
        "Action": "lambda:CreateFunction",
        "Resource": f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:auth-deployed-*",
    }
    document = {"Version": "2012-10-17", "Statement": [allow]}
    iam.put_user_policy(
        UserName="auth-deployer", PolicyName="create", PolicyDocument=json.dumps(document)
    )
    deployer = _as(server, key)
    with pytest.raises(ClientError) as exc:
        create(deployer, "auth-deployed-1", ECHO)
    assert _code(exc) == ("AccessDeniedException", 403)
    assert "iam:PassRole" in str(exc.value) and "role/lamina-test" in str(exc.value)
    pass_role = {"Effect": "Allow", "Action": "iam:PassRole", "Resource": ROLE}
    document["Statement"].append(pass_role)
    iam.put_user_policy(
        UserName="auth-deployer", PolicyName="create", PolicyDocument=json.dumps(document)
    )
    assert create(deployer, "auth-deployed-1", ECHO)["FunctionName"] == "auth-deployed-1"
    with pytest.raises(ClientError) as exc:  # the name is outside what the policy allows
        create(deployer, "elsewhere-1", ECHO)
    assert _code(exc) == ("AccessDeniedException", 403)


def test_unknown_callers_are_refused_before_their_body_is_read(server: Server) -> None:
    """A stranger cannot make lamina buffer a large body: the refusal comes from the headers
    (the 50 MB announced here are never sent, and the answer still arrives)."""
    host, port = server.url.removeprefix("http://").split(":")
    for auth in (
        None,
        "AWS4-HMAC-SHA256 Credential=AKIAUNKNOWNUNKNOWN00/20260101/us-east-1/lambda/aws4_request,"
        " SignedHeaders=host;x-amz-date, Signature=" + "0" * 64,
    ):
        lines = [
            "POST /2015-03-31/functions HTTP/1.1",
            f"Host: {host}:{port}",
            "Content-Length: 50000000",
            "X-Amz-Date: 20260101T000000Z",
        ]
        if auth:
            lines.append(f"Authorization: {auth}")
        with socket.create_connection((host, int(port)), timeout=10) as conn:
            conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
            head = conn.recv(65536).decode("latin-1")
        assert head.startswith("HTTP/1.1 403"), head[:200]
        expected = "UnrecognizedClientException" if auth else "MissingAuthenticationToken"
        assert expected in head
