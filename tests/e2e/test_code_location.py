"""GetFunction's `Code.Location`: a URL lamina signs itself (HMAC-SHA256 of the code's SHA-256
and the expiry time, under a key made at start), valid 10 minutes, that downloads the zip with
no SigV4. The expiry is part of what is signed, so it cannot be moved; and once it has passed
the URL stops working."""

from __future__ import annotations

import asyncio
import io
import json
import time
import urllib.parse
import zipfile
from pathlib import Path
from typing import Any

import httpx
import pytest

from lamina.api.app import build_app
from lamina.config import Settings
from lamina.platform import Platform
from tests.e2e.server import Server, create, make_zip, raw

CODE = "def handler(event, context):\n    return 'located'\n"
TTL_S = 600  # README: valid 10 minutes


def with_query(url: str, **changes: str | None) -> str:
    parts = urllib.parse.urlsplit(url)
    query = dict(urllib.parse.parse_qsl(parts.query))
    for key, value in changes.items():
        if value is None:
            query.pop(key, None)
        else:
            query[key] = value
    return parts._replace(query=urllib.parse.urlencode(query)).geturl()


def not_found(url: str) -> None:
    status, _headers, body = raw(url)
    assert status == 404, (status, body)
    assert json.loads(body)["Message"] == "The code location is unknown or its URL has expired"


def test_location_is_valid_ten_minutes_and_its_expiry_cannot_be_moved(
    server: Server, lam: Any
) -> None:
    created = create(lam, "loc-expiry", CODE)
    before = int(time.time())
    location = lam.get_function(FunctionName="loc-expiry")["Code"]["Location"]
    after = int(time.time())
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))
    assert set(query) == {"expires", "signature"}
    expires = int(query["expires"])
    assert before + TTL_S <= expires <= after + TTL_S

    status, headers, body = raw(location)  # no signature of the caller's: the URL is enough
    assert status == 200 and headers["content-type"] == "application/zip"
    assert zipfile.ZipFile(io.BytesIO(body)).read("app.py").decode() == CODE
    assert len(body) == created["CodeSize"]

    # the expiry is signed: moving it, either way, breaks the URL
    for moved in (expires + 1, expires + 86400, expires - 1, before - 1):
        not_found(with_query(location, expires=str(moved)))
    not_found(with_query(location, expires="never"))
    not_found(with_query(location, expires=None))
    not_found(with_query(location, signature=None))


def test_location_stops_working_after_its_expiry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The expiry itself, without waiting 10 minutes: lamina's own platform and HTTP app, in
    process, with a URL signed as GetFunction signs it but for 1 second (the TTL is not a
    setting `lamina serve` exposes)."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    platform = Platform.build(Settings(data_dir=str(tmp_path / "data"), isolation="process"))
    other = Platform.build(Settings(data_dir=str(tmp_path / "data2"), isolation="process"))
    try:
        sha = platform.code.put(make_zip({"app.py": CODE})).sha256_hex
        asyncio.run(_expiry(platform, other, sha))
    finally:
        platform.metadata.close()
        other.metadata.close()


async def _expiry(platform: Platform, other: Platform, sha: str) -> None:
    base = "http://testserver"
    transport = httpx.ASGITransport(app=build_app(platform))
    async with httpx.AsyncClient(transport=transport, base_url=base) as client:
        url = platform.sign_code_url(base, sha, ttl_s=1)
        expires = int(dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))["expires"])
        got = await client.get(url)
        assert got.status_code == 200 and got.headers["content-type"] == "application/zip"
        await asyncio.sleep(max(0.0, expires + 1 - time.time()))  # past `expires`
        expired = await client.get(url)
        assert expired.status_code == 404
        assert expired.headers["x-amzn-errortype"] == "ResourceNotFoundException"
        assert expired.json()["Message"] == "The code location is unknown or its URL has expired"
        # signed for 10 minutes it works; signed by another lamina (another key) it does not
        assert (await client.get(platform.sign_code_url(base, sha))).status_code == 200
        assert (await client.get(other.sign_code_url(base, sha))).status_code == 404
