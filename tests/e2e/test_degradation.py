"""Honest degradation: a host that cannot isolate instances makes lamina refuse to start and say
what is missing, unless it is told `--isolation process`, which it then says loudly."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.e2e.server import READY

# Root without CAP_SYS_ADMIN: no namespaces, no mounts, as in an unprivileged container.
NO_SYS_ADMIN = ["setpriv", "--bounding-set=-sys_admin", "--inh-caps=-sys_admin", "--"]

pytestmark = pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs util-linux setpriv")


def _serve(data: Path, *flags: str) -> subprocess.Popen[str]:
    argv = [*NO_SYS_ADMIN, sys.executable, "-m", "lamina", "serve", "--port", "0"]
    argv += ["--data-dir", str(data), *flags]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_refuses_to_start_and_names_what_is_missing(tmp_path: Path) -> None:
    proc = _serve(tmp_path / "data")
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert "cannot isolate function instances on this host" in out
    assert "namespaces failed" in out  # what is missing, precisely
    assert "--isolation process" in out  # and the way out
    assert not (tmp_path / "data" / "lamina.db").exists()  # nothing was written


def test_isolation_process_runs_and_says_so(tmp_path: Path) -> None:
    proc = _serve(tmp_path / "data", "--isolation", "process")
    assert proc.stdout is not None
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            m = READY.search(line)
            if m:
                with urllib.request.urlopen(f"{m.group(1)}/_lamina/health") as resp:
                    health = json.load(resp)
                break
        else:
            pytest.fail("lamina did not start:\n" + "".join(lines))
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
    log = "".join(lines)
    assert "WARNING" in log and "isolation: process" in log and "NO namespaces" in log
    assert health["isolation"] == "process"
    assert "no namespaces" in health["isolation_note"]
