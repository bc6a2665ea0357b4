"""The one door out of a sandbox that is open by design: lamina's own API at AWS_ENDPOINT_URL.

A function reaches it with the credentials lamina puts in its environment: its execution role's
temporary credentials, which carry exactly that role's permissions (the test role has none).
So through that door one function must not read another function's code (GetFunction hands out
a download URL) nor replace it (UpdateFunctionCode): SigV4 and the policy check refuse both.
"""

from __future__ import annotations

import base64
import uuid
from typing import Any

from tests.e2e.server import Server
from tests.security.harness import Canary, function, invoke, result, unique

THROUGH_THE_API = """
import io, os, urllib.error, urllib.request, zipfile
import boto3
from botocore.exceptions import ClientError

def outcome(fn):
    try:
        return ["ok", fn()]
    except ClientError as e:
        return ["ClientError", e.response["Error"]["Code"],
                e.response["ResponseMetadata"]["HTTPStatusCode"]]
    except urllib.error.HTTPError as e:
        return ["HTTPError", e.code]

def handler(event, context):
    lam = boto3.client("lambda")  # AWS_ENDPOINT_URL and the sandbox's own credentials
    victim = event["victim"]

    def read_code():
        url = lam.get_function(FunctionName=victim)["Code"]["Location"]
        with urllib.request.urlopen(url, timeout=5) as r:
            return zipfile.ZipFile(io.BytesIO(r.read())).namelist()

    def replace_code():
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr("app.py", "def handler(e, c):\\n    return 'pwned'\\n")
        lam.update_function_code(FunctionName=victim, ZipFile=buf.getvalue())
        return "replaced"

    def unsigned_download():
        url = os.environ["AWS_ENDPOINT_URL"] + "/_lamina/code/" + event["sha"]
        with urllib.request.urlopen(url, timeout=5) as r:
            return len(r.read())

    return {"read": outcome(read_code), "replace": outcome(replace_code),
            "unsigned": outcome(unsigned_download)}
"""


def test_sandbox_credentials_cannot_read_or_replace_another_functions_code(
    lam: Any, canary: Canary, server: Server
) -> None:
    marker = f"marker-{uuid.uuid4().hex}"
    victim_code = {"app.py": "def handler(e, c):\n    return 'victim'\n", marker: "secret"}
    with (
        function(lam, unique("api-victim"), victim_code) as victim,
        function(lam, unique("api-thief"), THROUGH_THE_API, MemorySize=512) as thief,
    ):
        assert result(invoke(lam, victim)) == "victim"
        sha = lam.get_function(FunctionName=victim)["Configuration"]["CodeSha256"]
        sha_hex = base64.b64decode(sha).hex()
        assert (server.data_dir / "code" / "zips" / f"{sha_hex}.zip").exists()
        res = result(invoke(lam, thief, {"victim": victim, "sha": sha_hex}))
        # The presigned download URL checks its signature: without one there is nothing.
        assert res["unsigned"] == ["HTTPError", 404], res
        # GetFunction and UpdateFunctionCode with the sandbox's credentials: refused (401/403),
        # and the victim still runs its own code.
        now = result(invoke(lam, victim))
        escaped = {
            op: res[op]
            for op in ("read", "replace")
            if not (res[op][0] == "ClientError" and res[op][2] in (401, 403))
        }
        if now != "victim":
            escaped["victim now answers"] = now
        assert escaped == {}, "a sandbox used lamina's API against another function"
    canary.check()
