"""The `lamina` command: `serve` runs the platform; the rest are clients of a running server.

Client commands reach the server at --endpoint, else LAMINA_ENDPOINT, else AWS_ENDPOINT_URL,
else http://127.0.0.1:4850, with credentials from LAMINA_* or AWS_* variables or the local
data dir. Human output uses rich; --json prints machine output.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import sys
import zipfile
from pathlib import Path
from typing import Any

from lamina import config as config_mod
from lamina.auth.sessions import LAMBDA_TRUST_POLICY
from lamina.credentials import exports, load

DEFAULT_ENDPOINT = "http://127.0.0.1:4850"


def _add_serve(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "serve",
        help="start the embedded platform",
        description="Start lamina on one endpoint. Every flag can also be set with a LAMINA_<NAME> "
        "environment variable or in lamina.toml.",
    )
    for s in config_mod.SETTINGS:
        flag = "--" + s.name.replace("_", "-")
        help_text = f"{s.help} (env LAMINA_{s.name.upper()}; default {s.default!r})"
        if s.type is bool:  # --auth / --no-auth
            p.add_argument(
                flag,
                dest=s.name,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=help_text,
            )
            continue
        p.add_argument(flag, dest=s.name, type=s.type, default=None, help=help_text)
    p.add_argument("--config", default=None, help="path of a lamina.toml (default ./lamina.toml)")


def _client_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--endpoint", default=None, help="lamina's URL")
    p.add_argument("--data-dir", default=None, help="data dir to read credentials from")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lamina", description="A self-hosted AWS Lambda.")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_serve(sub)

    p = sub.add_parser("credentials", help="print an export block for the root credentials")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--endpoint", default=None)

    p = sub.add_parser("deploy", help="create or update a function from a directory or .zip")
    _client_args(p)
    p.add_argument("name")
    p.add_argument("path", help="a directory to zip, or a .zip file")
    p.add_argument("--runtime", default=f"python{sys.version_info.major}.{sys.version_info.minor}")
    p.add_argument("--handler", default="app.handler")
    p.add_argument("--memory", type=int, default=128)
    p.add_argument("--timeout", type=int, default=3)
    p.add_argument("--role", default=None, help="execution role ARN")

    p = sub.add_parser("invoke", help="invoke a function and print its result and log")
    _client_args(p)
    p.add_argument("name")
    p.add_argument("--payload", default="{}", help="JSON event")
    p.add_argument("--event", action="store_true", help="asynchronous (Event) invocation")

    p = sub.add_parser("ls", help="list functions")
    _client_args(p)

    p = sub.add_parser("bench", help="run the benchmarks against a fresh server; prints JSON")
    p.add_argument("--warm", type=int, default=2000, help="warm invokes at concurrency 1")
    p.add_argument("--throughput-seconds", type=float, default=5.0)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--cold", type=int, default=100, help="forced cold starts")
    p.add_argument("--memory", type=int, default=1769, help="MemorySize of the bench functions")
    p.add_argument(
        "--isolation", default="both", help="namespaces, process, or both (compared, same run)"
    )
    p.add_argument("--rate-instances", type=int, default=300, help="sandboxes for the rate run")
    p.add_argument("--rate-concurrency", type=int, default=8)
    p.add_argument("--idle", type=int, default=1000, help="idle warm instances to hold at once")
    p.add_argument(
        "--runtime",
        default=None,
        help="runtime of the no-op function (default: lamina's own Python's, e.g. python3.11)",
    )
    return parser


def _endpoint(args: argparse.Namespace) -> str:
    return str(
        getattr(args, "endpoint", None)
        or os.environ.get("LAMINA_ENDPOINT")
        or os.environ.get("AWS_ENDPOINT_URL")
        or DEFAULT_ENDPOINT
    )


def _client(args: argparse.Namespace, service: str = "lambda") -> Any:
    import boto3

    key = os.environ.get("LAMINA_ACCESS_KEY_ID") or os.environ.get("AWS_ACCESS_KEY_ID")
    secret = os.environ.get("LAMINA_SECRET_ACCESS_KEY") or os.environ.get("AWS_SECRET_ACCESS_KEY")
    if not (key and secret):
        creds = load(_data_dir(args))
        if creds is not None:
            key, secret = creds.access_key_id, creds.secret_access_key
    return boto3.client(
        service,
        endpoint_url=_endpoint(args),
        region_name=os.environ.get("LAMINA_REGION", "us-east-1"),
        aws_access_key_id=key or "lamina",
        aws_secret_access_key=secret or "lamina",
    )


def _data_dir(args: argparse.Namespace) -> Path:
    raw = getattr(args, "data_dir", None) or os.environ.get("LAMINA_DATA_DIR") or "~/.lamina"
    return Path(raw).expanduser()


def zip_path(path: Path) -> bytes:
    if path.is_file():
        return path.read_bytes()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for file in sorted(path.rglob("*")):
            if file.is_file() and "__pycache__" not in file.parts:
                zf.write(file, file.relative_to(path).as_posix())
    return buf.getvalue()


def _print(args: argparse.Namespace, data: Any, human: str | None = None) -> None:
    if args.json or human is None:
        print(json.dumps(data, indent=2, default=str))
    else:
        from rich.console import Console

        Console().print(human)


DEFAULT_ROLE = "lamina-default-execution"


def _default_role(args: argparse.Namespace) -> str:
    """Without --role: a role Lambda may assume, with no permissions of its own (made once),
    as `sam deploy` makes one for a function that names none."""
    iam = _client(args, "iam")
    try:
        return str(iam.get_role(RoleName=DEFAULT_ROLE)["Role"]["Arn"])
    except iam.exceptions.NoSuchEntityException:
        made = iam.create_role(
            RoleName=DEFAULT_ROLE,
            AssumeRolePolicyDocument=LAMBDA_TRUST_POLICY,
            Description="made by `lamina deploy` for functions that name no role; no permissions",
        )
        return str(made["Role"]["Arn"])


def cmd_deploy(args: argparse.Namespace) -> int:
    client = _client(args)
    code = zip_path(Path(args.path))
    role = args.role or _default_role(args)
    try:
        out = client.update_function_code(FunctionName=args.name, ZipFile=code)
        action = "updated"
    except client.exceptions.ResourceNotFoundException:
        out = client.create_function(
            FunctionName=args.name,
            Runtime=args.runtime,
            Handler=args.handler,
            Role=role,
            Code={"ZipFile": code},
            MemorySize=args.memory,
            Timeout=args.timeout,
        )
        action = "created"
    out.pop("ResponseMetadata", None)
    _print(args, out, f"[green]{action}[/green] {out['FunctionArn']} ({out['CodeSize']} bytes)")
    return 0


def cmd_invoke(args: argparse.Namespace) -> int:
    client = _client(args)
    kwargs: dict[str, Any] = {"FunctionName": args.name, "Payload": args.payload.encode()}
    if args.event:
        kwargs["InvocationType"] = "Event"
    else:
        kwargs["LogType"] = "Tail"
    out = client.invoke(**kwargs)
    body = out["Payload"].read().decode("utf-8", "replace")
    logs = base64.b64decode(out.get("LogResult", "")).decode("utf-8", "replace")
    data = {
        "StatusCode": out["StatusCode"],
        "FunctionError": out.get("FunctionError"),
        "ExecutedVersion": out.get("ExecutedVersion"),
        "Payload": body,
        "Log": logs,
    }
    if args.json:
        _print(args, data)
    else:
        if logs:
            print(logs, file=sys.stderr, end="")
        print(body)
    return 1 if out.get("FunctionError") else 0


def cmd_ls(args: argparse.Namespace) -> int:
    client = _client(args)
    functions = [
        f for page in client.get_paginator("list_functions").paginate() for f in page["Functions"]
    ]
    if args.json:
        _print(args, functions)
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table("Name", "Runtime", "Memory", "Timeout", "Code size", "Last modified")
    for f in functions:
        table.add_row(
            f["FunctionName"],
            f["Runtime"],
            f"{f['MemorySize']} MB",
            f"{f['Timeout']} s",
            str(f["CodeSize"]),
            f["LastModified"],
        )
    Console().print(table)
    return 0


def cmd_credentials(args: argparse.Namespace) -> int:
    creds = load(_data_dir(args))
    if creds is None:
        print("lamina: no credentials yet; start `lamina serve` once", file=sys.stderr)
        return 1
    print(exports(creds) + f"export AWS_ENDPOINT_URL={_endpoint(args)}\n", end="")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        from lamina.server import serve

        flags = {s.name: getattr(args, s.name) for s in config_mod.SETTINGS}
        try:
            settings = config_mod.load(flags, args.config)
        except config_mod.ConfigError as exc:  # before anything is started or written
            print(f"lamina: {exc}", file=sys.stderr)
            return 2
        return serve(settings)
    if args.command == "bench":
        from lamina.bench import run

        return run(args)
    handlers = {
        "deploy": cmd_deploy,
        "invoke": cmd_invoke,
        "ls": cmd_ls,
        "credentials": cmd_credentials,
    }
    return handlers[args.command](args)
