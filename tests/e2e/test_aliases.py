"""Function aliases through boto3 against a real `lamina serve`: CreateAlias, GetAlias,
UpdateAlias, DeleteAlias, ListAliases, invoking through an alias, weighted routing."""

from __future__ import annotations

import collections
import uuid
from typing import Any

import pytest

from tests.e2e.server import create, invoke, make_zip

ACCOUNT = "000000000000"
REGION = "us-east-1"

WHOAMI = """
import os

def handler(event, context):
    return {
        "code": "%s",
        "version": os.environ["AWS_LAMBDA_FUNCTION_VERSION"],
        "arn": context.invoked_function_arn,
    }
"""


def arn(name: str, qualifier: str | None = None) -> str:
    base = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}"
    return f"{base}:{qualifier}" if qualifier else base


def with_versions(lam: Any, name: str, count: int, **kwargs: Any) -> None:
    """Create `name` and publish versions 1..count, version N answering code "vN"."""
    create(lam, name, WHOAMI % "v1", Publish=True, **kwargs)
    for n in range(2, count + 1):
        lam.update_function_code(
            FunctionName=name, ZipFile=make_zip({"app.py": WHOAMI % f"v{n}"}), Publish=True
        )


def shape(alias: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in alias.items() if k != "ResponseMetadata"}


def test_alias_crud(lam: Any) -> None:
    name = "alias-crud"
    with_versions(lam, name, 2)
    made = lam.create_alias(
        FunctionName=name, Name="prod", FunctionVersion="1", Description="production"
    )
    assert made["ResponseMetadata"]["HTTPStatusCode"] == 201
    assert made["AliasArn"] == arn(name, "prod")
    assert made["Name"] == "prod"
    assert made["FunctionVersion"] == "1"
    assert made["Description"] == "production"
    assert str(uuid.UUID(made["RevisionId"])) == made["RevisionId"]
    assert "RoutingConfig" not in made

    assert shape(lam.get_alias(FunctionName=name, Name="prod")) == shape(made)
    assert shape(lam.get_alias(FunctionName=arn(name), Name="prod")) == shape(made)

    updated = lam.update_alias(
        FunctionName=name, Name="prod", FunctionVersion="2", RevisionId=made["RevisionId"]
    )
    assert updated["FunctionVersion"] == "2"
    assert updated["Description"] == "production"  # kept when not given
    assert updated["RevisionId"] != made["RevisionId"]
    with pytest.raises(lam.exceptions.PreconditionFailedException):
        lam.update_alias(
            FunctionName=name, Name="prod", Description="x", RevisionId=made["RevisionId"]
        )
    described = lam.update_alias(FunctionName=name, Name="prod", Description="now v2")
    assert described["Description"] == "now v2"
    assert described["FunctionVersion"] == "2"

    lam.create_alias(FunctionName=name, Name="beta", FunctionVersion="$LATEST")
    lam.create_alias(FunctionName=name, Name="old", FunctionVersion="1")
    listed = lam.list_aliases(FunctionName=name)["Aliases"]
    assert [a["Name"] for a in listed] == ["beta", "old", "prod"]
    assert [a["AliasArn"] for a in listed] == [arn(name, n) for n in ("beta", "old", "prod")]
    only_v1 = lam.list_aliases(FunctionName=name, FunctionVersion="1")["Aliases"]
    assert [a["Name"] for a in only_v1] == ["old"]
    pages = lam.get_paginator("list_aliases").paginate(
        FunctionName=name, PaginationConfig={"PageSize": 2}
    )
    assert [[a["Name"] for a in p["Aliases"]] for p in pages] == [["beta", "old"], ["prod"]]

    # GetFunction through an alias: the alias's version, the ARN as asked
    cfg = lam.get_function_configuration(FunctionName=name, Qualifier="prod")
    assert cfg["Version"] == "2"
    assert cfg["FunctionArn"] == arn(name, "prod")

    deleted = lam.delete_alias(FunctionName=name, Name="old")
    assert deleted["ResponseMetadata"]["HTTPStatusCode"] == 204
    with pytest.raises(lam.exceptions.ResourceNotFoundException) as err:
        lam.get_alias(FunctionName=name, Name="old")
    assert arn(name, "old") in err.value.response["Error"]["Message"]
    assert [a["Name"] for a in lam.list_aliases(FunctionName=name)["Aliases"]] == [
        "beta",
        "prod",
    ]


def test_alias_errors(lam: Any) -> None:
    name = "alias-errors"
    with_versions(lam, name, 2)
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    with pytest.raises(lam.exceptions.ResourceConflictException):
        lam.create_alias(FunctionName=name, Name="live", FunctionVersion="2")
    for bad in ("123", "has space", "x" * 129):
        with pytest.raises(lam.exceptions.InvalidParameterValueException):
            lam.create_alias(FunctionName=name, Name=bad, FunctionVersion="1")
    with pytest.raises(lam.exceptions.ResourceNotFoundException) as err:
        lam.create_alias(FunctionName=name, Name="ghost", FunctionVersion="9")
    assert err.value.response["Error"]["Message"] == f"Function not found: {arn(name, '9')}"
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.create_alias(FunctionName="alias-no-such-fn", Name="a", FunctionVersion="1")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.update_alias(FunctionName=name, Name="nope", FunctionVersion="1")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.delete_alias(FunctionName=name, Name="nope")

    bad_routing: list[dict[str, Any]] = [
        {"AdditionalVersionWeights": {"1": 0.5}},  # the alias's own version
        {"AdditionalVersionWeights": {"2": 1.5}},  # weight above 1.0
        {"AdditionalVersionWeights": {"2": 0.1, "$LATEST": 0.1}},  # more than one version
        {"AdditionalVersionWeights": {"$LATEST": 0.1}},  # not a published version
    ]
    for routing in bad_routing:
        with pytest.raises(lam.exceptions.InvalidParameterValueException):
            lam.update_alias(FunctionName=name, Name="live", RoutingConfig=routing)
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.update_alias(
            FunctionName=name, Name="live", RoutingConfig={"AdditionalVersionWeights": {"7": 0.2}}
        )
    with pytest.raises(lam.exceptions.InvalidParameterValueException):
        lam.create_alias(
            FunctionName=name,
            Name="latest-split",
            FunctionVersion="$LATEST",
            RoutingConfig={"AdditionalVersionWeights": {"1": 0.2}},
        )
    assert "RoutingConfig" not in lam.get_alias(FunctionName=name, Name="live")


def test_invoke_through_alias(lam: Any) -> None:
    name = "alias-invoke"
    with_versions(lam, name, 2)
    lam.create_alias(FunctionName=name, Name="stable", FunctionVersion="1")
    for fn, kwargs in (
        (f"{name}:stable", {}),
        (name, {"Qualifier": "stable"}),
        (arn(name, "stable"), {}),
    ):
        out = invoke(lam, fn, {}, **kwargs)
        assert "FunctionError" not in out, out["body"]
        assert out["ExecutedVersion"] == "1"
        assert out["json"] == {"code": "v1", "version": "1", "arn": arn(name, "stable")}

    lam.update_alias(FunctionName=name, Name="stable", FunctionVersion="2")
    out = invoke(lam, name, Qualifier="stable")
    assert out["ExecutedVersion"] == "2"
    assert out["json"]["code"] == "v2"
    with pytest.raises(lam.exceptions.ResourceNotFoundException) as err:
        invoke(lam, name, Qualifier="unknown")
    assert err.value.response["Error"]["Message"] == (f"Function not found: {arn(name, 'unknown')}")


def test_weighted_routing(lam: Any) -> None:
    name = "alias-weighted"
    with_versions(lam, name, 2, MemorySize=1769)
    made = lam.create_alias(
        FunctionName=name,
        Name="canary",
        FunctionVersion="1",
        RoutingConfig={"AdditionalVersionWeights": {"2": 0.3}},
    )
    assert made["RoutingConfig"] == {"AdditionalVersionWeights": {"2": 0.3}}
    executed: collections.Counter[str] = collections.Counter()
    for _ in range(200):
        out = invoke(lam, f"{name}:canary")
        assert out["json"]["version"] == out["ExecutedVersion"]
        assert out["json"]["code"] == f"v{out['ExecutedVersion']}"
        assert out["json"]["arn"] == arn(name, "canary")
        executed[out["ExecutedVersion"]] += 1
    assert set(executed) == {"1", "2"}
    assert 30 <= executed["2"] <= 90, executed  # 15%..45% of 200

    # GetFunction through the alias reports the alias's own version, never the routed one
    got = lam.get_function(FunctionName=name, Qualifier="canary")
    assert got["Configuration"]["Version"] == "1"
    # a version an alias routes to cannot be deleted
    with pytest.raises(lam.exceptions.ResourceConflictException):
        lam.delete_function(FunctionName=name, Qualifier="2")
    cleared = lam.update_alias(FunctionName=name, Name="canary", RoutingConfig={})
    assert "RoutingConfig" not in cleared
    lam.delete_function(FunctionName=name, Qualifier="2")
