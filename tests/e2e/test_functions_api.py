"""The function control plane through boto3 (and the aws CLI) against a real `lamina serve`."""

from __future__ import annotations

import base64
import collections
import hashlib
import json
import os
import re
import subprocess
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.server import ROLE, ROOT_KEY_ENV, Server, create, make_zip, python_runtime

ACCOUNT = "000000000000"
REGION = "us-east-1"
LAST_MODIFIED = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}\+0000$")
AWS_CLI = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "aws"

ECHO = "def handler(event, context):\n    return {'got': event}\n"


def arn(name: str) -> str:
    return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}"


def code_sha256(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def invoke_json(lam: Any, name: str, event: Any = None) -> Any:
    out = lam.invoke(FunctionName=name, Payload=json.dumps(event or {}).encode())
    assert out["StatusCode"] == 200
    assert "FunctionError" not in out, out["Payload"].read()
    return json.loads(out["Payload"].read())


def test_create_returns_function_configuration(lam: Any) -> None:
    name = "fnapi-shape"
    data = make_zip({"app.py": ECHO})
    out = lam.create_function(
        FunctionName=name,
        Runtime=python_runtime(),
        Role=ROLE,
        Handler="app.handler",
        Code={"ZipFile": data},
    )
    assert out["ResponseMetadata"]["HTTPStatusCode"] == 201
    assert out["FunctionName"] == name
    assert out["FunctionArn"] == arn(name)
    assert out["Runtime"] == python_runtime()
    assert out["Role"] == ROLE
    assert out["Handler"] == "app.handler"
    assert out["CodeSize"] == len(data)
    assert out["CodeSha256"] == code_sha256(data)
    assert out["Version"] == "$LATEST"
    assert out["State"] == "Active"
    assert out["LastUpdateStatus"] == "Successful"
    assert str(uuid.UUID(out["RevisionId"])) == out["RevisionId"]
    assert LAST_MODIFIED.match(out["LastModified"]), out["LastModified"]
    assert out["MemorySize"] == 128
    assert out["Timeout"] == 3
    assert out["PackageType"] == "Zip"
    assert "Environment" not in out

    with_env = create(
        lam, "fnapi-shape-env", ECHO, Environment={"Variables": {"GREETING": "hello"}}
    )
    assert with_env["ResponseMetadata"]["HTTPStatusCode"] == 201
    assert with_env["Environment"] == {"Variables": {"GREETING": "hello"}}
    assert with_env["RevisionId"] != out["RevisionId"]


def test_get_function_and_code_location(lam: Any) -> None:
    name = "fnapi-get"
    data = make_zip({"app.py": ECHO, "data/blob.bin": os.urandom(2048)})
    created = lam.create_function(
        FunctionName=name,
        Runtime=python_runtime(),
        Role=ROLE,
        Handler="app.handler",
        Code={"ZipFile": data},
        Description="get me",
    )

    got = lam.get_function(FunctionName=name)
    config = got["Configuration"]
    for key in ("FunctionArn", "CodeSha256", "CodeSize", "RevisionId", "LastModified"):
        assert config[key] == created[key], key
    assert config["Description"] == "get me"
    assert got["Code"]["RepositoryType"] == "S3"
    assert "Tags" not in got

    location = got["Code"]["Location"]
    with urllib.request.urlopen(location, timeout=10) as resp:
        assert resp.status == 200
        assert resp.read() == data

    parts = urllib.parse.urlsplit(location)
    query = dict(urllib.parse.parse_qsl(parts.query))
    sig = query["signature"]
    query["signature"] = ("0" if sig[0] != "0" else "1") + sig[1:]
    tampered = parts._replace(query=urllib.parse.urlencode(query)).geturl()
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(tampered, timeout=10)
    err.value.close()
    assert err.value.code == 404

    conf = lam.get_function_configuration(FunctionName=name)
    conf.pop("ResponseMetadata")
    assert conf == config


@pytest.mark.parametrize(
    "ref",
    ["fnapi-byref", f"{ACCOUNT}:function:fnapi-byref", arn("fnapi-byref")],
    ids=["name", "partial-arn", "full-arn"],
)
def test_get_function_by_name_partial_and_full_arn(lam: Any, ref: str) -> None:
    name = "fnapi-byref"
    try:
        lam.get_function(FunctionName=name)
    except lam.exceptions.ResourceNotFoundException:
        create(lam, name, ECHO)
    got = lam.get_function(FunctionName=ref)
    assert got["Configuration"]["FunctionName"] == name
    assert got["Configuration"]["FunctionArn"] == arn(name)
    conf = lam.get_function_configuration(FunctionName=ref)
    assert conf["FunctionArn"] == arn(name)
    assert invoke_json(lam, ref, {"via": ref}) == {"got": {"via": ref}}


def test_list_functions_max_items_paginates(lam: Any) -> None:
    for i in range(3):
        create(lam, f"fnapi-list-{i}", ECHO)
    seen: list[str] = []
    marker: str | None = None
    pages = 0
    while True:
        kwargs: dict[str, Any] = {"MaxItems": 2}
        if marker:
            kwargs["Marker"] = marker
        page = lam.list_functions(**kwargs)
        pages += 1
        assert len(page["Functions"]) <= 2
        seen += [f["FunctionName"] for f in page["Functions"]]
        marker = page.get("NextMarker")
        if not marker:
            break
        assert len(page["Functions"]) == 2
        assert pages < 1000
    assert pages >= 2
    assert len(seen) == len(set(seen))
    assert {"fnapi-list-0", "fnapi-list-1", "fnapi-list-2"} <= set(seen)
    one = lam.list_functions(MaxItems=1)
    assert len(one["Functions"]) == 1 and one["NextMarker"]
    listed = lam.list_functions(Marker=one["NextMarker"], MaxItems=1)["Functions"]
    assert listed and listed[0]["FunctionName"] == seen[1]
    shape = listed[0]
    assert shape["FunctionArn"] == arn(shape["FunctionName"])
    assert shape["Version"] == "$LATEST"
    assert {"CodeSha256", "RevisionId", "Runtime", "Handler", "LastModified"} <= set(shape)


def test_list_functions_paginator_yields_every_function_once(lam: Any) -> None:
    data = make_zip({"app.py": ECHO})
    mine = [f"fnapi-many-{i:02d}" for i in range(55)]
    for name in mine:
        lam.create_function(
            FunctionName=name,
            Runtime=python_runtime(),
            Role=ROLE,
            Handler="app.handler",
            Code={"ZipFile": data},
        )
    first = lam.list_functions()
    assert len(first["Functions"]) == 50
    assert first.get("NextMarker")

    names: list[str] = []
    page_sizes: list[int] = []
    for page in lam.get_paginator("list_functions").paginate():
        page_sizes.append(len(page["Functions"]))
        names += [f["FunctionName"] for f in page["Functions"]]
    dupes = [n for n, count in collections.Counter(names).items() if count > 1]
    assert not dupes
    assert set(mine) <= set(names)
    assert len(page_sizes) >= 2 and max(page_sizes) <= 50
    usage = lam.get_account_settings()["AccountUsage"]
    assert usage["FunctionCount"] == len(names)


def test_update_function_configuration(lam: Any) -> None:
    name = "fnapi-update-config"
    revision = create(lam, name, ECHO, Handler="app.handler")["RevisionId"]
    other_runtime = "provided.al2023"
    changes: list[tuple[dict[str, Any], str, Any]] = [
        ({"Environment": {"Variables": {"ALPHA": "1", "BETA": "two"}}}, "Environment", None),
        ({"MemorySize": 512}, "MemorySize", 512),
        ({"Timeout": 42}, "Timeout", 42),
        ({"Handler": "app.other"}, "Handler", "app.other"),
        ({"Description": "updated description"}, "Description", "updated description"),
        ({"Runtime": other_runtime}, "Runtime", other_runtime),
        ({"Runtime": python_runtime()}, "Runtime", python_runtime()),
    ]
    for params, key, expected in changes:
        want = params[key] if expected is None else expected
        out = lam.update_function_configuration(FunctionName=name, **params)
        assert out[key] == want
        assert out["RevisionId"] != revision, key
        got = lam.get_function(FunctionName=name)["Configuration"]
        assert got[key] == want, key
        assert got["RevisionId"] == out["RevisionId"]
        assert LAST_MODIFIED.match(got["LastModified"])
        revision = out["RevisionId"]
    final = lam.get_function_configuration(FunctionName=name)
    assert final["Environment"] == {"Variables": {"ALPHA": "1", "BETA": "two"}}
    assert (final["MemorySize"], final["Timeout"]) == (512, 42)
    assert final["Handler"] == "app.other"


def test_update_function_configuration_changes_what_runs(lam: Any) -> None:
    name = "fnapi-update-env-runs"
    code = "import os\ndef handler(event, context):\n    return os.environ.get('COLOR')\n"
    create(lam, name, code, Environment={"Variables": {"COLOR": "red"}})
    assert invoke_json(lam, name) == "red"
    lam.update_function_configuration(
        FunctionName=name, Environment={"Variables": {"COLOR": "blue"}}
    )
    assert invoke_json(lam, name) == "blue"


def test_update_function_code(lam: Any) -> None:
    name = "fnapi-update-code"
    v1 = make_zip({"app.py": "def handler(event, context):\n    return 'v1'\n"})
    v2 = make_zip({"app.py": "def handler(event, context):\n    return 'v2'\n"})
    created = lam.create_function(
        FunctionName=name,
        Runtime=python_runtime(),
        Role=ROLE,
        Handler="app.handler",
        Code={"ZipFile": v1},
    )
    assert invoke_json(lam, name) == "v1"
    out = lam.update_function_code(FunctionName=name, ZipFile=v2)
    assert out["CodeSha256"] == code_sha256(v2) != created["CodeSha256"]
    assert out["CodeSize"] == len(v2)
    assert out["RevisionId"] != created["RevisionId"]
    assert lam.get_function(FunctionName=name)["Configuration"]["CodeSha256"] == code_sha256(v2)
    assert invoke_json(lam, name) == "v2"


def test_revision_id_mismatch_is_precondition_failed(lam: Any) -> None:
    name = "fnapi-revision"
    created = create(lam, name, ECHO)
    current = lam.update_function_configuration(
        FunctionName=name, Timeout=10, RevisionId=created["RevisionId"]
    )
    stale = created["RevisionId"]
    with pytest.raises(lam.exceptions.PreconditionFailedException) as err:
        lam.update_function_configuration(FunctionName=name, Timeout=20, RevisionId=stale)
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    assert "Revision" in err.value.response["Error"]["Message"]
    with pytest.raises(lam.exceptions.PreconditionFailedException):
        lam.update_function_code(
            FunctionName=name, ZipFile=make_zip({"app.py": ECHO + "\n"}), RevisionId=stale
        )
    got = lam.get_function_configuration(FunctionName=name)
    assert got["Timeout"] == 10
    assert got["RevisionId"] == current["RevisionId"]
    assert got["CodeSha256"] == created["CodeSha256"]


def test_waiters_finish(lam: Any) -> None:
    name = "fnapi-waiters"
    create(lam, name, ECHO)
    fast = {"Delay": 1, "MaxAttempts": 3}
    lam.get_waiter("function_exists").wait(FunctionName=name, WaiterConfig=fast)
    lam.get_waiter("function_active_v2").wait(FunctionName=name, WaiterConfig=fast)
    lam.update_function_configuration(FunctionName=name, MemorySize=256)
    lam.get_waiter("function_updated_v2").wait(FunctionName=name, WaiterConfig=fast)
    lam.get_waiter("function_active").wait(FunctionName=name, WaiterConfig=fast)
    lam.get_waiter("function_updated").wait(FunctionName=name, WaiterConfig=fast)


def test_delete_function(lam: Any) -> None:
    name = "fnapi-delete"
    create(lam, name, ECHO)
    out = lam.delete_function(FunctionName=name)
    assert out["ResponseMetadata"]["HTTPStatusCode"] in (200, 204)
    with pytest.raises(lam.exceptions.ResourceNotFoundException) as err:
        lam.get_function(FunctionName=name)
    assert arn(name) in err.value.response["Error"]["Message"]
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.delete_function(FunctionName=name)
    names = [f["FunctionName"] for f in lam.list_functions(MaxItems=50)["Functions"]]
    assert name not in names
    create(lam, name, ECHO)  # the name is free again
    assert lam.get_function(FunctionName=name)["Configuration"]["FunctionName"] == name


def test_tags(lam: Any) -> None:
    name = "fnapi-tags"
    create(lam, name, ECHO, Tags={"team": "core", "env": "test"})
    assert lam.get_function(FunctionName=name)["Tags"] == {"team": "core", "env": "test"}
    resource = arn(name)
    assert lam.list_tags(Resource=resource)["Tags"] == {"team": "core", "env": "test"}

    lam.tag_resource(Resource=resource, Tags={"owner": "me", "env": "prod"})
    want = {"team": "core", "env": "prod", "owner": "me"}
    assert lam.list_tags(Resource=resource)["Tags"] == want
    assert lam.get_function(FunctionName=name)["Tags"] == want

    lam.untag_resource(Resource=resource, TagKeys=["team", "owner"])
    assert lam.list_tags(Resource=resource)["Tags"] == {"env": "prod"}
    assert lam.get_function(FunctionName=name)["Tags"] == {"env": "prod"}

    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.list_tags(Resource=arn("fnapi-tags-missing"))


def test_get_account_settings(lam: Any) -> None:
    create(lam, "fnapi-account", ECHO)
    out = lam.get_account_settings()
    limit = out["AccountLimit"]
    assert limit["CodeSizeZipped"] == 52428800
    assert limit["CodeSizeUnzipped"] == 262144000
    assert limit["ConcurrentExecutions"] == 1000
    assert limit["TotalCodeSize"] > 0
    assert limit["UnreservedConcurrentExecutions"] <= 1000
    usage = out["AccountUsage"]
    assert usage["FunctionCount"] >= 1
    assert usage["FunctionCount"] == len(
        [f for page in lam.get_paginator("list_functions").paginate() for f in page["Functions"]]
    )
    assert usage["TotalCodeSize"] > 0


def test_aws_cli_list_functions(server: Server, lam: Any) -> None:
    create(lam, "fnapi-cli", ECHO)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_ACCESS_KEY_ID=ROOT_KEY_ENV["LAMINA_ACCESS_KEY_ID"],
        AWS_SECRET_ACCESS_KEY=ROOT_KEY_ENV["LAMINA_SECRET_ACCESS_KEY"],
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_PAGER="",
    )
    cmd = [str(AWS_CLI), "lambda", "list-functions", "--endpoint-url", server.url]
    cmd += ["--region", REGION, "--output", "json"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    listed = {f["FunctionName"]: f for f in json.loads(proc.stdout)["Functions"]}
    assert listed["fnapi-cli"]["FunctionArn"] == arn("fnapi-cli")
    assert listed["fnapi-cli"]["Runtime"] == python_runtime()
