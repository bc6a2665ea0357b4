from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.server import Server


@pytest.fixture(scope="package")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One lamina for the e2e package (tests use distinct function names); stopped before other
    packages run, so their tests see a host with no lamina on it."""
    srv = Server(tmp_path_factory.mktemp("lamina-data"), "--idle-timeout", "60").start()
    yield srv
    srv.stop()


@pytest.fixture(scope="package")
def lam(server: Server) -> Any:
    return server.client()


@pytest.fixture
def fresh_server(tmp_path: Path) -> Iterator[Server]:
    """A lamina of this test's own, for tests that restart or reconfigure it."""
    srv = Server(tmp_path / "data")
    yield srv
    srv.stop()
    print(srv.log)  # shown by pytest only when the test fails
