"""lamina's own CLI against a real server: deploy, invoke, ls, credentials — signed with the
credentials it finds, as a user would run it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.e2e.server import ROOT_KEY_ENV, Server


def _lamina(server: Server, *argv: str, env: dict[str, str] | None = None) -> Any:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "LAMINA_"))}
    base.update(ROOT_KEY_ENV, LAMINA_ENDPOINT=server.url)
    base.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "lamina", *argv],
        env=base,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_deploy_invoke_ls(server: Server, lam: Any, tmp_path: Path) -> None:
    src = tmp_path / "hello"
    src.mkdir()
    (src / "app.py").write_text(
        "def handler(event, context):\n    print('log line')\n    return {'got': event}\n"
    )
    out = _lamina(server, "deploy", "cli-hello", str(src), "--json")
    assert out.returncode == 0, out.stderr
    created = json.loads(out.stdout)
    assert created["FunctionName"] == "cli-hello"
    # no --role: a role Lambda may assume, with no permissions, made once and reused
    assert created["Role"] == "arn:aws:iam::000000000000:role/lamina-default-execution"
    role = server.client("iam").get_role(RoleName="lamina-default-execution")["Role"]
    assert "lambda.amazonaws.com" in json.dumps(role["AssumeRolePolicyDocument"])

    out = _lamina(server, "invoke", "cli-hello", "--payload", '{"x": 1}')
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"got": {"x": 1}}
    assert "log line" in out.stderr and "REPORT RequestId:" in out.stderr

    (src / "app.py").write_text("def handler(event, context):\n    return 'v2'\n")
    out = _lamina(server, "deploy", "cli-hello", str(src))
    assert out.returncode == 0 and "updated" in out.stdout, out.stderr
    out = _lamina(server, "invoke", "cli-hello", "--json")
    assert json.loads(json.loads(out.stdout)["Payload"]) == "v2"

    out = _lamina(server, "ls", "--json")
    assert out.returncode == 0, out.stderr
    assert "cli-hello" in {f["FunctionName"] for f in json.loads(out.stdout)}


def test_cli_with_wrong_credentials_is_refused(server: Server) -> None:
    out = _lamina(server, "ls", env={"LAMINA_SECRET_ACCESS_KEY": "wrong"})
    assert out.returncode != 0
    assert "InvalidSignatureException" in out.stderr


def test_credentials_prints_an_export_block(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    creds = {"access_key_id": "AKIAEXAMPLEEXAMPLE00", "secret_access_key": "s" * 40}
    path = data / "credentials.json"
    path.write_text(json.dumps(creds))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "LAMINA_"))}
    out = subprocess.run(
        [sys.executable, "-m", "lamina", "credentials", "--data-dir", str(data)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "export AWS_ACCESS_KEY_ID=AKIAEXAMPLEEXAMPLE00" in out.stdout
    assert "export AWS_SECRET_ACCESS_KEY=" + "s" * 40 in out.stdout
    assert "export AWS_ENDPOINT_URL=http://127.0.0.1:4850" in out.stdout
