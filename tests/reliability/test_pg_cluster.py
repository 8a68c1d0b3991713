"""The throwaway PostgreSQL of bench/pgcluster.py, which the postgres backend's tests and benchmarks stand
on: it starts durable and local only, makes databases, stops without a trace, and its synchronous standby
holds every committed row once promoted (what a failover test relies on)."""

from __future__ import annotations

import socket
import subprocess

import asyncpg
import pytest

from bench.pgcluster import HOST, OWNER_FILE, PgCluster, reap_orphans
from tests.pg_fixtures import needs_postgres
from tests.support import run


async def fetch_value(dsn: str, sql: str) -> object:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


def test_session_cluster_is_durable_and_listens_on_loopback_only(pg_cluster: PgCluster, pg_dsn: str) -> None:
    assert run(fetch_value(pg_dsn, "SHOW fsync")) == "on"
    assert run(fetch_value(pg_dsn, "SHOW synchronous_commit")) == "on"
    assert run(fetch_value(pg_dsn, "SHOW listen_addresses")) == HOST
    # The unix socket sits in the cluster's own directory, never in the system's /var/run/postgresql.
    socket_dir = run(fetch_value(pg_dsn, "SHOW unix_socket_directories"))
    assert socket_dir == str(pg_cluster.socket_dir)


def test_each_module_gets_its_own_database(pg_cluster: PgCluster, pg_dsn: str) -> None:
    assert run(fetch_value(pg_dsn, "SELECT current_database()")) == pg_dsn.rsplit("/", 1)[1]
    other = pg_cluster.create_database(prefix="other")
    assert other != pg_dsn
    assert run(fetch_value(other, "SELECT 1")) == 1


def test_database_names_are_checked_before_they_reach_sql(pg_cluster: PgCluster) -> None:
    with pytest.raises(ValueError, match="database name"):
        pg_cluster.create_database("x; DROP DATABASE postgres")


def port_accepts(port: int) -> bool:
    try:
        socket.create_connection((HOST, port), timeout=1).close()
    except OSError:
        return False
    return True


@needs_postgres
def test_sync_standby_has_every_committed_row_after_promote_and_close_leaves_nothing() -> None:
    cluster = PgCluster()
    try:
        cluster.start()
        dsn = cluster.create_database("failover")
        cluster.psql("CREATE TABLE t (id int PRIMARY KEY)", "failover")
        standby = cluster.start_standby()
        assert standby.is_in_recovery()
        # Committed on the primary after the standby became synchronous: the commit waited for its flush.
        run(fetch_value(dsn, "INSERT INTO t SELECT generate_series(1, 100) RETURNING 0"))
        cluster.crash()
        standby.promote()
        assert not standby.is_in_recovery()
        assert run(fetch_value(standby.dsn("failover"), "SELECT count(*) FROM t")) == 100
        # Promoted means writable.
        assert run(fetch_value(standby.dsn("failover"), "INSERT INTO t VALUES (101) RETURNING id")) == 101
    finally:
        cluster.close()
    assert not cluster.root.exists()
    assert not port_accepts(cluster.port)
    assert not port_accepts(standby.port)


@needs_postgres
def test_a_cluster_whose_owner_died_is_stopped_and_removed_by_the_next_one() -> None:
    orphan = PgCluster().start()
    try:
        # As if the process that made it had been SIGKILLed: no close(), no atexit, a dead owner pid.
        dead = subprocess.Popen(["true"])
        dead.wait()
        (orphan.root / OWNER_FILE).write_text(str(dead.pid))
        assert port_accepts(orphan.port)
        assert orphan.root in reap_orphans()
        assert not orphan.root.exists()
        assert not port_accepts(orphan.port)
    finally:
        orphan.close()
