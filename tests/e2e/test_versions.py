"""Function versions through boto3 against a real `lamina serve`: PublishVersion,
ListVersionsByFunction, qualified reads and invokes, DeleteFunction with a qualifier."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import pytest

from tests.e2e.server import Server, create, invoke, make_zip

ACCOUNT = "000000000000"
REGION = "us-east-1"

WHOAMI = """
import os

def handler(event, context):
    return {
        "code": "%s",
        "version": os.environ["AWS_LAMBDA_FUNCTION_VERSION"],
        "arn": context.invoked_function_arn,
        "color": os.environ.get("COLOR"),
    }
"""


def arn(name: str, qualifier: str | None = None) -> str:
    base = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}"
    return f"{base}:{qualifier}" if qualifier else base


def whoami(tag: str) -> str:
    return WHOAMI % tag


def code_sha256(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def test_publish_and_list_versions(lam: Any) -> None:
    name = "ver-publish"
    created = create(lam, name, whoami("one"), Description="first")
    v1 = lam.publish_version(FunctionName=name)
    assert v1["ResponseMetadata"]["HTTPStatusCode"] == 201
    assert v1["Version"] == "1"
    assert v1["FunctionArn"] == arn(name, "1")
    assert v1["CodeSha256"] == created["CodeSha256"]
    assert v1["Description"] == "first"
    assert v1["RevisionId"] != created["RevisionId"]

    # nothing changed since version 1: publishing returns version 1
    again = lam.publish_version(FunctionName=name, Description="ignored")
    assert again["Version"] == "1"

    lam.update_function_code(FunctionName=name, ZipFile=make_zip({"app.py": whoami("two")}))
    v2 = lam.publish_version(FunctionName=name, Description="second")
    assert v2["Version"] == "2"
    assert v2["Description"] == "second"
    assert v2["CodeSha256"] != v1["CodeSha256"]

    listed = lam.list_versions_by_function(FunctionName=name)
    assert [v["Version"] for v in listed["Versions"]] == ["$LATEST", "1", "2"]
    assert [v["FunctionArn"] for v in listed["Versions"]] == [
        arn(name, "$LATEST"),
        arn(name, "1"),
        arn(name, "2"),
    ]
    assert "NextMarker" not in listed

    # a version's configuration by Qualifier, by name:N and by full ARN
    for kwargs in (
        {"FunctionName": name, "Qualifier": "1"},
        {"FunctionName": f"{name}:1"},
        {"FunctionName": arn(name, "1")},
    ):
        cfg = lam.get_function_configuration(**kwargs)
        assert cfg["Version"] == "1"
        assert cfg["FunctionArn"] == arn(name, "1")
        assert cfg["CodeSha256"] == v1["CodeSha256"]
    got = lam.get_function(FunctionName=name, Qualifier="2")
    assert got["Configuration"]["Version"] == "2"
    assert got["Code"]["Location"]
    assert lam.get_function(FunctionName=name)["Configuration"]["Version"] == "$LATEST"

    with pytest.raises(lam.exceptions.ResourceNotFoundException) as err:
        lam.get_function_configuration(FunctionName=name, Qualifier="7")
    assert err.value.response["Error"]["Message"] == f"Function not found: {arn(name, '7')}"
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        invoke(lam, f"{name}:7")


def test_list_versions_paginates(lam: Any) -> None:
    name = "ver-pages"
    create(lam, name, whoami("p"))
    for timeout in range(4, 9):
        lam.update_function_configuration(FunctionName=name, Timeout=timeout)
        lam.publish_version(FunctionName=name)
    first = lam.list_versions_by_function(FunctionName=name, MaxItems=2)
    assert [v["Version"] for v in first["Versions"]] == ["$LATEST", "1"]
    assert first["NextMarker"]
    pages = lam.get_paginator("list_versions_by_function").paginate(
        FunctionName=name, PaginationConfig={"PageSize": 2}
    )
    seen = [[v["Version"] for v in page["Versions"]] for page in pages]
    assert seen == [["$LATEST", "1"], ["2", "3"], ["4", "5"]]
    v3 = lam.get_function_configuration(FunctionName=name, Qualifier="3")
    assert v3["Timeout"] == 6


def test_published_version_is_immutable(lam: Any) -> None:
    name = "ver-immutable"
    create(lam, name, whoami("old"), Environment={"Variables": {"COLOR": "red"}})
    v1 = lam.publish_version(FunctionName=name)
    lam.update_function_code(FunctionName=name, ZipFile=make_zip({"app.py": whoami("new")}))
    lam.update_function_configuration(
        FunctionName=name, Environment={"Variables": {"COLOR": "blue"}}, MemorySize=256
    )

    for fn, kwargs, invoked in (
        (f"{name}:1", {}, arn(name, "1")),
        (name, {"Qualifier": "1"}, arn(name, "1")),
        (arn(name, "1"), {}, arn(name, "1")),
    ):
        out = invoke(lam, fn, {}, **kwargs)
        assert "FunctionError" not in out, out["body"]
        assert out["ExecutedVersion"] == "1"
        assert out["json"] == {"code": "old", "version": "1", "arn": invoked, "color": "red"}

    latest = invoke(lam, name, {})
    assert latest["ExecutedVersion"] == "$LATEST"
    assert latest["json"] == {
        "code": "new",
        "version": "$LATEST",
        "arn": arn(name),
        "color": "blue",
    }
    assert invoke(lam, f"{name}:$LATEST")["json"]["arn"] == arn(name, "$LATEST")

    cfg = lam.get_function_configuration(FunctionName=name, Qualifier="1")
    assert cfg["CodeSha256"] == v1["CodeSha256"]
    assert cfg["MemorySize"] == 128
    assert cfg["Environment"] == {"Variables": {"COLOR": "red"}}
    assert cfg["RevisionId"] == v1["RevisionId"]

    # updates address $LATEST only
    with pytest.raises(lam.exceptions.InvalidParameterValueException):
        lam.update_function_configuration(FunctionName=f"{name}:1", Timeout=9)


def test_publish_checks_code_sha_and_revision(lam: Any) -> None:
    name = "ver-checks"
    data = make_zip({"app.py": whoami("c")})
    created = create(lam, name, {"app.py": whoami("c")})
    assert created["CodeSha256"] == code_sha256(data)

    wrong = code_sha256(b"something else")
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as err:
        lam.publish_version(FunctionName=name, CodeSha256=wrong)
    assert err.value.response["Error"]["Message"] == (
        f"CodeSHA256 ({wrong}) is different from current CodeSHA256 in $LATEST "
        f"({created['CodeSha256']}). Please try again with the CodeSHA256 in $LATEST."
    )
    stale = created["RevisionId"]
    lam.update_function_configuration(FunctionName=name, Timeout=5)
    with pytest.raises(lam.exceptions.PreconditionFailedException):
        lam.publish_version(FunctionName=name, RevisionId=stale)
    assert lam.list_versions_by_function(FunctionName=name)["Versions"][-1]["Version"] == "$LATEST"

    current = lam.get_function_configuration(FunctionName=name)
    v1 = lam.publish_version(
        FunctionName=name, CodeSha256=current["CodeSha256"], RevisionId=current["RevisionId"]
    )
    assert v1["Version"] == "1"
    assert v1["Timeout"] == 5


def test_publish_flag_on_create_and_update_code(lam: Any) -> None:
    name = "ver-flag"
    out = create(lam, name, whoami("a"), Publish=True)
    assert out["ResponseMetadata"]["HTTPStatusCode"] == 201
    assert out["Version"] == "1"
    assert out["FunctionArn"] == arn(name, "1")
    upd = lam.update_function_code(
        FunctionName=name, ZipFile=make_zip({"app.py": whoami("b")}), Publish=True
    )
    assert upd["Version"] == "2"
    assert invoke(lam, name, Qualifier="1")["json"]["code"] == "a"
    assert invoke(lam, name, Qualifier="2")["json"]["code"] == "b"


def test_delete_function_with_qualifier(lam: Any) -> None:
    name = "ver-delete"
    create(lam, name, whoami("d1"), Publish=True)
    lam.update_function_code(
        FunctionName=name, ZipFile=make_zip({"app.py": whoami("d2")}), Publish=True
    )
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")

    with pytest.raises(lam.exceptions.InvalidParameterValueException) as err:
        lam.delete_function(FunctionName=name, Qualifier="$LATEST")
    assert err.value.response["Error"]["Message"] == (
        "$LATEST version cannot be deleted without deleting the function."
    )
    with pytest.raises(lam.exceptions.ResourceConflictException):
        lam.delete_function(FunctionName=name, Qualifier="1")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.delete_function(FunctionName=name, Qualifier="9")

    lam.delete_function(FunctionName=f"{name}:2")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function(FunctionName=name, Qualifier="2")
    listed = lam.list_versions_by_function(FunctionName=name)["Versions"]
    assert [v["Version"] for v in listed] == ["$LATEST", "1"]
    # numbers are never reused
    lam.update_function_configuration(FunctionName=name, Timeout=7)
    assert lam.publish_version(FunctionName=name)["Version"] == "3"
    assert invoke(lam, f"{name}:live")["json"]["code"] == "d1"

    lam.delete_function(FunctionName=name)
    for qualifier in ("1", "3", "live"):
        with pytest.raises(lam.exceptions.ResourceNotFoundException):
            lam.get_function(FunctionName=name, Qualifier=qualifier)
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.list_versions_by_function(FunctionName=name)
    # the name is free again, with versions starting at 1
    create(lam, name, whoami("again"))
    assert lam.publish_version(FunctionName=name)["Version"] == "1"
    assert lam.list_aliases(FunctionName=name)["Aliases"] == []


def test_versions_and_aliases_survive_restart(fresh_server: Server) -> None:
    name = "ver-persist"
    fresh_server.start()
    lam = fresh_server.client()
    try:
        create(lam, name, whoami("v1"), Publish=True)
        lam.update_function_code(
            FunctionName=name, ZipFile=make_zip({"app.py": whoami("v2")}), Publish=True
        )
        lam.delete_function(FunctionName=name, Qualifier="2")
        alias = lam.create_alias(
            FunctionName=name, Name="prod", FunctionVersion="1", Description="stable"
        )
    finally:
        lam.close()
    fresh_server.stop()
    fresh_server.output.clear()
    fresh_server.start()
    lam = fresh_server.client()
    try:
        versions = lam.list_versions_by_function(FunctionName=name)["Versions"]
        assert [v["Version"] for v in versions] == ["$LATEST", "1"]
        got = lam.get_alias(FunctionName=name, Name="prod")
        assert {k: got[k] for k in alias if k != "ResponseMetadata"} == {
            k: alias[k] for k in alias if k != "ResponseMetadata"
        }
        out = invoke(lam, name, Qualifier="prod")
        assert out["ExecutedVersion"] == "1"
        assert json.loads(out["body"])["code"] == "v1"
        lam.update_function_configuration(FunctionName=name, Timeout=8)
        assert lam.publish_version(FunctionName=name)["Version"] == "3"
    finally:
        lam.close()


def test_list_functions_with_every_version(lam: Any) -> None:
    """ListFunctions(FunctionVersion=ALL): $LATEST and every published version, paginated."""
    names = ["ver-all-a", "ver-all-b"]
    for name in names:
        create(lam, name, "def handler(event, context):\n    return 1\n")
        lam.publish_version(FunctionName=name)
        lam.update_function_configuration(FunctionName=name, MemorySize=256)
        lam.publish_version(FunctionName=name)
    listed = [
        f["FunctionArn"]
        for page in lam.get_paginator("list_functions").paginate(
            FunctionVersion="ALL", PaginationConfig={"PageSize": 2}
        )
        for f in page["Functions"]
        if f["FunctionName"] in names
    ]
    expected = [
        f"arn:aws:lambda:us-east-1:000000000000:function:{n}:{v}"
        for n in names
        for v in ("$LATEST", "1", "2")
    ]
    assert listed == expected
    plain = [
        f["FunctionArn"]
        for page in lam.get_paginator("list_functions").paginate()
        for f in page["Functions"]
        if f["FunctionName"] in names
    ]
    assert plain == [f"arn:aws:lambda:us-east-1:000000000000:function:{n}" for n in names]
    with pytest.raises(lam.exceptions.InvalidParameterValueException):
        lam.list_functions(FunctionVersion="SOME")
