"""Code packages on local disk, addressed by the SHA-256 of the zip.

Layout under `root`:

    zips/<sha256hex>.zip      the uploaded bytes: the durable copy (fsynced)
    unpacked/<sha256hex>/     the extracted tree, a cache that `task_root` rebuilds on demand
    tmp/                      work dirs; a put or delete leaves nothing here when it returns

`put` checks the package, extracts it into `tmp/`, then commits in this order:

1. extraction finishes (every member decoded, CRC and sizes checked) — a zip is never
   stored unless it unpacked cleanly, so a stored zip can always be unpacked again;
2. the zip is written to `tmp/`, fsynced, renamed to `zips/` and the directory fsynced —
   this is the commit point, and `exists` looks only at the zip;
3. the tree is renamed to `unpacked/`.

A crash between 2 and 3 leaves a zip without its tree, which `task_root` recreates. Since an
unpacked tree never exists without its zip (and `delete` removes the tree first), listing
`zips/` lists everything stored. The tree is not fsynced: after an OS crash, delete
`unpacked/` and let it be rebuilt. A crash can leave work dirs in `tmp/`; it is safe to empty
while no put is running.

Concurrent puts of the same bytes (threads or processes) need no lock: each works in its own
tmp dir, the zip rename is atomic and the contents are identical, and a tree rename that
finds the tree already in place discards its own copy. `delete` is for garbage collection;
the caller must ensure the package is not in use or being stored at the same time.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from pathlib import Path

from lamina import packages
from lamina.errors import ServiceException
from lamina.packages import PackageInfo

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


class CodeStore:
    def __init__(
        self,
        root: Path,
        *,
        max_zipped: int = packages.MAX_ZIPPED,
        max_unzipped: int = packages.MAX_UNZIPPED,
    ) -> None:
        self.root = root
        self._zips = root / "zips"
        self._unpacked = root / "unpacked"
        self._tmp = root / "tmp"
        self._max_zipped = max_zipped
        self._max_unzipped = max_unzipped
        for path in (self._zips, self._unpacked, self._tmp):
            path.mkdir(parents=True, exist_ok=True)

    def put(self, data: bytes) -> PackageInfo:
        """Check and store a package; storing the same bytes again is a no-op."""
        info = packages.inspect(data, max_zipped=self._max_zipped, max_unzipped=self._max_unzipped)
        sha = info.sha256_hex
        if self.exists(sha):
            return info
        work = Path(tempfile.mkdtemp(prefix="put-", dir=self._tmp))
        try:
            tree = work / "unpacked"
            packages.extract(data, tree, max_unzipped=self._max_unzipped)
            staged = work / "code.zip"
            with open(staged, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(staged, self.zip_path(sha))
            _fsync_dir(self._zips)
            self._place_tree(tree, sha)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return info

    def zip_path(self, sha256_hex: str) -> Path:
        return self._zips / f"{_checked(sha256_hex)}.zip"

    def exists(self, sha256_hex: str) -> bool:
        return self.zip_path(sha256_hex).is_file()

    def read_zip(self, sha256_hex: str) -> bytes:
        """The stored bytes; FileNotFoundError if the package is not stored."""
        return self.zip_path(sha256_hex).read_bytes()

    def task_root(self, sha256_hex: str) -> Path:
        """The unpacked tree, re-extracted from the zip if it is missing."""
        tree = self._unpacked / _checked(sha256_hex)
        if tree.is_dir():
            return tree
        data = self.read_zip(sha256_hex)
        if hashlib.sha256(data).hexdigest() != sha256_hex:
            raise ServiceException(f"Stored code package {sha256_hex} is corrupt")
        work = Path(tempfile.mkdtemp(prefix="unpack-", dir=self._tmp))
        try:
            packages.extract(data, work / "unpacked", max_unzipped=self._max_unzipped)
            self._place_tree(work / "unpacked", sha256_hex)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return tree

    def delete(self, sha256_hex: str) -> None:
        """Remove a package: its tree first (moved aside whole), then its zip."""
        tree = self._unpacked / _checked(sha256_hex)
        work = Path(tempfile.mkdtemp(prefix="delete-", dir=self._tmp))
        try:
            os.rename(tree, work / "unpacked")
        except FileNotFoundError:
            pass
        finally:
            shutil.rmtree(work, ignore_errors=True)
        self.zip_path(sha256_hex).unlink(missing_ok=True)
        _fsync_dir(self._zips)

    def _place_tree(self, tree: Path, sha256_hex: str) -> None:
        target = self._unpacked / sha256_hex
        try:
            os.rename(tree, target)  # fails if target is a non-empty dir: an identical tree
        except OSError:
            if not target.is_dir():  # not a lost race: a real error
                raise


def _checked(sha256_hex: str) -> str:
    if not _SHA256_HEX.fullmatch(sha256_hex):
        raise ValueError(f"not a lower-case SHA-256 hex digest: {sha256_hex!r}")
    return sha256_hex


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
