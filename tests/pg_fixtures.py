"""Pytest fixtures for a throwaway PostgreSQL (bench/pgcluster.py): one cluster per test session, one fresh
database per test module. Tests that use them skip, with the reason, only when the PostgreSQL server binaries
are missing; any other failure to start is an error, not a skip."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from bench.pgcluster import PgCluster, find_bindir

SKIP_REASON = (
    "PostgreSQL server binaries not found (Debian: apt-get install postgresql; or set QUERATOR_PG_BIN)"
)

needs_postgres = pytest.mark.skipif(find_bindir() is None, reason=SKIP_REASON)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """A primary with fsync and synchronous_commit on, on a free 127.0.0.1 port, removed after the session."""
    if find_bindir() is None:
        pytest.skip(SKIP_REASON)
    cluster = PgCluster().start()
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture(scope="module")
def pg_dsn(pg_cluster: PgCluster, request: pytest.FixtureRequest) -> str:
    """The DSN of a database made for this test module alone (named after it, so a log line finds it)."""
    stem = re.sub(r"[^a-z0-9_]", "_", request.module.__name__.rsplit(".", 1)[-1].lower())[:40]
    return pg_cluster.create_database(prefix=stem)
