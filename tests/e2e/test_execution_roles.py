"""Execution roles end to end: the role check at CreateFunction / UpdateFunctionConfiguration,
real temporary credentials inside every instance (judged by the role's policies when the
function calls lamina), and instances replaced before their credentials run out."""

from __future__ import annotations

import json
import time
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.e2e.server import ROLE, TRUST_LAMBDA, Server, create, invoke

ACCOUNT = "000000000000"
NOT_ASSUMABLE = "The role defined for the function cannot be assumed by Lambda."

ECHO = """
def handler(event, context):
    return {"echo": event, "name": context.function_name}
"""

# Reports the instance's credentials and who lamina says it is (STS, signed with them).
WHOAMI = """
import os, uuid
import boto3
from botocore.config import Config

INSTANCE = uuid.uuid4().hex  # made once per instance

def handler(event, context):
    sts = boto3.client("sts", config=Config(retries={"max_attempts": 1}))
    who = sts.get_caller_identity()
    return {
        "instance": INSTANCE,
        "init": os.environ.get("AWS_LAMBDA_INITIALIZATION_TYPE"),
        "key": os.environ.get("AWS_ACCESS_KEY_ID", ""),
        "secret": os.environ.get("AWS_SECRET_ACCESS_KEY", ""),
        "token": os.environ.get("AWS_SESSION_TOKEN", ""),
        "arn": who["Arn"],
        "user_id": who["UserId"],
        "account": who["Account"],
    }
"""

# Function A: invokes the functions it is told to, reporting each outcome.
INVOKER = """
import json
import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

def handler(event, context):
    lam = boto3.client("lambda", config=Config(retries={"max_attempts": 1}))
    out = {}
    for name in event["targets"]:
        try:
            got = lam.invoke(FunctionName=name, Payload=json.dumps({"from": context.function_name}))
            out[name] = {"ok": json.load(got["Payload"])}
        except ClientError as exc:
            out[name] = {"error": exc.response["Error"]["Code"],
                         "message": exc.response["Error"]["Message"]}
    return out
"""


def _trust(service: str) -> str:
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}
            ],
        }
    )


def _role(iam: Any, name: str, trust: str = TRUST_LAMBDA) -> dict[str, Any]:
    try:
        role: dict[str, Any] = iam.create_role(RoleName=name, AssumeRolePolicyDocument=trust)
    except iam.exceptions.EntityAlreadyExistsException:
        role = iam.get_role(RoleName=name)
    return role["Role"]


def _refused(exc: pytest.ExceptionInfo[ClientError], code: str, message: str | None) -> None:
    err = exc.value.response["Error"]
    assert err["Code"] == code, err
    if message is not None:
        assert err["Message"] == message, err
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


@pytest.fixture(scope="module")
def iam(server: Server) -> Any:
    return server.client("iam")


def test_create_function_checks_the_role(server: Server, lam: Any, iam: Any) -> None:
    ec2_only = _role(iam, "xrole-ec2-only", _trust("ec2.amazonaws.com"))
    account_only = _role(
        iam,
        "xrole-account-only",
        json.dumps(
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
    bad_roles = [
        f"arn:aws:iam::{ACCOUNT}:role/xrole-does-not-exist",  # no such role
        ec2_only["Arn"],  # trusts another service
        account_only["Arn"],  # trusts the account, not Lambda
        f"arn:aws:iam::{ACCOUNT}:role/some/path/lamina-test",  # right name, wrong path
        "arn:aws:iam::111111111111:role/lamina-test",  # another account's
    ]
    for role in bad_roles:
        with pytest.raises(ClientError) as exc:
            create(lam, "xrole-refused", ECHO, Role=role)
        _refused(exc, "InvalidParameterValueException", NOT_ASSUMABLE)
    with pytest.raises(ClientError) as exc:  # malformed: the ARN's constraint, as on AWS
        create(lam, "xrole-refused", ECHO, Role="lamina-test")
    _refused(exc, "InvalidParameterValueException", None)
    assert "at 'role' failed to satisfy constraint" in exc.value.response["Error"]["Message"]
    with pytest.raises(lam.exceptions.ResourceNotFoundException):  # nothing was stored
        lam.get_function(FunctionName="xrole-refused")

    good = _role(iam, "xrole-good")
    made = create(lam, "xrole-good-fn", ECHO, Role=good["Arn"])
    assert made["Role"] == good["Arn"]
    assert invoke(lam, "xrole-good-fn", {"x": 1})["json"]["echo"] == {"x": 1}


def test_update_configuration_checks_a_new_role(server: Server, lam: Any, iam: Any) -> None:
    create(lam, "xrole-update", ECHO)
    before = lam.get_function_configuration(FunctionName="xrole-update")
    ec2_only = _role(iam, "xrole-ec2-only", _trust("ec2.amazonaws.com"))
    for role in (ec2_only["Arn"], f"arn:aws:iam::{ACCOUNT}:role/xrole-gone"):
        with pytest.raises(ClientError) as exc:
            lam.update_function_configuration(FunctionName="xrole-update", Role=role)
        _refused(exc, "InvalidParameterValueException", NOT_ASSUMABLE)
    after = lam.get_function_configuration(FunctionName="xrole-update")
    assert after["Role"] == ROLE and after["RevisionId"] == before["RevisionId"]
    # the same role again, or another setting alone, is not checked again
    lam.update_function_configuration(FunctionName="xrole-update", Role=ROLE, Timeout=5)
    good = _role(iam, "xrole-good")
    moved = lam.update_function_configuration(FunctionName="xrole-update", Role=good["Arn"])
    assert moved["Role"] == good["Arn"]
    # a role whose trust policy no longer admits Lambda still stops a *change* to it
    _role(iam, "xrole-untrusted-later")
    iam.update_assume_role_policy(
        RoleName="xrole-untrusted-later", PolicyDocument=_trust("ec2.amazonaws.com")
    )
    with pytest.raises(ClientError) as exc:
        lam.update_function_configuration(
            FunctionName="xrole-update", Role=f"arn:aws:iam::{ACCOUNT}:role/xrole-untrusted-later"
        )
    _refused(exc, "InvalidParameterValueException", NOT_ASSUMABLE)


def test_instance_credentials_are_the_roles(server: Server, lam: Any, iam: Any) -> None:
    role = _role(iam, "xrole-whoami")
    create(lam, "xrole-whoami-fn", WHOAMI, Role=role["Arn"], Timeout=30)
    out = invoke(lam, "xrole-whoami-fn")
    assert out.get("FunctionError") is None, out["body"]
    got = out["json"]
    assert got["key"].startswith("ASIA") and len(got["key"]) == 20
    assert len(got["secret"]) == 40 and got["token"]
    assert got["arn"] == f"arn:aws:sts::{ACCOUNT}:assumed-role/xrole-whoami/xrole-whoami-fn"
    assert got["user_id"] == f"{role['RoleId']}:xrole-whoami-fn"
    assert got["account"] == ACCOUNT
    # the credentials work from anywhere while they are valid (they are the session)...
    sts = boto3.client(
        "sts",
        endpoint_url=server.url,
        region_name="us-east-1",
        aws_access_key_id=got["key"],
        aws_secret_access_key=got["secret"],
        aws_session_token=got["token"],
        config=Config(retries={"max_attempts": 1}),
    )
    assert sts.get_caller_identity()["Arn"] == got["arn"]
    # ...and not with a token that was tampered with, or another instance's token
    forged = got["token"][:-6] + ("AAAAAA" if not got["token"].endswith("AAAAAA") else "BBBBBB")
    for token in (forged, got["token"][: len(got["token"]) // 2]):
        sts_bad = boto3.client(
            "sts",
            endpoint_url=server.url,
            region_name="us-east-1",
            aws_access_key_id=got["key"],
            aws_secret_access_key=got["secret"],
            aws_session_token=token,
            config=Config(retries={"max_attempts": 1}),
        )
        with pytest.raises(ClientError) as exc:
            sts_bad.get_caller_identity()
        assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    for line in server.output:  # no secret or token reaches the server's log
        assert got["secret"] not in line and got["token"] not in line


def test_role_policy_decides_what_a_function_may_invoke(server: Server, lam: Any, iam: Any) -> None:
    """The acceptance test: A's role may invoke B only; A invokes B, and is denied C."""
    role = _role(iam, "xrole-invoke-b")
    b_arn = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:xrole-b"
    iam.put_role_policy(
        RoleName="xrole-invoke-b",
        PolicyName="invoke-b",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {"Effect": "Allow", "Action": "lambda:InvokeFunction", "Resource": b_arn}
                ],
            }
        ),
    )
    create(lam, "xrole-b", ECHO)
    create(lam, "xrole-c", ECHO)
    create(lam, "xrole-a", INVOKER, Role=role["Arn"], Timeout=30)
    out = invoke(lam, "xrole-a", {"targets": ["xrole-b", "xrole-c"]})
    assert out.get("FunctionError") is None, out["body"]
    got = out["json"]
    assert got["xrole-b"] == {"ok": {"echo": {"from": "xrole-a"}, "name": "xrole-b"}}
    assert got["xrole-c"]["error"] == "AccessDeniedException", got
    message = got["xrole-c"]["message"]
    assert f"arn:aws:sts::{ACCOUNT}:assumed-role/xrole-invoke-b/xrole-a" in message
    assert "lambda:InvokeFunction" in message and "xrole-c" in message


def _invoke_json(lam: Any, name: str, **kwargs: Any) -> dict[str, Any]:
    out = invoke(lam, name, **kwargs)
    assert out.get("FunctionError") is None, out["body"]
    got: dict[str, Any] = out["json"]
    return got


def test_instances_are_replaced_before_their_credentials_expire(fresh_server: Server) -> None:
    """With --credentials-ttl 6, an instance gets no more work once 3 s have passed: the next
    invocation gets a new instance with new credentials; the old ones expire at 6 s. The same
    for a provisioned instance, replaced before the pool would stop using it."""
    ttl = 6
    fresh_server.extra += ["--credentials-ttl", str(ttl), "--isolation", "process"]
    server = fresh_server.start()
    lam = server.client()
    create(lam, "xrole-ttl", WHOAMI, Timeout=30)

    first = _invoke_json(lam, "xrole-ttl")
    minted = time.time()
    again = _invoke_json(lam, "xrole-ttl")
    assert again["instance"] == first["instance"] and again["key"] == first["key"]  # warm
    time.sleep(max(0.0, minted + ttl / 2 + 0.5 - time.time()))
    later = _invoke_json(lam, "xrole-ttl")
    assert later["instance"] != first["instance"], "the instance was not replaced"
    assert later["key"] != first["key"] and later["key"].startswith("ASIA")
    assert later["arn"] == first["arn"]

    # the first instance's credentials, once past their expiry, are refused as expired
    time.sleep(max(0.0, minted + ttl + 1.0 - time.time()))
    old = boto3.client(
        "sts",
        endpoint_url=server.url,
        region_name="us-east-1",
        aws_access_key_id=first["key"],
        aws_secret_access_key=first["secret"],
        aws_session_token=first["token"],
        config=Config(retries={"max_attempts": 1}),
    )
    with pytest.raises(ClientError) as exc:
        old.get_caller_identity()
    assert exc.value.response["Error"]["Code"] == "ExpiredToken"

    # provisioned: replaced ahead of time, so invocations keep landing on provisioned instances
    version = lam.publish_version(FunctionName="xrole-ttl")["Version"]
    lam.put_provisioned_concurrency_config(
        FunctionName="xrole-ttl", Qualifier=version, ProvisionedConcurrentExecutions=1
    )
    deadline = time.monotonic() + 30
    while (
        lam.get_provisioned_concurrency_config(FunctionName="xrole-ttl", Qualifier=version)[
            "Status"
        ]
        != "READY"
    ):
        assert time.monotonic() < deadline, "provisioned concurrency never became READY"
        time.sleep(0.1)
    seen: dict[str, str] = {}
    began = time.monotonic()
    while time.monotonic() - began < ttl * 1.5:
        got = _invoke_json(lam, "xrole-ttl", Qualifier=version)
        assert got["init"] == "provisioned-concurrency", got["init"]
        seen[got["instance"]] = got["key"]
        time.sleep(0.25)
    assert len(seen) >= 2, f"the provisioned instance was never replaced: {seen}"
    assert len(set(seen.values())) == len(seen)  # each with credentials of its own
