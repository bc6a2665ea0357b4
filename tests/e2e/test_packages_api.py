"""Deployment packages through CreateFunction: attacks are refused and leave nothing behind;
real packages keep their layout and modes."""

from __future__ import annotations

import base64
import io
import json
import os
import stat
import struct
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.server import ROLE, Server, make_zip, python_runtime

MIB = 1024 * 1024
FILE = stat.S_IFREG | 0o644
LINK = stat.S_IFLNK | 0o777


def zip_of(*members: tuple[str, bytes, int], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    """A zip made by `zipfile`, names kept verbatim, each member (name, data, unix mode)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as zf:
        for name, data, mode in members:
            info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
            info.external_attr = mode << 16
            info.compress_type = method
            zf.writestr(info, data)
    return buf.getvalue()


def lying_zip(count: int, declared: int) -> bytes:
    """`count` stored one-byte members, each declaring `declared` bytes uncompressed: a zip
    bomb by its headers, a few KB on the wire."""
    out = bytearray()
    central = bytearray()
    for i in range(count):
        name = f"bomb/{i:04d}.bin".encode()
        payload = b"x"
        fields = (20, 0, zipfile.ZIP_STORED, 0, 0x21, zlib.crc32(payload), 1, declared, len(name))
        offset = len(out)
        out += struct.pack("<4s5H3L2H", b"PK\x03\x04", *fields, 0) + name + payload
        central += struct.pack("<4s6H3L5H", b"PK\x01\x02", 0x314, *fields, 0, 0, 0, 0)
        central += struct.pack("<2L", FILE << 16, offset) + name
    start = len(out)
    out += central
    out += struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, count, count, len(central), start, 0)
    return bytes(out)


def deflate_bomb() -> bytes:
    """An honest zip whose one member expands 16 MiB of zeros from about 16 KB."""
    return zip_of(("zeros.bin", b"\0" * (16 * MIB), FILE))


ATTACKS: dict[str, tuple[Callable[[], bytes], str]] = {
    "corrupt": (lambda: b"this is not a zip file, just text", "Could not unzip"),
    "truncated": (lambda: make_zip({"app.py": "x = 1\n" * 100})[:-40], "Could not unzip"),
    "zip-slip": (
        lambda: zip_of(("../evil.py", b"print('pwned')", FILE)),
        "'../evil.py' escapes the package root",
    ),
    "zip-slip-nested": (
        lambda: zip_of(("app.py", b"x=1", FILE), ("lib/../../evil.py", b"x", FILE)),
        "escapes the package root",
    ),
    "absolute-path": (
        lambda: zip_of(("/tmp/evil.py", b"print('pwned')", FILE)),
        "'/tmp/evil.py' is an absolute path",
    ),
    "symlink-out": (
        lambda: zip_of(("app.py", b"x=1", FILE), ("passwd", b"/etc/passwd", LINK)),
        "points outside the package ('/etc/passwd')",
    ),
    "symlink-climb": (
        lambda: zip_of(("lib/up", b"../../etc/passwd", LINK)),
        "points outside the package",
    ),
    "declared-bomb": (
        lambda: lying_zip(300, MIB),
        "Unzipped size must be smaller than 262144000 bytes",
    ),
    "deflate-bomb": (deflate_bomb, "more than 1000:1"),
}


def stored(data_dir: Path) -> dict[str, set[str]]:
    """The code store's files, less the `tmp/delete-*` dirs of a collection under way (a
    package another test stopped using, moved aside and being removed)."""
    code = data_dir / "code"
    return {
        sub: {
            rel
            for p in (code / sub).rglob("*")
            if not (rel := str(p.relative_to(code / sub))).startswith("delete-")
        }
        for sub in ("zips", "unpacked", "tmp")
    }


def added(before: dict[str, set[str]], after: dict[str, set[str]]) -> dict[str, set[str]]:
    """What appeared in the store (packages other tests stop using may go meanwhile: the store
    collects them by reference, so only additions say something was half-stored)."""
    return {sub: after[sub] - before[sub] for sub in after if after[sub] - before[sub]}


def create_raw(client: Any, name: str, data: bytes, **kwargs: Any) -> Any:
    params: dict[str, Any] = {
        "FunctionName": name,
        "Runtime": python_runtime(),
        "Handler": "app.handler",
        "Role": ROLE,
        "Code": {"ZipFile": data},
    }
    params.update(kwargs)
    return client.create_function(**params)


def assert_refused(client: Any, server: Server, name: str, data: bytes, needle: str) -> None:
    before = stored(server.data_dir)
    with pytest.raises(client.exceptions.InvalidParameterValueException) as err:
        create_raw(client, name, data)
    response = err.value.response
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert needle in response["Error"]["Message"], response["Error"]["Message"]
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.get_function(FunctionName=name)
    after = stored(server.data_dir)
    assert added(before, after) == {}
    assert not after["tmp"], after["tmp"]
    assert "Traceback" not in server.log


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_bad_package_is_refused_and_leaves_nothing(lam: Any, server: Server, attack: str) -> None:
    build, needle = ATTACKS[attack]
    assert_refused(lam, server, f"pkg-attack-{attack}", build(), needle)


def test_bad_package_on_update_keeps_the_old_code(lam: Any, server: Server) -> None:
    name = "pkg-update-attack"
    good = make_zip({"app.py": "def handler(event, context):\n    return 'good'\n"})
    created = create_raw(lam, name, good)
    before = stored(server.data_dir)
    with pytest.raises(lam.exceptions.InvalidParameterValueException, match="escapes"):
        lam.update_function_code(FunctionName=name, ZipFile=zip_of(("../evil.py", b"x", FILE)))
    after = stored(server.data_dir)
    assert added(before, after) == {}
    sha = base64.b64decode(created["CodeSha256"]).hex()
    assert f"{sha}.zip" in after["zips"]  # the old code is still there
    got = lam.get_function_configuration(FunctionName=name)
    assert got["CodeSha256"] == created["CodeSha256"]
    assert got["RevisionId"] == created["RevisionId"]
    out = lam.invoke(FunctionName=name, Payload=b"{}")
    assert json.loads(out["Payload"].read()) == "good"


@pytest.fixture
def patient(server: Server) -> Iterator[Any]:
    """A client that waits long enough to upload ~70 MB."""
    client = server.client(read_timeout=120, connect_timeout=10)
    yield client
    client.close()


def test_zipped_package_over_50_mb_is_refused(patient: Any, server: Server) -> None:
    blob = os.urandom(50 * MIB + 64 * 1024)
    app = b"def handler(e, c):\n    return 1\n"
    data = zip_of(("app.py", app, FILE), ("blob", blob, FILE), method=zipfile.ZIP_STORED)
    assert len(data) > 52428800 and len(base64.b64encode(data)) < 70 * MIB
    assert_refused(
        patient, server, "pkg-too-big", data, "Zipped size must be smaller than 52428800 bytes"
    )


def test_nested_module_handler_runs(lam: Any) -> None:
    name = "pkg-nested"
    data = make_zip(
        {
            "pkg/__init__.py": "",
            "pkg/helper.py": "def shout(s):\n    return s.upper()\n",
            "pkg/mod.py": (
                "from pkg import helper\n"
                "def handler(event, context):\n"
                "    return {'said': helper.shout(event['say']), 'file': __file__}\n"
            ),
        }
    )
    create_raw(lam, name, data, Handler="pkg/mod.handler")
    out = lam.invoke(FunctionName=name, Payload=b'{"say": "hi"}')
    assert "FunctionError" not in out
    body = json.loads(out["Payload"].read())
    assert body["said"] == "HI"
    assert body["file"].endswith("/pkg/mod.py")


# the sandbox sees the host's /usr read-only, so the system Python runs this bootstrap
BOOTSTRAP = """#!/usr/bin/python3
import json, os, urllib.request
api = "http://" + os.environ["AWS_LAMBDA_RUNTIME_API"] + "/2018-06-01/runtime/invocation/"
while True:
    with urllib.request.urlopen(api + "next") as r:
        rid = r.headers["Lambda-Runtime-Aws-Request-Id"]
        event = json.loads(r.read())
    mode = oct(os.stat("bootstrap").st_mode & 0o777)
    data = oct(os.stat("data.txt").st_mode & 0o777)
    body = json.dumps({"echo": event, "bootstrap": mode, "data": data}).encode()
    with urllib.request.urlopen(urllib.request.Request(api + rid + "/response", body)) as r:
        r.read()
"""


def test_executable_bootstrap_keeps_its_exec_bit(lam: Any, server: Server) -> None:
    name = "pkg-bootstrap"
    data = make_zip({"bootstrap": BOOTSTRAP, "data.txt": "plain"}, modes={"bootstrap": 0o755})
    created = create_raw(lam, name, data, Runtime="provided.al2023", Handler="unused")
    sha_hex = base64.b64decode(created["CodeSha256"]).hex()
    tree = server.data_dir / "code" / "unpacked" / sha_hex
    assert stat.S_IMODE((tree / "bootstrap").stat().st_mode) == 0o755
    assert stat.S_IMODE((tree / "data.txt").stat().st_mode) == 0o644

    out = lam.invoke(FunctionName=name, Payload=b'{"n": 1}')
    assert "FunctionError" not in out
    body = json.loads(out["Payload"].read())
    assert body == {"echo": {"n": 1}, "bootstrap": "0o755", "data": "0o644"}
