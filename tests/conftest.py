from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import ServerProcess

# The throwaway PostgreSQL fixtures (pg_cluster, pg_dsn) live in their own plugin module.
pytest_plugins = ["tests.pg_fixtures"]


@pytest.fixture(params=["memory", "rocksdb"])
def backend(request: pytest.FixtureRequest) -> str:
    """Run a test against every storage backend."""
    return str(request.param)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A Querator server process on the RocksDB default, on a free port, stopped after the test."""
    proc = ServerProcess(tmp_path / "data").start()
    yield proc
    proc.kill()


@pytest.fixture
def memory_server(tmp_path: Path) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path / "data", backend="memory").start()
    yield proc
    proc.kill()
