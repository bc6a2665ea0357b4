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


# -- collection by reference ----------------------------------------------------------------------


class References:
    """The metadata's side, in memory: how many committed records name each digest."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count: dict[str, int] = {}
        self.queries = 0

    def __call__(self) -> set[str]:
        with self._lock:
            self.queries += 1
            return {sha for sha, n in self._count.items() if n > 0}

    def add(self, sha: str) -> None:
        with self._lock:
            self._count[sha] = self._count.get(sha, 0) + 1

    def drop(self, sha: str) -> None:
        with self._lock:
            self._count[sha] -= 1


@pytest.fixture
def refs() -> References:
    return References()


@pytest.fixture
def gc_store(tmp_path: Path, refs: References) -> CodeStore:
    return CodeStore(tmp_path / "code", referenced=refs)


def code(tag: str) -> bytes:
    return build(("handler.py", f"TAG = {tag!r}\n", FILE))


def test_collect_needs_the_reference_query(store: CodeStore) -> None:
    sha = store.put(PACKAGE).sha256_hex
    with pytest.raises(RuntimeError, match="no reference query"):
        store.collect([sha])
    assert store.exists(sha)


def test_collect_removes_only_unreferenced_candidates(
    gc_store: CodeStore, refs: References
) -> None:
    used, unused, other = (gc_store.put(code(t)).sha256_hex for t in ("used", "unused", "other"))
    refs.add(used)
    never_stored = hashlib.sha256(b"never stored").hexdigest()
    assert gc_store.collect([used, unused, never_stored]) == [unused]
    assert gc_store.stored() == {used, other}  # `other` was not a candidate
    assert leftovers(gc_store.root / "tmp") == []
    assert (gc_store.task_root(used) / "handler.py").read_text() == "TAG = 'used'\n"
    refs.drop(used)
    assert gc_store.collect([used]) == [used]
    assert gc_store.stored() == {other}
    with pytest.raises(ValueError, match="SHA-256"):
        gc_store.collect(["../../etc"])


def test_a_hold_keeps_a_package_until_released(gc_store: CodeStore, refs: References) -> None:
    sha = gc_store.put(PACKAGE, hold=True).sha256_hex
    assert gc_store.put(PACKAGE, hold=True).sha256_hex == sha  # two uploads of the same bytes
    assert gc_store.held(sha)
    queries = refs.queries
    assert gc_store.collect([sha]) == []
    assert refs.queries == queries  # every candidate held: nothing to ask
    gc_store.release(sha)
    assert gc_store.collect([sha]) == [] and gc_store.exists(sha)  # one hold is left
    gc_store.release(sha)
    assert not gc_store.held(sha)
    assert gc_store.collect([sha]) == [sha]
    assert leftovers(gc_store.root) == []


def test_a_refused_put_leaves_no_hold(gc_store: CodeStore) -> None:
    bad = build(("../evil", b"x", FILE))
    with pytest.raises(InvalidParameterValueException):
        gc_store.put(bad, hold=True)
    assert not gc_store.held(hashlib.sha256(bad).hexdigest())
    assert leftovers(gc_store.root) == []


def test_sweep_takes_every_unreferenced_package(gc_store: CodeStore, refs: References) -> None:
    kept = gc_store.put(code("kept")).sha256_hex
    refs.add(kept)
    orphan = gc_store.put(code("orphan")).sha256_hex
    zip_only = gc_store.put(code("zip only")).sha256_hex
    shutil.rmtree(gc_store.root / "unpacked" / zip_only)  # as after a crash before the tree moved
    tree_only = hashlib.sha256(b"a tree whose zip is gone").hexdigest()
    (gc_store.root / "unpacked" / tree_only).mkdir()
    held = gc_store.put(code("held"), hold=True).sha256_hex
    (gc_store.root / "zips" / "notes.txt").write_text("not a package")
    assert gc_store.stored() == {kept, orphan, zip_only, tree_only, held}
    assert sorted(gc_store.sweep()) == sorted([orphan, zip_only, tree_only])
    assert gc_store.stored() == {kept, held}
    assert (gc_store.root / "zips" / "notes.txt").exists()
    assert leftovers(gc_store.root / "tmp") == []


def test_clear_tmp_removes_what_a_crash_left(gc_store: CodeStore) -> None:
    sha = gc_store.put(PACKAGE).sha256_hex
    (gc_store.root / "tmp" / "put-abc" / "unpacked").mkdir(parents=True)
    (gc_store.root / "tmp" / "put-abc" / "code.zip").write_bytes(b"partial")
    (gc_store.root / "tmp" / "stray").write_bytes(b"")
    assert gc_store.clear_tmp() == 2
    assert leftovers(gc_store.root / "tmp") == []
    assert gc_store.exists(sha) and gc_store.task_root(sha).is_dir()


@pytest.mark.parametrize(("data", "match"), REJECTED.values(), ids=REJECTED.keys())
def test_check_answers_as_put_would_and_stores_nothing(
    tmp_path: Path, data: bytes, match: str
) -> None:
    store = CodeStore(tmp_path / "code", max_zipped=2048, max_unzipped=4096)
    with pytest.raises(InvalidParameterValueException, match=match):
        store.check(data)
    assert leftovers(store.root) == []
    info = store.check(PACKAGE)
    assert info == PackageInfo(
        hashlib.sha256(PACKAGE).hexdigest(), info.code_sha256, len(PACKAGE), info.unzipped_size
    )
    assert leftovers(store.root) == []


def test_references_committed_under_a_hold_survive_concurrent_collection(
    gc_store: CodeStore, refs: References
) -> None:
    """Uploaders put (held), commit a reference, release, check the package, drop the
    reference and collect it, while a collector sweeps without pause: a package is never
    missing while a reference to it is committed, and nothing is left at the end."""
    packages = [code(f"shared {i % 2}") for i in range(4)]  # two uploaders per package
    stop = threading.Event()
    sweeps = 0

    def collector() -> None:
        nonlocal sweeps
        while not stop.is_set():
            gc_store.sweep()
            sweeps += 1

    def uploader(data: bytes) -> None:
        for _ in range(40):
            sha = gc_store.put(data, hold=True).sha256_hex
            refs.add(sha)  # the metadata commit
            gc_store.release(sha)
            assert gc_store.read_zip(sha) == data
            assert (gc_store.task_root(sha) / "handler.py").is_file()
            refs.drop(sha)
            gc_store.collect([sha])

    order = iter(packages)
    lock = threading.Lock()

    def next_uploader() -> None:
        with lock:
            data = next(order)
        uploader(data)

    sweeper = threading.Thread(target=collector)
    sweeper.start()
    try:
        results = run_together(len(packages), next_uploader)
    finally:
        stop.set()
        sweeper.join(30)
    assert results == [None] * len(packages), results
    assert sweeps > 0
    assert gc_store.sweep() == [] and gc_store.stored() == set()
    assert leftovers(gc_store.root) == []


def test_a_release_waits_for_a_collection_under_way(tmp_path: Path) -> None:
    """A collection reads the references and the holds as one: an uploader that commits its
    reference and releases its hold meanwhile waits, and the package stays."""
    committed: set[str] = set()
    in_query, proceed = threading.Event(), threading.Event()

    def referenced() -> set[str]:
        seen = set(committed)
        in_query.set()
        assert proceed.wait(30)
        return seen

    store = CodeStore(tmp_path / "code", referenced=referenced)
    sha = store.put(PACKAGE, hold=True).sha256_hex
    other = store.put(code("other")).sha256_hex
    collected: list[list[str]] = []
    collecting = threading.Thread(target=lambda: collected.append(store.collect([sha, other])))
    collecting.start()
    assert in_query.wait(30)

    def commit_then_release() -> None:
        committed.add(sha)
        store.release(sha)

    releasing = threading.Thread(target=commit_then_release)
    releasing.start()
    releasing.join(0.5)
    assert releasing.is_alive(), "the hold went while a collection was deciding"
    proceed.set()
    collecting.join(30)
    releasing.join(30)
    assert collected == [[other]]
    assert store.exists(sha) and not store.held(sha)
    assert store.collect([sha]) == []  # now it is the committed reference that keeps it
    assert store.stored() == {sha}
