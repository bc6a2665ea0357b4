"""The content-addressed code store: real zips, a real directory, real threads."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import stat
import threading
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from lamina.errors import InvalidParameterValueException, ServiceException
from lamina.packages import PackageInfo
from lamina.store.code import CodeStore

EXEC = stat.S_IFREG | 0o755
FILE = stat.S_IFREG | 0o644
LINK = stat.S_IFLNK | 0o777


def build(*members: tuple[str, bytes | str, int]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data, mode in members:
            info = zipfile.ZipInfo(name)
            info.external_attr = mode << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    return buf.getvalue()


def patch_central(data: bytes, offset: int, value: int) -> bytes:
    """Overwrite a 4-byte field of the (only) central directory header."""
    at = data.rfind(b"PK\x01\x02") + offset
    return data[:at] + value.to_bytes(4, "little") + data[at + 4 :]


PACKAGE = build(
    ("bootstrap", "#!/bin/sh\necho hi\n", EXEC),
    ("src/app/handler.py", "def handler(event, context):\n    return event\n", FILE),
    ("handler.py", "src/app/handler.py", LINK),
)
HANDLER = b"def handler(event, context):\n    return event\n"
BAD_CRC = patch_central(build(("handler.py", HANDLER, FILE)), 16, 0xDEADBEEF)
SIZE_LIE = patch_central(build(("handler.py", HANDLER, FILE)), 24, 1000)  # file size


@pytest.fixture
def store(tmp_path: Path) -> CodeStore:
    return CodeStore(tmp_path / "code")


def leftovers(root: Path) -> list[str]:
    """Everything under root but the three empty top-level directories."""
    found = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    return [p for p in found if p not in ("zips", "unpacked", "tmp")]


def test_put_stores_zip_and_tree(store: CodeStore) -> None:
    info = store.put(PACKAGE)
    sha = hashlib.sha256(PACKAGE).hexdigest()
    assert info.sha256_hex == sha and info.size == len(PACKAGE)
    assert store.exists(sha)
    assert store.zip_path(sha) == store.root / "zips" / f"{sha}.zip"
    assert store.read_zip(sha) == PACKAGE
    root = store.task_root(sha)
    assert root == store.root / "unpacked" / sha
    assert stat.S_IMODE((root / "bootstrap").stat().st_mode) == 0o755
    assert os.readlink(root / "handler.py") == "src/app/handler.py"
    assert (root / "handler.py").read_bytes() == HANDLER
    assert leftovers(store.root) == [
        f"unpacked/{sha}",
        f"unpacked/{sha}/bootstrap",
        f"unpacked/{sha}/handler.py",
        f"unpacked/{sha}/src",
        f"unpacked/{sha}/src/app",
        f"unpacked/{sha}/src/app/handler.py",
        f"zips/{sha}.zip",
    ]


def test_put_is_idempotent(store: CodeStore) -> None:
    first = store.put(PACKAGE)
    zip_path = store.zip_path(first.sha256_hex)
    before = zip_path.stat().st_mtime_ns
    assert store.put(PACKAGE) == first
    assert zip_path.stat().st_mtime_ns == before  # returned at once, nothing rewritten
    assert len(list((store.root / "zips").iterdir())) == 1


REJECTED = {
    "not a zip": (b"this is not a zip", "Could not unzip"),
    "truncated": (PACKAGE[: len(PACKAGE) // 2], "Could not unzip"),
    "dot-dot": (build(("../evil", b"x", FILE)), "escapes the package root"),
    "absolute": (build(("/etc/cron.d/x", b"x", FILE)), "absolute path"),
    "symlink out": (build(("passwd", "/etc/passwd", LINK)), "points outside"),
    "symlink up": (build(("x", "../../x", LINK)), "points outside"),
    "crc": (BAD_CRC, "Could not unzip"),
    "size lie": (SIZE_LIE, "Could not unzip"),
    "too big unzipped": (
        build(("big", b"a" * 5000, FILE)),
        "^Unzipped size must be smaller than 4096 bytes$",
    ),
    "too big zipped": (os.urandom(3000), "Zipped size must be smaller than 2048 bytes"),
}


@pytest.mark.parametrize(("data", "match"), REJECTED.values(), ids=REJECTED.keys())
def test_rejections_leave_nothing_behind(tmp_path: Path, data: bytes, match: str) -> None:
    store = CodeStore(tmp_path / "code", max_zipped=2048, max_unzipped=4096)
    with pytest.raises(InvalidParameterValueException, match=match):
        store.put(data)
    assert leftovers(store.root) == []
    assert not store.exists(hashlib.sha256(data).hexdigest())


def test_a_failure_while_committing_leaves_nothing(
    store: CodeStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    def disk_error(*args: object) -> None:
        raise OSError("simulated disk error")

    monkeypatch.setattr(os, "replace", disk_error)
    with pytest.raises(OSError, match="simulated"):
        store.put(PACKAGE)
    assert leftovers(store.root) == []


def test_task_root_rebuilds_a_missing_tree(store: CodeStore) -> None:
    sha = store.put(PACKAGE).sha256_hex
    shutil.rmtree(store.root / "unpacked" / sha)  # as after a crash before the tree's rename
    root = store.task_root(sha)
    assert (root / "handler.py").read_bytes() == HANDLER
    assert stat.S_IMODE((root / "bootstrap").stat().st_mode) == 0o755
    assert leftovers(store.root / "tmp") == []


def test_task_root_refuses_a_tampered_zip(store: CodeStore) -> None:
    sha = store.put(PACKAGE).sha256_hex
    shutil.rmtree(store.root / "unpacked" / sha)
    store.zip_path(sha).write_bytes(build(("other.py", b"", FILE)))
    with pytest.raises(ServiceException, match="corrupt"):
        store.task_root(sha)
    assert not (store.root / "unpacked" / sha).exists()


def test_unknown_and_malformed_digests(store: CodeStore) -> None:
    unknown = hashlib.sha256(b"never stored").hexdigest()
    assert not store.exists(unknown)
    with pytest.raises(FileNotFoundError):
        store.task_root(unknown)
    with pytest.raises(FileNotFoundError):
        store.read_zip(unknown)
    for bad in ("../../etc/passwd", unknown.upper(), unknown[:-1], unknown + "0", ""):
        with pytest.raises(ValueError, match="SHA-256"):
            store.zip_path(bad)
        with pytest.raises(ValueError, match="SHA-256"):
            store.delete(bad)


def test_delete_removes_zip_and_tree(store: CodeStore) -> None:
    kept = store.put(build(("keep.py", b"", FILE))).sha256_hex
    gone = store.put(PACKAGE).sha256_hex
    store.delete(gone)
    assert not store.exists(gone)
    assert leftovers(store.root) == [
        f"unpacked/{kept}",
        f"unpacked/{kept}/keep.py",
        f"zips/{kept}.zip",
    ]
    store.delete(gone)  # again: harmless
    store.put(PACKAGE)  # and it can come back
    assert store.exists(gone)


def run_together(n: int, work: Callable[[], object]) -> list[object]:
    barrier = threading.Barrier(n)
    results: list[object] = [None] * n

    def one(i: int) -> None:
        barrier.wait()
        try:
            results[i] = work()
        except Exception as exc:  # reported by the assertions below
            results[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    return results


def many_files() -> bytes:
    return build(*((f"pkg/m{i}.py", f"X = {i}\n" * 50, FILE) for i in range(100)))


def test_concurrent_puts_of_the_same_bytes(store: CodeStore) -> None:
    data = many_files()
    results = run_together(8, lambda: store.put(data))
    assert all(isinstance(r, PackageInfo) for r in results), results
    assert len(set(results)) == 1
    sha = hashlib.sha256(data).hexdigest()
    assert sorted(p.name for p in (store.root / "zips").iterdir()) == [f"{sha}.zip"]
    assert sorted(p.name for p in (store.root / "unpacked").iterdir()) == [sha]
    assert len(list((store.root / "unpacked" / sha / "pkg").iterdir())) == 100
    assert leftovers(store.root / "tmp") == []


def test_concurrent_task_roots_rebuild_once(store: CodeStore) -> None:
    sha = store.put(many_files()).sha256_hex
    shutil.rmtree(store.root / "unpacked" / sha)
    results = run_together(8, lambda: store.task_root(sha))
    assert results == [store.root / "unpacked" / sha] * 8
    assert len(list((store.root / "unpacked" / sha / "pkg").iterdir())) == 100
    assert leftovers(store.root / "tmp") == []


def test_concurrent_puts_of_different_bytes(store: CodeStore) -> None:
    packages = [build(("handler.py", f"N = {i}\n", FILE)) for i in range(8)]
    index = iter(range(8))
    lock = threading.Lock()

    def put_next() -> PackageInfo:
        with lock:
            i = next(index)
        return store.put(packages[i])

    results = run_together(8, put_next)
    assert {r.sha256_hex for r in results if isinstance(r, PackageInfo)} == {
        hashlib.sha256(p).hexdigest() for p in packages
    }
    for i, p in enumerate(packages):
        root = store.task_root(hashlib.sha256(p).hexdigest())
        assert (root / "handler.py").read_text() == f"N = {i}\n"
    assert leftovers(store.root / "tmp") == []
