"""Function resource-based policies (AddPermission, GetPolicy, RemovePermission) against a real
lamina with boto3: AWS's statement and policy shapes, qualifier scoping, errors as the modeled
exception classes, persistence across a restart, and deletion with what they belong to."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from lamina.auth.identity import Principal
from lamina.auth.policy import RequestContext, evaluate, parse_policy
from lamina.config import Settings
from lamina.platform import Platform
from tests.e2e.server import Server, create

CODE = "def handler(event, context):\n    return {'ok': True}\n"
ACCOUNT = "000000000000"
REGION = "us-east-1"


def arn(name: str, qualifier: str | None = None) -> str:
    base = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}"
    return f"{base}:{qualifier}" if qualifier else base


def policy_of(lam: Any, name: str, **kwargs: Any) -> tuple[dict[str, Any], str]:
    got = lam.get_policy(FunctionName=name, **kwargs)
    return json.loads(got["Policy"]), got["RevisionId"]


def no_policy(lam: Any, name: str, **kwargs: Any) -> None:
    with pytest.raises(lam.exceptions.ResourceNotFoundException) as exc:
        lam.get_policy(FunctionName=name, **kwargs)
    assert exc.value.response["Error"]["Message"] == "The resource you requested does not exist."


def test_add_get_remove_round_trip(lam: Any) -> None:
    name = "perm-round-trip"
    create(lam, name, CODE)
    no_policy(lam, name)

    out = lam.add_permission(
        FunctionName=name,
        StatementId="s3",
        Action="lambda:InvokeFunction",
        Principal="s3.amazonaws.com",
        SourceArn="arn:aws:s3:::my-bucket",
        SourceAccount="123456789012",
    )
    assert out["ResponseMetadata"]["HTTPStatusCode"] == 201
    s3 = {
        "Sid": "s3",
        "Effect": "Allow",
        "Principal": {"Service": "s3.amazonaws.com"},
        "Action": "lambda:InvokeFunction",
        "Resource": arn(name),
        "Condition": {
            "StringEquals": {"AWS:SourceAccount": "123456789012"},
            "ArnLike": {"AWS:SourceArn": "arn:aws:s3:::my-bucket"},
        },
    }
    assert out["Statement"] == json.dumps(s3, separators=(",", ":"))  # AWS's order, compact

    out = lam.add_permission(
        FunctionName=name,
        StatementId="xaccount",
        Action="lambda:InvokeFunction",
        Principal="223456789012",
    )
    xaccount = {
        "Sid": "xaccount",
        "Effect": "Allow",
        "Principal": {"AWS": "arn:aws:iam::223456789012:root"},
        "Action": "lambda:InvokeFunction",
        "Resource": arn(name),
    }
    assert json.loads(out["Statement"]) == xaccount

    got = lam.get_policy(FunctionName=name)
    expected = {"Version": "2012-10-17", "Id": "default", "Statement": [s3, xaccount]}
    assert got["Policy"] == json.dumps(expected, separators=(",", ":"))
    parse_policy(got["Policy"], kind="resource")
    first_revision = got["RevisionId"]

    removed = lam.remove_permission(FunctionName=name, StatementId="s3")
    assert removed["ResponseMetadata"]["HTTPStatusCode"] == 204
    doc, revision = policy_of(lam, name)
    assert doc["Statement"] == [xaccount]
    assert revision != first_revision

    lam.remove_permission(FunctionName=name, StatementId="xaccount")
    no_policy(lam, name)  # the last statement took the policy with it


def _ensure(lam: Any, name: str) -> None:
    """Create `name` unless an earlier case did (the server is shared by the package)."""
    try:
        lam.get_function(FunctionName=name)
    except lam.exceptions.ResourceNotFoundException:
        create(lam, name, CODE)


@pytest.mark.parametrize(
    ("kwargs", "principal", "condition"),
    [
        ({"Principal": "*"}, "*", None),
        (
            {"Principal": "arn:aws:iam::123456789012:role/caller"},
            {"AWS": "arn:aws:iam::123456789012:role/caller"},
            None,
        ),
        (
            {"Principal": "arn:aws:iam::123456789012:root"},
            {"AWS": "arn:aws:iam::123456789012:root"},
            None,
        ),
        (
            {"Principal": "*", "PrincipalOrgID": "o-abcdefghij"},
            "*",
            {"StringEquals": {"aws:PrincipalOrgID": "o-abcdefghij"}},
        ),
        (
            {"Principal": "alexa-connectedhome.amazon.com", "EventSourceToken": "tok-1.2_3"},
            {"Service": "alexa-connectedhome.amazon.com"},
            {"StringEquals": {"lambda:EventSourceToken": "tok-1.2_3"}},
        ),
        (
            {
                "Principal": "*",
                "Action": "lambda:InvokeFunctionUrl",
                "FunctionUrlAuthType": "NONE",
            },
            "*",
            {"StringEquals": {"lambda:FunctionUrlAuthType": "NONE"}},
        ),
        ({"Principal": "123456789012", "Action": "lambda:*"}, None, None),
        ({"Principal": "123456789012", "Action": "lambda:GetFunction"}, None, None),
    ],
)
def test_statement_shapes(
    lam: Any, kwargs: dict[str, Any], principal: Any, condition: dict[str, Any] | None
) -> None:
    name = "perm-shapes"
    _ensure(lam, name)
    sid = f"sid-{abs(hash(json.dumps(kwargs, sort_keys=True))) % 10**8}"
    params = {"Action": "lambda:InvokeFunction", **kwargs}
    out = json.loads(lam.add_permission(FunctionName=name, StatementId=sid, **params)["Statement"])
    assert out["Sid"] == sid and out["Effect"] == "Allow"
    assert out["Action"] == params["Action"]
    assert out["Resource"] == arn(name)
    if principal is not None:
        assert out["Principal"] == principal
    assert out.get("Condition") == condition
    parse_policy({"Version": "2012-10-17", "Statement": [out]}, kind="resource")
    lam.remove_permission(FunctionName=name, StatementId=sid)


def test_policies_are_per_qualifier(lam: Any) -> None:
    name = "perm-qualified"
    create(lam, name, CODE)
    lam.publish_version(FunctionName=name)
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")

    def add(sid: str, **kwargs: Any) -> dict[str, Any]:
        out = lam.add_permission(
            StatementId=sid, Action="lambda:InvokeFunction", Principal="sns.amazonaws.com", **kwargs
        )
        return dict(json.loads(out["Statement"]))

    assert add("plain", FunctionName=name)["Resource"] == arn(name)
    assert add("v1", FunctionName=name, Qualifier="1")["Resource"] == arn(name, "1")
    assert add("alias", FunctionName=f"{name}:live")["Resource"] == arn(name, "live")
    assert add("alias2", FunctionName=arn(name), Qualifier="live")["Resource"] == arn(name, "live")

    def sids(**kwargs: Any) -> list[str]:
        return [s["Sid"] for s in policy_of(lam, name, **kwargs)[0]["Statement"]]

    assert sids() == ["plain"]
    assert sids(Qualifier="1") == ["v1"]
    assert sids(Qualifier="live") == ["alias", "alias2"]
    assert [s["Sid"] for s in policy_of(lam, arn(name, "live"))[0]["Statement"]] == [
        "alias",
        "alias2",
    ]
    # The same Sid may be used once per qualifier.
    add("plain", FunctionName=name, Qualifier="1")
    assert sids(Qualifier="1") == ["v1", "plain"]

    # AWS refuses policies on $LATEST itself.
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as exc:
        add("latest", FunctionName=name, Qualifier="$LATEST")
    assert "$LATEST" in exc.value.response["Error"]["Message"]

    # Unknown versions and aliases are not found, worded as elsewhere.
    with pytest.raises(lam.exceptions.ResourceNotFoundException) as nf:
        add("nope", FunctionName=name, Qualifier="nope")
    assert nf.value.response["Error"]["Message"] == f"Function not found: {arn(name, 'nope')}"
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_policy(FunctionName=name, Qualifier="7")
    with pytest.raises(lam.exceptions.InvalidParameterValueException):
        lam.get_policy(FunctionName=f"{name}:live", Qualifier="1")  # qualifiers disagree
    with pytest.raises(lam.exceptions.ResourceNotFoundException) as nf:
        lam.get_policy(FunctionName="perm-no-such-function")
    assert "Function not found" in nf.value.response["Error"]["Message"]

    # Deleting the alias deletes its policy: an alias made again under the name has none.
    lam.delete_alias(FunctionName=name, Name="live")
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    no_policy(lam, name, Qualifier="live")
    # Updating an alias keeps its policy.
    add("kept", FunctionName=name, Qualifier="live")
    lam.update_alias(FunctionName=name, Name="live", Description="changed")
    assert sids(Qualifier="live") == ["kept"]
    # Deleting the version deletes its policy (and version numbers are not reused).
    lam.delete_alias(FunctionName=name, Name="live")
    lam.delete_function(FunctionName=name, Qualifier="1")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_policy(FunctionName=name, Qualifier="1")
    assert sids() == ["plain"]


def test_duplicate_and_unknown_statements(lam: Any) -> None:
    name = "perm-dupes"
    create(lam, name, CODE)
    with pytest.raises(lam.exceptions.ResourceNotFoundException) as nf:
        lam.remove_permission(FunctionName=name, StatementId="ghost")
    assert (
        nf.value.response["Error"]["Message"] == "Statement ghost is not found in resource policy."
    )

    params = {"FunctionName": name, "Action": "lambda:InvokeFunction", "Principal": "*"}
    lam.add_permission(StatementId="one", **params)
    with pytest.raises(lam.exceptions.ResourceConflictException) as conflict:
        lam.add_permission(StatementId="one", **params)
    assert conflict.value.response["Error"]["Message"] == (
        "The statement id (one) provided already exists. Please provide a new statement id, "
        "or remove the existing statement."
    )
    with pytest.raises(lam.exceptions.ResourceNotFoundException) as nf:
        lam.remove_permission(FunctionName=name, StatementId="two")
    assert nf.value.response["Error"]["Message"] == "Statement two is not found in resource policy."
    assert [s["Sid"] for s in policy_of(lam, name)[0]["Statement"]] == ["one"]


def test_revision_id(lam: Any) -> None:
    name = "perm-revision"
    fn_revision = create(lam, name, CODE)["RevisionId"]
    params = {"FunctionName": name, "Action": "lambda:InvokeFunction", "Principal": "*"}
    with pytest.raises(lam.exceptions.PreconditionFailedException):
        lam.add_permission(StatementId="a", RevisionId="stale", **params)
    no_policy(lam, name)
    # With no policy yet, the function's RevisionId is the one in force.
    lam.add_permission(StatementId="a", RevisionId=fn_revision, **params)
    _doc, revision = policy_of(lam, name)
    with pytest.raises(lam.exceptions.PreconditionFailedException):
        lam.add_permission(StatementId="b", RevisionId=fn_revision, **params)
    lam.add_permission(StatementId="b", RevisionId=revision, **params)
    _doc, newer = policy_of(lam, name)
    with pytest.raises(lam.exceptions.PreconditionFailedException):
        lam.remove_permission(FunctionName=name, StatementId="a", RevisionId=revision)
    assert len(policy_of(lam, name)[0]["Statement"]) == 2
    lam.remove_permission(FunctionName=name, StatementId="a", RevisionId=newer)
    assert [s["Sid"] for s in policy_of(lam, name)[0]["Statement"]] == ["b"]


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"Action": "lambda:invoke-function"}, "action"),
        ({"Action": "s3:GetObject"}, "action"),
        ({"Action": "lambda:"}, "action"),
        ({"Principal": "amazonaws.com"}, "principal"),
        ({"Principal": "arn:aws:iam:123456789012:role/x"}, "principal"),
        ({"Principal": "12345"}, "principal"),
        ({"StatementId": "x" * 101}, "statementId"),
        ({"StatementId": "has space"}, "statementId"),
        ({"StatementId": "has.dot"}, "statementId"),
        ({"SourceAccount": "123"}, "sourceAccount"),
        ({"SourceArn": "not-an-arn"}, "sourceArn"),
        ({"PrincipalOrgID": "org-1234567890"}, "principalOrgID"),
        ({"EventSourceToken": "bad token"}, "eventSourceToken"),
        ({"FunctionUrlAuthType": "MAYBE"}, "functionUrlAuthType"),
    ],
)
def test_bad_input_is_refused_and_nothing_stored(
    lam: Any, override: dict[str, Any], field: str
) -> None:
    name = "perm-bad-input"
    _ensure(lam, name)
    params = {
        "FunctionName": name,
        "StatementId": "ok",
        "Action": "lambda:InvokeFunction",
        "Principal": "s3.amazonaws.com",
        **override,
    }
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as exc:
        lam.add_permission(**params)
    message = exc.value.response["Error"]["Message"]
    assert field in message or "principal" in message, message
    no_policy(lam, name)


def test_malformed_json_body(server: Server, lam: Any) -> None:
    name = "perm-bad-json"
    create(lam, name, CODE)
    client = server.client()

    def garble(request: Any, **_: Any) -> None:
        request.data = b'{"StatementId": "x", "Action": '
        request.headers["Content-Length"] = str(len(request.data))

    client.meta.events.register_first("before-sign.lambda.AddPermission", garble)
    with pytest.raises(ClientError) as exc:
        client.add_permission(
            FunctionName=name, StatementId="x", Action="lambda:InvokeFunction", Principal="*"
        )
    assert exc.value.response["Error"]["Code"] == "InvalidRequestContentException"
    no_policy(lam, name)


def test_deleted_with_the_function(lam: Any) -> None:
    name = "perm-deleted"
    create(lam, name, CODE)
    lam.add_permission(
        FunctionName=name, StatementId="a", Action="lambda:InvokeFunction", Principal="*"
    )
    lam.delete_function(FunctionName=name)
    with pytest.raises(lam.exceptions.ResourceNotFoundException) as nf:
        lam.get_policy(FunctionName=name)
    assert "Function not found" in nf.value.response["Error"]["Message"]
    create(lam, name, CODE)
    no_policy(lam, name)  # a new function of the same name starts without one


def test_policy_survives_restart(
    fresh_server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = "perm-persist"
    fresh_server.start()
    lam = fresh_server.client()
    create(lam, name, CODE)
    lam.publish_version(FunctionName=name)
    lam.create_alias(FunctionName=name, Name="prod", FunctionVersion="1")
    lam.add_permission(
        FunctionName=name,
        StatementId="events",
        Action="lambda:InvokeFunction",
        Principal="events.amazonaws.com",
        SourceArn=f"arn:aws:events:{REGION}:{ACCOUNT}:rule/nightly",
    )
    lam.add_permission(
        FunctionName=name,
        Qualifier="prod",
        StatementId="xaccount",
        Action="lambda:InvokeFunction",
        Principal="111122223333",
    )
    lam.add_permission(
        FunctionName=name,
        Qualifier="prod",
        StatementId="gone",
        Action="lambda:GetFunction",
        Principal="111122223333",
    )
    before = {q: lam.get_policy(FunctionName=name, **q_args(q)) for q in (None, "prod")}
    fresh_server.stop()

    fresh_server.start()
    lam = fresh_server.client()
    for q, got in before.items():
        again = lam.get_policy(FunctionName=name, **q_args(q))
        assert (again["Policy"], again["RevisionId"]) == (got["Policy"], got["RevisionId"])
    lam.remove_permission(FunctionName=name, Qualifier="prod", StatementId="gone")
    fresh_server.stop()

    # The accessor authorization reads, on the same data, in process.
    monkeypatch.setenv("XDG_CONFIG_HOME", str(fresh_server.data_dir.parent / "xdg-config"))
    settings = Settings(data_dir=str(fresh_server.data_dir), isolation="process")
    platform = Platform.build(settings)
    try:
        perms = platform.permissions
        assert perms.policy_for(name, "1") is None
        policy = perms.policy_for(name, None)
        assert policy is not None and perms.policy_for(name, "$LATEST") is policy
        assert policy.kind == "resource" and [s.sid for s in policy.statements] == ["events"]
        ctx = RequestContext(
            action="lambda:InvokeFunction",
            resource=arn(name),
            principal=None,
            principal_service="events.amazonaws.com",
            keys={"aws:SourceArn": f"arn:aws:events:{REGION}:{ACCOUNT}:rule/nightly"},
        )
        assert evaluate(ctx, [], policy).allowed
        other = RequestContext(
            action="lambda:InvokeFunction",
            resource=arn(name),
            principal=None,
            principal_service="events.amazonaws.com",
            keys={"aws:SourceArn": f"arn:aws:events:{REGION}:{ACCOUNT}:rule/other"},
        )
        assert not evaluate(other, [], policy).allowed
        # The alias's own policy names account 1111-2222-3333: its root may invoke the alias,
        # not the function (whose policy names only EventBridge).
        prod = perms.policy_for(name, "prod")
        assert prod is not None and [s.sid for s in prod.statements] == ["xaccount"]
        caller = Principal(
            "root", "111122223333", "arn:aws:iam::111122223333:root", "111122223333", "root", "AK"
        )
        via_alias = RequestContext("lambda:InvokeFunction", arn(name, "prod"), caller)
        assert evaluate(via_alias, [], prod).allowed
        unqualified = RequestContext("lambda:InvokeFunction", arn(name), caller)
        assert not evaluate(unqualified, [], policy).allowed
    finally:
        platform.metadata.close()


def q_args(qualifier: str | None) -> dict[str, str]:
    return {} if qualifier is None else {"Qualifier": qualifier}
