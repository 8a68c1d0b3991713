"""Short runs of the PostgreSQL benchmarks (bench/pgqueue.py, bench/pg_drivers.py against the session's
throwaway cluster; bench/pg_scaling.py on clusters of its own), so they keep working: every workload runs,
nothing acknowledged is lost, no item is leased twice. They assert no speed (benchmarks are not tests)."""

from __future__ import annotations

import pytest

from bench import pg_drivers, pg_scaling, pgqueue
from bench.pgcluster import find_bindir
from tests.support import run


def test_pgqueue_cycle_and_batched_produce_lose_nothing(pg_dsn: str) -> None:
    sizes = pgqueue.Sizes(
        cycle_items_1=200, cycle_items_100=2_000, cycle_time_limit=20.0, produce_seconds=0.3
    )
    results = pgqueue.run_all(pg_dsn, sizes)
    assert [r.workload for r in results] == ["8p+8c COUNT 1", "8p+8c COUNT 100", "produce 100 items -c 50"]
    assert pgqueue.problems(results) == []
    for r in results:
        assert r.items > 0 and r.items_per_s > 0, r
        assert r.lost == 0 and r.duplicates == 0, r
    assert [r.items for r in results[:2]] == [200, 2_000]


def test_driver_bench_measures_every_shape_on_both_drivers(pg_dsn: str) -> None:
    pytest.importorskip("psycopg", reason="psycopg comes with the dev extra, for this comparison only")
    results = run(
        pg_drivers.run_all(
            # 0.03 s of a 100-item shape took 9,800 rows on a fast run: a fill five times that.
            pg_dsn,
            ["asyncpg", "psycopg"],
            concurrency=2,
            duration=0.03,
            items_needed=50_000,
            rounds=1,
        )
    )
    assert {r.driver for r in results} == {"asyncpg", "psycopg"}
    assert len(results) == len(pg_drivers.Asyncpg().shapes()) + len(pg_drivers.Psycopg().shapes())
    for r in results:
        assert r.errors == [] and r.transactions > 0 and r.round_trips >= 1, r
    # One statement is one round trip whatever the driver: the shape the engine's partition step will take.
    assert {r.round_trips for r in results if r.shape == "step: one statement (CTEs)"} == {1}


@pytest.mark.skipif(find_bindir() is None, reason="needs the PostgreSQL server binaries (Debian: postgresql)")
def test_pg_scaling_measures_each_side_with_its_wal() -> None:
    """bench.pg_scaling starts clusters of its own: each side reports a rate, the CPU of the database
    server among its processes, and the WAL its commits wrote."""
    for side in pg_scaling.SIDES:
        rate, cores, wal_per_item = pg_scaling.measure(side, 1_500)
        assert rate > 0, side
        assert cores["total"] > 0 and "postgres" in cores, (side, cores)
        assert wal_per_item > 0, side
