"""Deployment package checks: real zips built here, and hand-made bytes for the attacks."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import stat
import struct
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lamina import packages
from lamina.errors import InvalidParameterValueException
from lamina.packages import CORRUPT, extract, inspect

FILE = stat.S_IFREG | 0o644
EXEC = stat.S_IFREG | 0o755
LINK = stat.S_IFLNK | 0o777
DIR = stat.S_IFDIR | 0o755


def build(*members: tuple[str, bytes | str, int], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    """A zip made by `zipfile`, each member (name, data, unix mode)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data, mode in members:
            info = zipfile.ZipInfo(name)
            info.external_attr = mode << 16
            info.compress_type = compression
            zf.writestr(info, data)
    return buf.getvalue()


@dataclass
class Raw:
    """One member of a hand-made zip; None fields are computed honestly."""

    name: bytes
    payload: bytes  # already compressed as `method` says
    method: int = zipfile.ZIP_STORED
    crc: int | None = None
    csize: int | None = None
    usize: int | None = None
    mode: int = FILE
    flags: int = 0
    offset: int | None = None  # header offset written to the central directory


def raw_zip(*members: Raw, zip64: bool = False) -> bytes:
    out = bytearray()
    central = bytearray()
    for m in members:
        plain = m.payload
        if m.method == zipfile.ZIP_DEFLATED and (m.crc is None or m.usize is None):
            plain = zlib.decompress(m.payload, -15)
        crc = zlib.crc32(plain) if m.crc is None else m.crc
        csize = len(m.payload) if m.csize is None else m.csize
        usize = len(plain) if m.usize is None else m.usize
        fields = (20, m.flags, m.method, 0, 0x21, crc, csize, usize, len(m.name))
        offset = len(out) if m.offset is None else m.offset
        out += struct.pack("<4s5H3L2H", b"PK\x03\x04", *fields, 0) + m.name + m.payload
        central += struct.pack("<4s6H3L5H", b"PK\x01\x02", 0x314, *fields, 0, 0, 0, 0)
        central += struct.pack("<2L", m.mode << 16, offset) + m.name
    start, n = len(out), len(members)
    out += central
    if zip64:
        record = len(out)
        out += struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, n, n, len(central), start)
        out += struct.pack("<4sLQL", b"PK\x06\x07", 0, record, 1)
        n, start = 0xFFFF, 0xFFFFFFFF
    out += struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, n, n, len(central), start, 0)
    return bytes(out)


def deflate(data: bytes) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush()


def rejected(data: bytes, match: str, **kwargs: Any) -> None:
    with pytest.raises(InvalidParameterValueException, match=match):
        inspect(data, **kwargs)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


VALID = build(
    ("bootstrap", "#!/bin/sh\nexec python3 handler.py\n", EXEC),
    ("empty/", b"", DIR),
    ("lib/pkg/mod.py", "X = 1\n", FILE),
    ("lib/pkg/alias.py", "mod.py", LINK),
    ("bin/tool", "../lib/pkg/mod.py", LINK),
    ("plain.txt", b"no unix mode", 0),
)


def test_valid_package_round_trip(tmp_path: Path) -> None:
    info = inspect(VALID)
    digest = hashlib.sha256(VALID).digest()
    assert info.sha256_hex == digest.hex()
    assert info.code_sha256 == base64.b64encode(digest).decode()
    assert info.size == len(VALID)
    assert info.unzipped_size == sum(
        i.file_size for i in zipfile.ZipFile(io.BytesIO(VALID)).infolist()
    )

    dest = tmp_path / "out"
    old_umask = os.umask(0o077)  # modes must not depend on the umask
    try:
        extract(VALID, dest)
    finally:
        os.umask(old_umask)
    assert (dest / "bootstrap").read_text().startswith("#!/bin/sh")
    assert mode_of(dest / "bootstrap") == 0o755
    assert mode_of(dest / "lib/pkg/mod.py") == 0o644
    assert mode_of(dest / "plain.txt") == 0o644
    for d in (dest, dest / "empty", dest / "lib", dest / "lib/pkg", dest / "bin"):
        assert d.is_dir() and not d.is_symlink() and mode_of(d) == 0o755
    assert os.readlink(dest / "lib/pkg/alias.py") == "mod.py"
    assert os.readlink(dest / "bin/tool") == "../lib/pkg/mod.py"
    assert (dest / "bin/tool").read_text() == "X = 1\n"


def test_extract_refuses_an_existing_destination(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("not extract's to delete")
    with pytest.raises(FileExistsError):
        extract(VALID, tmp_path)
    assert (tmp_path / "mine.txt").exists()


@pytest.mark.parametrize(
    "data",
    [b"", b"hello, world", os.urandom(512), VALID[: len(VALID) // 2], VALID[:-5]],
    ids=["empty", "text", "random", "half", "truncated-end"],
)
def test_not_a_zip_or_truncated(data: bytes) -> None:
    rejected(data, CORRUPT)


def test_corrupt_central_directory() -> None:
    at = VALID.rfind(b"PK\x01\x02")
    rejected(VALID[:at] + b"XX\x01\x02" + VALID[at + 4 :], CORRUPT)


def test_zipped_size_limit() -> None:
    rejected(VALID, "^Zipped size must be smaller than 100 bytes$", max_zipped=100)


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("../evil", "'../evil' escapes the package root"),
        ("a/../../evil", "escapes the package root"),
        ("..", "escapes the package root"),
        ("/etc/passwd", "'/etc/passwd' is an absolute path"),
        ("C:/Windows/x", "is an absolute path"),
        ("c:x", "is an absolute path"),
        ("a\\..\\..\\evil", "contains a backslash"),
        ("nul\x00.py", "contains a NUL byte"),
        ("", "empty name"),
        ("x" * 256, "over 255 bytes"),
    ],
)
def test_bad_entry_names(name: str, match: str) -> None:
    rejected(raw_zip(Raw(name.encode(), b"data")), match)


def test_entry_names_stay_exact() -> None:
    """`zipfile` cuts names at NUL; the raw name is what is checked, not the cut one."""
    data = raw_zip(Raw(b"handler.py\x00../../evil", b"data"))
    rejected(data, "NUL")


@pytest.mark.parametrize(
    ("name", "target", "match"),
    [
        ("link", "/etc/passwd", "'link' points outside the package \\('/etc/passwd'\\)"),
        ("link", "../../x", "points outside the package"),
        ("d/link", "../../x", "points outside the package"),
        ("link", "..", "points outside the package"),
        ("link", "d/../../x", "'..' after a name"),
        ("link", "s/../x", "'..' after a name"),
        ("link", "C:/x", "points outside the package"),
        ("link", "", "invalid target"),
        ("link", "a\\b", "invalid target"),
    ],
)
def test_bad_symlinks(name: str, target: str, match: str) -> None:
    rejected(build((name, target, LINK)), match)


def test_symlink_chain_cannot_climb_through_another_symlink() -> None:
    # Lexically "s/../etc" stays inside, but with s -> "." the kernel would leave the root.
    rejected(build(("s", ".", LINK), ("t", "s/../etc", LINK)), "'..' after a name")


def test_symlink_target_must_be_small_and_utf8() -> None:
    rejected(build(("link", "a" * 5000, LINK)), "target over 4095 bytes")
    rejected(raw_zip(Raw(b"link", b"\xff\xfe", mode=LINK)), "not UTF-8")


def test_nothing_is_written_through_a_symlink() -> None:
    rejected(build(("d", "sub", LINK), ("d/x", b"1", FILE)), "'d/x' is inside symlink 'd'")
    rejected(build(("f", b"1", FILE), ("f/x", b"2", FILE)), "'f/x' is inside file 'f'")


def test_duplicate_entries() -> None:
    rejected(raw_zip(Raw(b"a", b"1"), Raw(b"a", b"2")), "'a' appears more than once")
    rejected(raw_zip(Raw(b"a/", b"", mode=DIR), Raw(b"a", b"2")), "appears more than once")
    inspect(raw_zip(Raw(b"a/", b"", mode=DIR), Raw(b"a/", b"", mode=DIR)))  # harmless


def test_declared_unzipped_size_over_aws_limit() -> None:
    """300 MiB of zeros declared by 300 honest 1 MiB members sharing one deflate stream."""
    mib = bytes(1 << 20)
    payload, crc = deflate(mib), zlib.crc32(mib)
    members = [
        Raw(b"zeros/%03d" % i, payload, zipfile.ZIP_DEFLATED, crc=crc, usize=len(mib))
        for i in range(300)
    ]
    data = raw_zip(*members)
    assert len(data) < 400_000
    rejected(data, "^Unzipped size must be smaller than 262144000 bytes$")


def test_unzipped_size_parameter(tmp_path: Path) -> None:
    data = build(("a", os.urandom(600_000), FILE), ("b", os.urandom(600_000), FILE))
    rejected(data, "^Unzipped size must be smaller than 1048576 bytes$", max_unzipped=1 << 20)
    with pytest.raises(InvalidParameterValueException, match="Unzipped size"):
        extract(data, tmp_path / "out", max_unzipped=1 << 20)
    assert not (tmp_path / "out").exists()


def test_ratio_bomb_entry() -> None:
    buf = io.BytesIO()
    with (
        zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf,
        zf.open("zeros.bin", "w") as member,
    ):
        for _ in range(8):
            member.write(bytes(1 << 20))
    rejected(buf.getvalue(), "'zeros.bin' expands .* to 8388608, more than 1000:1")


def test_ratio_bomb_whole_archive() -> None:
    # Each member stays under the 1 MiB floor; together they claim 20 MiB from ~1.4 KB.
    members = [Raw(b"f%02d" % i, b"x", usize=1 << 20) for i in range(20)]
    rejected(raw_zip(*members), "^Code package expands .* more than 1000:1$")


def test_overlapping_entries() -> None:
    """Several directory entries pointing at one member: the non-recursive zip bomb."""
    data = raw_zip(Raw(b"a", b"1" * 100), Raw(b"b", b"1" * 100, offset=0))
    rejected(data, "entries 'a' and 'b' overlap")


def test_member_beyond_the_end_is_corrupt() -> None:
    rejected(raw_zip(Raw(b"a", b"1", csize=10_000)), CORRUPT)


def test_entry_count_limit() -> None:
    data = build(*((f"f{i}", b"", FILE) for i in range(6)))
    rejected(data, "more than 5 entries", max_entries=5)
    inspect(data, max_entries=6)


def test_entry_count_is_checked_before_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    data = build(*((f"f{i}", b"", FILE) for i in range(50)))

    def must_not_parse(*args: object) -> None:
        raise AssertionError("parsed a directory that is too big")

    monkeypatch.setattr(zipfile, "ZipFile", must_not_parse)
    rejected(data, "more than 10 entries", max_entries=10)


def test_headers_inside_member_data_are_not_counted() -> None:
    inner = build(*((f"f{i}", b"", FILE) for i in range(20)))
    outer = build(("vendor/inner.zip", inner, FILE), compression=zipfile.ZIP_STORED)
    assert outer.count(b"PK\x01\x02") == 21
    inspect(outer, max_entries=1)


def test_zip64_end_record(tmp_path: Path) -> None:
    data = raw_zip(*(Raw(b"f%d" % i, b"%d" % i) for i in range(3)), zip64=True)
    assert inspect(data).unzipped_size == 3
    rejected(data, "more than 2 entries", max_entries=2)
    extract(data, tmp_path / "out")
    assert (tmp_path / "out/f2").read_bytes() == b"2"


def test_encrypted_and_unsupported_methods() -> None:
    rejected(raw_zip(Raw(b"secret", b"xxxx", flags=0x1)), "'secret' is encrypted")
    data = build(("a.py", b"x" * 100, FILE), compression=zipfile.ZIP_BZIP2)
    rejected(data, "'a.py' uses compression method 12")


def test_crc_mismatch(tmp_path: Path) -> None:
    data = bytearray(build(("handler.py", b"def handler(e, c):\n    return 1\n", FILE)))
    crc_at = data.rfind(b"PK\x01\x02") + 16
    data[crc_at] ^= 0xFF
    inspect(bytes(data))  # the directory is fine; only decoding finds it
    with pytest.raises(InvalidParameterValueException, match=CORRUPT):
        extract(bytes(data), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_corrupt_member_data(tmp_path: Path) -> None:
    data = bytearray(build(("big.txt", os.urandom(4000), FILE)))
    data[100:140] = bytes(40)
    with pytest.raises(InvalidParameterValueException, match=CORRUPT):
        extract(bytes(data), tmp_path / "out")
    assert not (tmp_path / "out").exists()


BODY = b"0123456789" * 100_000  # 1 MB


def test_header_claiming_less_than_the_data(tmp_path: Path) -> None:
    """A member that inflates to 1 MB but claims 10 bytes: nothing past 10 is written."""
    lie = Raw(b"small.txt", deflate(BODY), zipfile.ZIP_DEFLATED, usize=10)
    with pytest.raises(InvalidParameterValueException, match=CORRUPT):
        extract(raw_zip(lie), tmp_path / "a")  # the CRC of the whole body cannot match
    assert not (tmp_path / "a").exists()
    lie.crc = zlib.crc32(BODY[:10])  # even a CRC fitted to the prefix gets only the prefix
    extract(raw_zip(lie), tmp_path / "b")
    assert (tmp_path / "b/small.txt").read_bytes() == BODY[:10]


def test_header_claiming_more_than_the_data(tmp_path: Path) -> None:
    lie = Raw(b"big.txt", deflate(b"tiny"), zipfile.ZIP_DEFLATED, usize=1000)
    with pytest.raises(InvalidParameterValueException, match=CORRUPT):
        extract(raw_zip(lie), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_extract_counts_bytes_actually_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Even a reader that trusted a lying header could not write past the limit."""
    data = build(("a.txt", b"short", FILE), ("b.txt", b"short", FILE))
    monkeypatch.setattr(zipfile.ZipFile, "open", lambda *a, **k: io.BytesIO(bytes(1 << 20)))
    with pytest.raises(InvalidParameterValueException, match="Unzipped size"):
        extract(data, tmp_path / "out", max_unzipped=1000)
    assert not (tmp_path / "out").exists()
    with pytest.raises(InvalidParameterValueException, match=CORRUPT):
        extract(data, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)), max_size=6))
def test_mangled_bytes_only_ever_raise_invalid_parameter(edits: list[tuple[int, int]]) -> None:
    data = bytearray(VALID)
    for at, value in edits:
        data[at] = value
    with tempfile.TemporaryDirectory() as tmp:
        dest = Path(tmp) / "out"
        try:
            inspect(bytes(data))
            extract(bytes(data), dest)
        except InvalidParameterValueException:
            assert not dest.exists()
        else:
            assert dest.is_dir()


def test_module_limits_match_aws() -> None:
    assert packages.MAX_ZIPPED == 52428800
    assert packages.MAX_UNZIPPED == 262144000
