"""Code packages on local disk, addressed by the SHA-256 of the zip.

Layout under `root`:

    zips/<sha256hex>.zip      the uploaded bytes: the durable copy (fsynced)
    unpacked/<sha256hex>/     the extracted tree, a cache that `task_root` rebuilds on demand
    tmp/                      work dirs; a put, check or delete leaves nothing here when it returns

`put` checks the package, extracts it into `tmp/`, then commits in this order:

1. extraction finishes (every member decoded, CRC and sizes checked) — a zip is never
   stored unless it unpacked cleanly, so a stored zip can always be unpacked again;
2. the zip is written to `tmp/`, fsynced, renamed to `zips/` and the directory fsynced —
   this is the commit point, and `exists` looks only at the zip;
3. the tree is renamed to `unpacked/` (if that fails, `task_root` recreates it later).

A crash between 2 and 3 leaves a zip without its tree, which `task_root` recreates. Since an
unpacked tree never exists without its zip (a removal takes the tree first), listing `zips/`
lists everything stored. The tree is not fsynced: after an OS crash, delete `unpacked/` and let
it be rebuilt. A crash can leave work dirs in `tmp/`; `clear_tmp` empties it (at start, while
no put runs).

Concurrent puts of the same bytes (threads or processes) need no lock: each works in its own
tmp dir, the zip rename is atomic and the contents are identical, and a tree rename that
finds the tree already in place discards its own copy.

Collection is by reference. Packages are shared by digest, so one is removed only when
nothing refers to it: `referenced()` (set by the owner: every digest the metadata names —
each function's `$LATEST` and every published version) does not list it, and no *hold* is
on it. A hold is taken by `put(..., hold=True)` before the store looks for the package, and
released by the caller once the metadata naming it is committed (or abandoned); an owner
also holds a package while anything runs from it. `collect` reads `referenced()` and the
holds under one lock, and `hold` takes the same lock, so a package cannot be removed between
a put finding it stored and the metadata naming it: whoever releases a hold has committed
first, and a collection that starts after the release sees the commit. Removal comes only
after the metadata no longer names a package, so a crash in between leaves at worst an
unreferenced package, which `sweep` (run at start) removes.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile
import threading
from collections import Counter
from collections.abc import Callable, Collection, Iterable
from pathlib import Path

from lamina import packages
from lamina.errors import ServiceException
from lamina.packages import PackageInfo

log = logging.getLogger("lamina.code")

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


class CodeStore:
    def __init__(
        self,
        root: Path,
        *,
        max_zipped: int = packages.MAX_ZIPPED,
        max_unzipped: int = packages.MAX_UNZIPPED,
        referenced: Callable[[], Collection[str]] | None = None,
    ) -> None:
        self.root = root
        self._zips = root / "zips"
        self._unpacked = root / "unpacked"
        self._tmp = root / "tmp"
        self._max_zipped = max_zipped
        self._max_unzipped = max_unzipped
        # Every digest the metadata refers to; collection refuses to run until it is set.
        self.referenced = referenced
        # Reentrant: a hold may be released by a finalizer that runs in a thread holding it.
        self._lock = threading.RLock()
        self._holds: Counter[str] = Counter()
        for path in (self._zips, self._unpacked, self._tmp):
            path.mkdir(parents=True, exist_ok=True)

    # -- storing ---------------------------------------------------------------------------------

    def put(self, data: bytes, *, hold: bool = False) -> PackageInfo:
        """Check and store a package; storing the same bytes again is a no-op.

        With `hold`, the package is held from before the store looks for it: the caller
        must `release` it (once the metadata naming it is committed, or on failure). If the
        put itself fails, its hold is released here and nothing it stored is left.
        """
        info = packages.inspect(data, max_zipped=self._max_zipped, max_unzipped=self._max_unzipped)
        sha = info.sha256_hex
        if hold:
            self.hold(sha)
        try:
            if not self.exists(sha):
                self._store(data, sha)
        except BaseException:
            if hold:
                self.release(sha)
                self._collect_quietly(sha)  # what this put stored, unless another one uses it
            raise
        return info

    def check(self, data: bytes) -> PackageInfo:
        """What `put` would answer, storing nothing: the package is checked and extracted into
        a work dir that is removed again (a DryRun)."""
        info = packages.inspect(data, max_zipped=self._max_zipped, max_unzipped=self._max_unzipped)
        work = Path(tempfile.mkdtemp(prefix="check-", dir=self._tmp))
        try:
            packages.extract(data, work / "unpacked", max_unzipped=self._max_unzipped)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return info

    def _store(self, data: bytes, sha: str) -> None:
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
            try:
                self._place_tree(tree, sha)
            except OSError as exc:  # the zip is stored; `task_root` makes the tree when needed
                log.warning("code package %s: could not place its tree: %s", sha, exc)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    # -- reading ---------------------------------------------------------------------------------

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

    def stored(self) -> set[str]:
        """The digest of every package with a zip or a tree (names that are not digests are
        not packages, and are left alone)."""
        found = {p.name.removesuffix(".zip") for p in self._zips.iterdir() if p.suffix == ".zip"}
        found.update(p.name for p in self._unpacked.iterdir())
        return {sha for sha in found if _SHA256_HEX.fullmatch(sha)}

    # -- references and collection ---------------------------------------------------------------

    def hold(self, sha256_hex: str) -> None:
        """Keep a package from being collected until a matching `release`."""
        with self._lock:
            self._holds[_checked(sha256_hex)] += 1

    def release(self, sha256_hex: str) -> None:
        with self._lock:
            left = self._holds[sha256_hex] - 1
            if left > 0:
                self._holds[sha256_hex] = left
            else:
                del self._holds[sha256_hex]

    def held(self, sha256_hex: str) -> bool:
        with self._lock:
            return self._holds[sha256_hex] > 0

    def collect(self, candidates: Iterable[str]) -> list[str]:
        """Remove each candidate that is stored, unreferenced and not held; returns them."""
        if self.referenced is None:
            raise RuntimeError("the code store cannot collect: no reference query is set")
        wanted = {_checked(sha) for sha in candidates}
        aside: list[Path] = []
        removed: list[str] = []
        with self._lock:
            if not wanted - set(self._holds):
                return []
            referenced = set(self.referenced())  # read under the lock: see the module doc
            for sha in sorted(wanted - referenced):
                if self._holds[sha] > 0:
                    continue
                moved, had_zip = self._remove(sha)
                if moved is not None:
                    aside.append(moved)
                if moved is not None or had_zip:
                    removed.append(sha)
            if removed:
                _fsync_dir(self._zips)
        for work in aside:  # out of the lock: the trees are already out of `unpacked/`
            shutil.rmtree(work, ignore_errors=True)
        return removed

    def _collect_quietly(self, sha256_hex: str) -> None:
        if self.referenced is None:
            return
        try:
            self.collect([sha256_hex])
        except Exception:  # the error being raised matters more; a sweep takes it later
            log.exception("code package %s: collecting after a failed put failed", sha256_hex)

    def sweep(self) -> list[str]:
        """Collect every stored package nothing refers to (one query, two directory listings)."""
        return self.collect(self.stored())

    def clear_tmp(self) -> int:
        """Remove every work dir in `tmp/` (left by a crash); only while no put or check runs."""
        count = 0
        for entry in self._tmp.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            count += 1
        return count

    def delete(self, sha256_hex: str) -> None:
        """Remove a package whatever refers to it (the caller must know it is not in use);
        `collect` is the safe way."""
        with self._lock:
            moved, _ = self._remove(_checked(sha256_hex))
            _fsync_dir(self._zips)
        if moved is not None:
            shutil.rmtree(moved, ignore_errors=True)

    def _remove(self, sha: str) -> tuple[Path | None, bool]:
        """Move the tree aside (into a work dir, returned for removal), then unlink the zip."""
        work = Path(tempfile.mkdtemp(prefix="delete-", dir=self._tmp))
        try:
            os.rename(self._unpacked / sha, work / "unpacked")
        except FileNotFoundError:
            work.rmdir()
            work_or_none: Path | None = None
        else:
            work_or_none = work
        try:
            self.zip_path(sha).unlink()
        except FileNotFoundError:
            return work_or_none, False
        return work_or_none, True

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
