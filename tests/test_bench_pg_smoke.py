"""Short runs of the PostgreSQL benchmarks against the session's throwaway cluster, so they keep working.
They assert no speed (benchmarks are not tests)."""

from __future__ import annotations

import pytest

from bench import pg_drivers
from tests.support import run


def test_driver_bench_measures_every_shape_on_both_drivers(pg_dsn: str) -> None:
    pytest.importorskip("psycopg", reason="psycopg comes with the dev extra, for this comparison only")
    results = run(
        pg_drivers.run_all(
            pg_dsn, ["asyncpg", "psycopg"], concurrency=2, duration=0.03, items_needed=10_000, rounds=1
        )
    )
    assert {r.driver for r in results} == {"asyncpg", "psycopg"}
    assert len(results) == len(pg_drivers.Asyncpg().shapes()) + len(pg_drivers.Psycopg().shapes())
    for r in results:
        assert r.errors == [] and r.transactions > 0 and r.round_trips >= 1, r
    # One statement is one round trip whatever the driver: the shape the engine's partition step will take.
    assert {r.round_trips for r in results if r.shape == "step: one statement (CTEs)"} == {1}
