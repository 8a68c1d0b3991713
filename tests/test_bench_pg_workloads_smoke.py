"""A short run of bench.run's PostgreSQL workloads (cycle-pg, produce-batch-pg, handoff-pg, backlog-pg) on
every side: Querator on one node, on two nodes sharing one database, and the plain SQL queue, each on its
own throwaway cluster. It asserts that every side ran, reported figures and no problem (nothing lost, no
error reply, every node really connected to the database); it asserts no speed (benchmarks are not
tests). Skipped only when the PostgreSQL server binaries are missing."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from bench import run
from bench.pgcluster import find_bindir

pytestmark = pytest.mark.skipif(
    find_bindir() is None, reason="needs the PostgreSQL server binaries (Debian: postgresql; make postgres)"
)


# Tiny sizes: enough to go through every step of each workload (the backlog fill, drain and refill too).
SIZES = replace(
    run.QUICK,
    seconds=0.3,
    cycle_items_1=100,
    cycle_items_100=1_000,
    cycle_time_limit=20.0,
    backlog_small=5_000,  # the refill tops up in batches of up to 1000: smaller would run dry
    backlog_sizes=(20_000,),
    steady_seconds=0.2,
    steady_windows=2,
    steady_warmup=0.05,
    handoff_seconds=0.5,
)


@pytest.mark.parametrize("name", run.PG_WORKLOADS)
def test_pg_workload_runs_on_every_side(name: str) -> None:
    workload = run.BY_NAME[name]
    for side in workload.sides:
        result = run.run_one(workload, side, SIZES, 0)
        assert result.error is None, (side, result.error)
        # Notes about timing (a handoff backlog, a slow producer, a stall) depend on how busy the machine
        # is: they belong to the benchmark's report, not to a pass/fail test. Everything else (an error
        # reply, an item lost or leased twice, a count that does not add up) fails the test.
        problems = [p for p in result.problems if not any(t in p for t in run.TIMING_PROBLEMS)]
        assert problems == [], (side, problems)
        for metric in workload.metrics_for(SIZES):
            value = result.values.get(metric.key, math.nan)
            if metric.unit == run.CORES:
                # CPU comes in clock ticks: a short run may see none of a process, never a negative amount;
                # a node the side does not have is simply absent.
                assert math.isnan(value) or value >= 0, (side, metric.key, value)
            elif metric.unit != "s":
                assert value > 0, (side, metric.key, value)
