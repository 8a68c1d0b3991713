"""A short run of the benchmark harness, so it keeps working: it asserts that every workload ran on both
sides, produced positive figures and reported no problem. It asserts no speed (benchmarks are not tests)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.run import TIMING_PROBLEMS

ROOT = Path(__file__).resolve().parent.parent


needs_redis = pytest.mark.skipif(
    not (shutil.which("redis-server") and shutil.which("redis-benchmark")),
    reason="the benchmarks need redis-server and redis-benchmark (Debian redis-server, redis-tools)",
)


def run_bench_module(*argv: str, results: Path) -> dict[str, Any]:
    """Run `python -m <argv> --json results` from the project root; its report, which lists no problem
    but timing ones (errors, lost or miscounted items and log warnings fail)."""
    proc = subprocess.run(
        [sys.executable, "-m", *argv, "--json", str(results)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report: dict[str, Any] = json.loads(results.read_text())
    problems = [p for p in report["problems"] if not any(mark in p for mark in TIMING_PROBLEMS)]
    assert problems == []
    return report


@needs_redis
def test_quick_bench_runs_every_workload_on_both_sides(tmp_path: Path) -> None:
    workloads = ["ping", "produce-fsync", "cycle"]
    report = run_bench_module(
        "bench.run", "--quick", "--only", *workloads, "--no-charts", results=tmp_path / "smoke.json"
    )
    seen = {row["workload"] for row in report["results"]}
    assert seen == set(workloads)
    for row in report["results"]:
        assert row["querator"]["median"] > 0 and row["redis"]["median"] > 0, row


@needs_redis
def test_quick_limits_measure_every_section(tmp_path: Path) -> None:
    rows = run_bench_module("bench.limits", "--quick", results=tmp_path / "limits.json")["rows"]
    servers = ["floor PING", "querator PING", "redis PING"]
    servers += ["querator QPRODUCE q ITEMS v", "redis XADD s * f v"]
    for server in servers:
        assert rows[f"cpu {server} req/s"]["values"][0] > 0, server
        # CPU time comes in clock ticks: a quick run may see none, never a negative amount.
        assert rows[f"cpu {server} user"]["values"][0] >= 0, server
    for durability in ("fsync", "flush"):
        assert rows[f"engine produce ITEMS x 100, 50 clients, rocksdb/{durability} rate"]["values"][0] > 0
        assert rows[f"engine cycle COUNT 100, rocksdb/{durability} rate"]["values"][0] > 0
    assert 0 < rows["disk p50"]["values"][0] <= rows["disk p99"]["values"][0] <= rows["disk max"]["values"][0]


def _perf_can_sample() -> bool:
    """`perf` is installed, matches this kernel, and may sample a process of ours."""
    if shutil.which("perf") is None:
        return False
    probe = subprocess.run(
        ["perf", "record", "-q", "-e", "cpu-clock", "-o", "/dev/null", "--", "true"], capture_output=True
    )
    return probe.returncode == 0


@needs_redis
@pytest.mark.skipif(not _perf_can_sample(), reason="bench.cpu_split needs perf (Debian linux-perf)")
def test_cpu_split_names_where_the_event_loop_spends(tmp_path: Path) -> None:
    result = tmp_path / "split.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.cpu_split", "--workload", "produce", "--backend", "memory",
         "--seconds", "1", "--json", str(result)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    shares = json.loads(result.read_text())
    # Every sample belongs to one thread and one library: the two views add up to the same whole.
    assert sum(shares["threads"].values()) == pytest.approx(sum(shares["process"].values()), abs=0.5)
    assert sum(shares["process"].values()) == pytest.approx(100, abs=2)
    # One-item produces on the memory backend: the event loop runs Python, and talks to its sockets.
    assert shares["event loop"]["Python interpreter"] > 0
    assert shares["event loop"]["kernel"] > 0
