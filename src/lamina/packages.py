"""Checking and unpacking a deployment package (the bytes of `Code.ZipFile`).

`inspect` reads only the zip's directory (and the few bytes of symlink targets) and rejects:

- more than `max_zipped` bytes (AWS: 52428800) or more than `max_unzipped` bytes declared
  uncompressed (AWS: 262144000);
- anything `zipfile` cannot read, and members that overlap or run past the end of the
  archive (the "overlapping entries" zip bomb);
- more than `MAX_ENTRIES` (50,000) entries: big `node_modules` trees reach tens of thousands,
  while a million tiny entries (a 50 MB upload) cost `zipfile` 7 s and 400 MB to parse, so
  directory headers are counted first;
- encrypted members, and compression other than stored/deflated (what every common tool
  writes; deflate is decoded in bounded steps, bzip2/lzma by `zipfile` are not);
- names that are empty, contain NUL or a backslash, are absolute (`/x`, `C:x`), contain
  `..`, have a component over 255 bytes, repeat, or sit inside a file or a symlink entry;
- symlinks (unix mode S_IFLNK in `external_attr >> 16`) whose target is empty, absolute, or
  climbs above the package root; `..` may only lead a target (`../lib/x`), because
  `s/../..` can escape once `s` is itself a symlink;
- an expansion ratio over `MAX_RATIO` (1000:1) for one member or for the whole archive, once
  the uncompressed size passes `RATIO_FLOOR` (1 MiB). Deflate tops out near 1032:1, so only
  runs of one repeated byte get near it; real code and data stay well under 100:1.

`extract` runs the same checks, then writes the tree counting the bytes really produced
(headers can lie) and treating a CRC or size mismatch as corruption. Files get 0o755 if any
execute bit is set in the unix mode, else 0o644; directories 0o755; symlinks are made last,
so no member is ever written through one. On any failure `dest` is removed.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import re
import shutil
import stat
import struct
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from lamina.errors import InvalidParameterValueException

MAX_ZIPPED = 50 * 1024 * 1024
MAX_UNZIPPED = 250 * 1024 * 1024
MAX_ENTRIES = 50_000
MAX_RATIO = 1000
RATIO_FLOOR = 1024 * 1024
MAX_LINK_TARGET = 4095
CORRUPT = "Could not unzip uploaded file. Please check your file, then try to upload again."

_CHUNK = 256 * 1024
_LOCAL_HEADER = 30
_CENTRAL_SIG = b"PK\x01\x02"
_END_SIG = b"PK\x05\x06"
_DRIVE = re.compile(r"^[A-Za-z]:")
# What `zipfile` raises on malformed input (several found by fuzzing; see test_packages.py).
_ZIP_ERRORS: tuple[type[Exception], ...] = (zipfile.BadZipFile, zlib.error, struct.error)
_ZIP_ERRORS += (OSError, ValueError, EOFError, OverflowError, IndexError, NotImplementedError)
_ZIP_ERRORS += (RuntimeError,)  # "password required": encrypted flag only in the local header


@dataclass(frozen=True)
class PackageInfo:
    sha256_hex: str
    code_sha256: str  # base64 of the SHA-256 digest, as AWS's CodeSha256
    size: int  # zipped bytes
    unzipped_size: int  # sum of the declared uncompressed sizes


@dataclass(frozen=True)
class _Entry:
    info: zipfile.ZipInfo
    parts: tuple[str, ...]
    kind: str  # "dir", "file" or "symlink"
    target: str = ""


_reject = InvalidParameterValueException


def _too_big(max_unzipped: int) -> InvalidParameterValueException:
    return _reject(f"Unzipped size must be smaller than {max_unzipped} bytes")


def inspect(
    data: bytes,
    *,
    max_zipped: int = MAX_ZIPPED,
    max_unzipped: int = MAX_UNZIPPED,
    max_entries: int = MAX_ENTRIES,
) -> PackageInfo:
    """Validate a package without extracting it; raise InvalidParameterValueException."""
    if len(data) > max_zipped:
        raise _reject(f"Zipped size must be smaller than {max_zipped} bytes")
    with _open(data, max_entries) as zf:
        _, unzipped = _scan(zf, len(data), max_unzipped)
    digest = hashlib.sha256(data).digest()
    return PackageInfo(digest.hex(), base64.b64encode(digest).decode(), len(data), unzipped)


def extract(
    data: bytes,
    dest: Path,
    *,
    max_unzipped: int = MAX_UNZIPPED,
    max_entries: int = MAX_ENTRIES,
) -> None:
    """Check, then unpack into `dest` (created here; it must not exist)."""
    with _open(data, max_entries) as zf:
        entries, _ = _scan(zf, len(data), max_unzipped)
        dest.mkdir(mode=0o755)
        try:
            dest.chmod(0o755)
            _write_tree(zf, entries, dest, max_unzipped)
        except BaseException:
            shutil.rmtree(dest, ignore_errors=True)
            raise


def _open(data: bytes, max_entries: int) -> zipfile.ZipFile:
    too_many = _reject(f"Code package has more than {max_entries} entries")
    if _count_central_headers(data) > max_entries:
        raise too_many
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except _ZIP_ERRORS as exc:
        raise _reject(CORRUPT) from exc
    if len(zf.infolist()) > max_entries:  # only if the count above missed some
        zf.close()
        raise too_many
    return zf


def _count_central_headers(data: bytes) -> int:
    """Upper bound on the entries `zipfile` will parse: header signatures in the directory,
    found as `zipfile` finds it (the `size` bytes before the end record, or zip64 record)."""
    end = len(data) - 22
    if end < 0 or data[end : end + 4] != _END_SIG or data[-2:] != b"\0\0":
        end = data.rfind(_END_SIG, max(0, len(data) - 22 - 0xFFFF))
    if end < 0 or end + 22 > len(data):
        return 0  # zipfile will refuse it
    size = int.from_bytes(data[end + 12 : end + 16], "little")
    rec = end - 76  # a zip64 end record (56 bytes) then its locator (20) before ours
    if (
        rec >= 0
        and data.startswith(b"PK\x06\x06", rec)
        and data.startswith(b"PK\x06\x07", end - 20)
    ):
        end, size = rec, int.from_bytes(data[rec + 40 : rec + 48], "little")
    return data.count(_CENTRAL_SIG, max(0, end - size), end)


def _scan(zf: zipfile.ZipFile, size: int, max_unzipped: int) -> tuple[list[_Entry], int]:
    entries: list[_Entry] = []
    total = 0
    for info in zf.infolist():
        name = info.orig_filename
        if info.flag_bits & 0x41:  # traditional or strong encryption
            raise _reject(f"Code package entry {name!r} is encrypted")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise _reject(
                f"Code package entry {name!r} uses compression method {info.compress_type}; "
                "only stored and deflated entries are supported"
            )
        parts = _name_parts(name)
        is_link = stat.S_ISLNK(info.external_attr >> 16)
        kind = "symlink" if is_link else "dir" if name.endswith("/") else "file"
        if not parts and kind != "dir":
            raise _reject(f"Code package entry {name!r} has no file name")
        if info.file_size > RATIO_FLOOR and info.file_size > MAX_RATIO * info.compress_size:
            raise _reject(
                f"Code package entry {name!r} expands {info.compress_size} bytes to "
                f"{info.file_size}, more than {MAX_RATIO}:1"
            )
        total += info.file_size
        entries.append(_Entry(info, parts, kind))
    if total > max_unzipped:
        raise _too_big(max_unzipped)
    if total > RATIO_FLOOR and total > MAX_RATIO * size:
        raise _reject(f"Code package expands {size} bytes to {total}, more than {MAX_RATIO}:1")
    _check_layout(entries, size)
    return [_with_target(zf, e) if e.kind == "symlink" else e for e in entries], total


def _name_parts(name: str) -> tuple[str, ...]:
    if not name:
        raise _reject("Code package has an entry with an empty name")
    if "\0" in name:
        raise _reject(f"Code package entry {name!r} contains a NUL byte")
    if "\\" in name:
        raise _reject(f"Code package entry {name!r} contains a backslash; use '/' in paths")
    if name.startswith("/") or _DRIVE.match(name):
        raise _reject(f"Code package entry {name!r} is an absolute path")
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if ".." in parts:
        raise _reject(f"Code package entry {name!r} escapes the package root")
    if any(len(p.encode()) > 255 for p in parts):
        raise _reject(f"Code package entry {name!r} has a path component over 255 bytes")
    return parts


def _check_layout(entries: list[_Entry], size: int) -> None:
    """No duplicates, nothing inside a file or symlink, no overlapping member data."""
    kinds: dict[tuple[str, ...], _Entry] = {}
    for e in entries:
        seen = kinds.get(e.parts)
        if seen is not None and (seen.kind != "dir" or e.kind != "dir"):
            raise _reject(f"Code package entry {e.info.orig_filename!r} appears more than once")
        kinds[e.parts] = e
    for e in entries:
        for depth in range(1, len(e.parts)):
            outer = kinds.get(e.parts[:depth])
            if outer is not None and outer.kind != "dir":
                inside = f"{outer.kind} {outer.info.orig_filename!r}"
                raise _reject(f"Code package entry {e.info.orig_filename!r} is inside {inside}")
    previous: zipfile.ZipInfo | None = None
    end = 0
    for info in sorted((e.info for e in entries), key=lambda i: i.header_offset):
        if previous is not None and info.header_offset < end:
            both = f"{previous.orig_filename!r} and {info.orig_filename!r}"
            raise _reject(f"Code package entries {both} overlap")
        end = info.header_offset + _LOCAL_HEADER + info.compress_size
        if info.header_offset < 0 or end > size:
            raise _reject(CORRUPT)
        previous = info


def _with_target(zf: zipfile.ZipFile, e: _Entry) -> _Entry:
    name = e.info.orig_filename
    if e.info.file_size > MAX_LINK_TARGET:
        raise _reject(f"Code package symlink {name!r} has a target over {MAX_LINK_TARGET} bytes")
    try:
        target = zf.read(e.info).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _reject(f"Code package symlink {name!r} has a target that is not UTF-8") from exc
    except _ZIP_ERRORS as exc:
        raise _reject(CORRUPT) from exc
    if not target or "\0" in target or "\\" in target:
        raise _reject(f"Code package symlink {name!r} has an invalid target {target!r}")
    if target.startswith("/") or _DRIVE.match(target):
        raise _reject(f"Code package symlink {name!r} points outside the package ({target!r})")
    ups, named = 0, False
    for part in target.split("/"):
        if part == "..":
            if named:
                raise _reject(
                    f"Code package symlink {name!r} has '..' after a name in its target "
                    f"({target!r}); only leading '..' components are allowed"
                )
            ups += 1
        elif part not in ("", "."):
            named = True
    if ups > len(e.parts) - 1:
        raise _reject(f"Code package symlink {name!r} points outside the package ({target!r})")
    return _Entry(e.info, e.parts, e.kind, target)


def _write_tree(zf: zipfile.ZipFile, entries: list[_Entry], dest: Path, limit: int) -> None:
    written = 0
    for e in entries:
        if e.kind == "dir":
            _make_dirs(dest, e.parts)
        elif e.kind == "file":
            _make_dirs(dest, e.parts[:-1])
            written = _write_file(zf, e, dest.joinpath(*e.parts), written, limit)
    for e in entries:
        if e.kind == "symlink":
            _make_dirs(dest, e.parts[:-1])
            os.symlink(e.target, dest.joinpath(*e.parts))


def _make_dirs(root: Path, parts: tuple[str, ...]) -> None:
    path = root
    for part in parts:
        path = path / part
        try:
            path.mkdir()
        except FileExistsError:
            continue
        path.chmod(0o755)


def _write_file(zf: zipfile.ZipFile, e: _Entry, path: Path, written: int, limit: int) -> int:
    """Copy one member, counting real bytes; return the running total for the package."""
    perm = 0o755 if (e.info.external_attr >> 16) & 0o111 else 0o644
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    count = 0
    with open(os.open(path, flags, perm), "wb") as out:
        os.fchmod(out.fileno(), perm)  # the umask narrowed the mode given to open
        for chunk in _chunks(zf, e.info):
            count += len(chunk)
            written += len(chunk)
            if written > limit:
                raise _too_big(limit)
            if count > e.info.file_size:
                raise _reject(CORRUPT)
            out.write(chunk)
    if count != e.info.file_size:
        raise _reject(CORRUPT)
    return written


def _chunks(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> Iterator[bytes]:
    try:
        with zf.open(info) as src:
            while chunk := src.read(_CHUNK):
                yield chunk
    except _ZIP_ERRORS as exc:  # includes zipfile's "Bad CRC-32"
        raise _reject(CORRUPT) from exc
