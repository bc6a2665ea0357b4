from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.server import Server


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One lamina for the session (tests use distinct function names)."""
    srv = Server(tmp_path_factory.mktemp("lamina-data"), "--idle-timeout", "60").start()
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def lam(server: Server) -> Any:
    return server.client()


@pytest.fixture
def fresh_server(tmp_path: Path) -> Iterator[Server]:
    """A lamina of this test's own, for tests that restart or reconfigure it."""
    srv = Server(tmp_path / "data")
    yield srv
    srv.stop()
    print(srv.log)  # shown by pytest only when the test fails
