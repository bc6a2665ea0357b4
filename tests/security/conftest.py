from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.server import Server
from tests.security.harness import Canary, leftover_processes, run_dirs


@pytest.fixture(scope="package")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One lamina (default `--isolation namespaces`) for every attack of the session.

    When it stops, whatever the attacks started must be gone with it."""
    srv = Server(tmp_path_factory.mktemp("lamina-security"), "--idle-timeout", "60").start()
    assert srv.proc is not None
    pid = srv.proc.pid
    yield srv
    assert srv.stop() == 0, srv.log[-3000:]
    assert run_dirs(pid) == []
    assert leftover_processes(pid) == []


@pytest.fixture(scope="package")
def lam(server: Server) -> Any:
    return server.client(read_timeout=120, connect_timeout=10)


@pytest.fixture(scope="package")
def canary(lam: Any, server: Server) -> Canary:
    c = Canary(lam, server)
    c.check()
    return c
