"""Querator against redis-server, workload by workload, in the same run.

    python -m bench.run [--quick] [--only NAME ...] [--rounds R] [--json PATH]

Each workload runs R rounds (default 3; `--quick`: 1 round, small sizes). A round measures both servers
back to back, each on a fresh server process with its data in a temporary directory, and the order
alternates (Querator first in even rounds, Redis first in odd ones) so slow drift on this shared machine
hits both sides alike. The table shows each side's median with its min-max and the ratio of the medians
(querator / redis). Results also go to bench/results/latest.json. See bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import signal
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench import loadgen
from bench import redis_benchmark as rb
from bench.servers import (
    QueratorServer,
    RedisServer,
    Server,
    call,
    cpu_count,
    querator_version,
    redis_version,
)

RESULTS = Path(__file__).resolve().parent / "results"
SIDES = ("querator", "redis")


@dataclass(frozen=True)
class Sizes:
    """Everything that scales a run; `--quick` swaps in the small one."""

    seconds: float  # how long one redis-benchmark measurement should last (sized from a probe run)
    probe: int  # requests in the probe / warm-up run
    max_requests: int
    cycle_items_1: int  # items for the COUNT 1 cycle
    cycle_items_100: int  # items for the COUNT 100 cycle
    cycle_time_limit: float
    handoff_seconds: float


DEFAULT = Sizes(
    seconds=3.0,
    probe=3000,
    max_requests=5_000_000,
    cycle_items_1=6_000,
    cycle_items_100=100_000,
    cycle_time_limit=40.0,
    handoff_seconds=3.0,
)
QUICK = Sizes(
    seconds=0.8,
    probe=1500,
    max_requests=1_500_000,
    cycle_items_1=1_500,
    cycle_items_100=20_000,
    cycle_time_limit=15.0,
    handoff_seconds=1.5,
)


@dataclass(frozen=True)
class Metric:
    key: str
    unit: str  # "req/s", "items/s" (higher is better) or "ms" (lower is better)


@dataclass
class Measurement:
    values: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


Measure = Callable[[Server, Sizes, Measurement], None]


@dataclass(frozen=True)
class Workload:
    name: str
    summary: str
    pairing: str  # how durability is matched, e.g. "fsync/always"
    metrics: tuple[Metric, ...]
    servers: dict[str, Callable[[], Server]]
    measure: dict[str, Measure]


# --- redis-benchmark measurements -------------------------------------------------------------------


def timed_benchmark(
    port: int,
    command: tuple[str, ...],
    sizes: Sizes,
    m: Measurement,
    label: str,
    *,
    pipeline: int = 1,
    tests: str | None = None,
    items_per_request: int = 1,
    probe: int | None = None,
) -> tuple[float, int]:
    """A probe run (also the warm-up) sizes the measured run to last about `sizes.seconds`.

    Returns (requests/s of the measured run, requests sent in all including the probe).
    """
    probe_n = probe or sizes.probe
    first = rb.run(port, *command, requests=probe_n, pipeline=pipeline, tests=tests, timeout=60)
    n = int(first.rps * sizes.seconds)
    n = max(probe_n, min(sizes.max_requests, n))
    if pipeline > 1:
        n = max(pipeline, n // pipeline * pipeline)
    result = rb.run(
        port, *command, requests=n, pipeline=pipeline, tests=tests, timeout=max(60.0, 10 * sizes.seconds + 30)
    )
    m.details[label] = {
        "argv": " ".join(result.argv[1:]),
        "requests": n,
        "probe_rps": first.rps,
        "rps": result.rps,
        "items_per_request": items_per_request,
        "seconds": round(result.elapsed, 3),
        "csv": result.rows,
    }
    for line in first.warnings + result.warnings:
        m.problems.append(f"redis-benchmark stderr: {line}")
    return result.rps, probe_n + n


def ping(pipeline: int) -> Callable[[Server, Sizes, Measurement], None]:
    def measure(server: Server, sizes: Sizes, m: Measurement) -> None:
        key = "ping_mbulk -c 50" + (f" -P {pipeline}" if pipeline > 1 else "")
        probe = sizes.probe * (pipeline if pipeline > 1 else 1)
        rps, _ = timed_benchmark(
            server.port, (), sizes, m, key, pipeline=pipeline, tests="ping_mbulk", probe=probe
        )
        m.values[key] = rps

    return measure


def ping_both(server: Server, sizes: Sizes, m: Measurement) -> None:
    ping(1)(server, sizes, m)
    ping(16)(server, sizes, m)


def produce_querator(items: int, key: str) -> Measure:
    def measure(server: Server, sizes: Sizes, m: Measurement) -> None:
        call(server.port, "QCREATE", "q")
        command = ("QPRODUCE", "q", "ITEMS", *(["v"] * items))
        probe = max(20, sizes.probe // items)
        rps, sent = timed_benchmark(server.port, command, sizes, m, key, items_per_request=items, probe=probe)
        m.values[key] = rps * items
        stored = call(server.port, "QLEN", "q")
        m.details["stored"] = stored
        if stored != sent * items:
            m.problems.append(f"QLEN q is {stored} after {sent} QPRODUCE calls of {items} item(s)")

    return measure


def produce_redis(pipeline: int, key: str) -> Measure:
    def measure(server: Server, sizes: Sizes, m: Measurement) -> None:
        command = ("XADD", "s", "*", "f", "v")
        probe = sizes.probe * (pipeline if pipeline > 1 else 1)
        rps, sent = timed_benchmark(server.port, command, sizes, m, key, pipeline=pipeline, probe=probe)
        m.values[key] = rps
        stored = call(server.port, "XLEN", "s")
        m.details["stored"] = stored
        if stored != sent:
            m.problems.append(f"XLEN s is {stored} after {sent} XADD calls")

    return measure


# --- load generator measurements --------------------------------------------------------------------


def cycle(target: str) -> Measure:
    def measure(server: Server, sizes: Sizes, m: Measurement) -> None:
        for count, items in ((1, sizes.cycle_items_1), (100, sizes.cycle_items_100)):
            key = f"8p+8c COUNT {count}"
            r = loadgen.run_cycle(
                server.port,
                target,
                producers=8,
                consumers=8,
                count=count,
                batch=count,
                items=items,
                time_limit=sizes.cycle_time_limit,
            )
            m.details[key] = asdict(r)
            m.values[key] = r.items_per_s
            note_loadgen(m, key, r.errors, r.client_cpu)
            if r.timed_out:
                m.problems.append(
                    f"{key}: only {r.items} of {r.target_items} items completed within "
                    f"{sizes.cycle_time_limit}s ({r.produced} produced)"
                )
            if r.short_completes:
                m.problems.append(f"{key}: {r.short_completes} completes acknowledged fewer ids than sent")
            if r.max_stall_ms > 1000:
                m.problems.append(f"{key}: no completion for {r.max_stall_ms:.0f} ms at one point (stall)")

    return measure


def handoff(target: str) -> Measure:
    def measure(server: Server, sizes: Sizes, m: Measurement) -> None:
        r = loadgen.run_handoff(
            server.port, target, rate=1000, duration=sizes.handoff_seconds, consumers=8, time_limit=60
        )
        m.details["handoff"] = asdict(r)
        m.values["p50"] = r.p50_ms
        m.values["p99"] = r.p99_ms
        m.values["max"] = r.max_ms
        note_loadgen(m, "handoff", r.errors, r.client_cpu)
        if r.drain_ms > 250:
            m.problems.append(
                f"handoff: consumers fell behind the producer ({r.drain_ms:.0f} ms to drain after the last "
                "send); the latencies measure a backlog, not the handoff"
            )
        if r.achieved_rate < 0.95 * r.rate:
            m.problems.append(f"handoff: producer reached only {r.achieved_rate:.0f} of {r.rate:.0f} items/s")

    return measure


def note_loadgen(m: Measurement, key: str, errors: dict[str, int], client_cpu: float) -> None:
    for message, n in errors.items():
        m.problems.append(f"{key}: {message} (x{n})")
    if client_cpu > 0.9:
        m.problems.append(
            f"{key}: load generator used {client_cpu:.0%} of a core; the client may be the limit"
        )


# --- the workloads ----------------------------------------------------------------------------------

RATE = "req/s"
ITEMS = "items/s"

WORKLOADS: tuple[Workload, ...] = (
    Workload(
        name="ping",
        summary="redis-benchmark -t ping_mbulk -c 50, unpipelined and -P 16",
        pairing="memory/none",
        metrics=(Metric("ping_mbulk -c 50", RATE), Metric("ping_mbulk -c 50 -P 16", RATE)),
        servers={"querator": lambda: QueratorServer("memory", "flush"), "redis": lambda: RedisServer("none")},
        measure={"querator": ping_both, "redis": ping_both},
    ),
    Workload(
        name="produce-fsync",
        summary="redis-benchmark -c 50: QPRODUCE q ITEMS v  vs  XADD s * f v",
        pairing="fsync/always",
        metrics=(Metric("produce 1 item -c 50", ITEMS),),
        servers={
            "querator": lambda: QueratorServer("rocksdb", "fsync"),
            "redis": lambda: RedisServer("always"),
        },
        measure={
            "querator": produce_querator(1, "produce 1 item -c 50"),
            "redis": produce_redis(1, "produce 1 item -c 50"),
        },
    ),
    Workload(
        name="produce-flush",
        summary="as produce-fsync, replies after the write but before the fsync",
        pairing="flush/everysec",
        metrics=(Metric("produce 1 item -c 50", ITEMS),),
        servers={
            "querator": lambda: QueratorServer("rocksdb", "flush"),
            "redis": lambda: RedisServer("everysec"),
        },
        measure={
            "querator": produce_querator(1, "produce 1 item -c 50"),
            "redis": produce_redis(1, "produce 1 item -c 50"),
        },
    ),
    Workload(
        name="produce-memory",
        summary="as produce-fsync, without persistence",
        pairing="memory/none",
        metrics=(Metric("produce 1 item -c 50", ITEMS),),
        servers={"querator": lambda: QueratorServer("memory", "flush"), "redis": lambda: RedisServer("none")},
        measure={
            "querator": produce_querator(1, "produce 1 item -c 50"),
            "redis": produce_redis(1, "produce 1 item -c 50"),
        },
    ),
    Workload(
        name="produce-batch",
        summary="-c 50: QPRODUCE q ITEMS v x100  vs  XADD s * f v -P 100 (items/s both sides)",
        pairing="fsync/always",
        metrics=(Metric("produce 100 items -c 50", ITEMS),),
        servers={
            "querator": lambda: QueratorServer("rocksdb", "fsync"),
            "redis": lambda: RedisServer("always"),
        },
        measure={
            "querator": produce_querator(100, "produce 100 items -c 50"),
            "redis": produce_redis(100, "produce 100 items -c 50"),
        },
    ),
    Workload(
        name="cycle",
        summary="loadgen: 8 producers + 8 consumers, lease-then-complete, COUNT 1 and COUNT 100",
        pairing="fsync/always",
        metrics=(Metric("8p+8c COUNT 1", ITEMS), Metric("8p+8c COUNT 100", ITEMS)),
        servers={
            "querator": lambda: QueratorServer("rocksdb", "fsync"),
            "redis": lambda: RedisServer("always"),
        },
        measure={"querator": cycle("querator"), "redis": cycle("redis")},
    ),
    Workload(
        name="handoff",
        summary="loadgen: 8 blocked consumers, 1 producer at 1000 items/s; produce -> lease latency",
        pairing="fsync/always",
        metrics=(Metric("p50", "ms"), Metric("p99", "ms"), Metric("max", "ms")),
        servers={
            "querator": lambda: QueratorServer("rocksdb", "fsync"),
            "redis": lambda: RedisServer("always"),
        },
        measure={"querator": handoff("querator"), "redis": handoff("redis")},
    ),
    Workload(
        name="handoff-memory",
        summary="as handoff, without persistence",
        pairing="memory/none",
        metrics=(Metric("p50", "ms"), Metric("p99", "ms"), Metric("max", "ms")),
        servers={"querator": lambda: QueratorServer("memory", "flush"), "redis": lambda: RedisServer("none")},
        measure={"querator": handoff("querator"), "redis": handoff("redis")},
    ),
)
BY_NAME = {w.name: w for w in WORKLOADS}


# --- running ----------------------------------------------------------------------------------------


@dataclass
class Run:
    workload: str
    round: int
    side: str
    server: str
    seconds: float
    values: dict[str, float]
    details: dict[str, Any]
    problems: list[str]
    error: str | None = None


def run_one(workload: Workload, side: str, sizes: Sizes, round_no: int) -> Run:
    server = workload.servers[side]()
    m = Measurement()
    error = None
    started = time.perf_counter()
    try:
        server.start()
        workload.measure[side](server, sizes, m)
        if not server.alive():
            m.problems.append(f"{server.describe()} exited during the run")
    except (rb.BenchmarkError, RuntimeError, OSError, ValueError, TimeoutError) as exc:
        error = f"{type(exc).__name__}: {exc}"
        if server.proc is not None and not server.alive():
            error += f" (server exited with {server.proc.returncode})"
    finally:
        server.stop()
    problems = m.problems + server.problems
    return Run(
        workload=workload.name,
        round=round_no,
        side=side,
        server=server.describe(),
        seconds=round(time.perf_counter() - started, 2),
        values=m.values,
        details=m.details,
        problems=problems,
        error=error,
    )


def fmt(value: float | None, unit: str) -> str:
    if value is None or math.isnan(value):
        return "-"
    if unit == "ms":
        return f"{value:.1f}" if value >= 100 else f"{value:.2f}"
    if value >= 1e6:
        return f"{value / 1e6:.2f}M"
    if value >= 1e4:
        return f"{value / 1e3:.0f}k"
    if value >= 1e3:
        return f"{value / 1e3:.1f}k"
    return f"{value:.0f}"


def summarize(values: list[float]) -> dict[str, Any]:
    good = [v for v in values if not math.isnan(v)]
    if not good:
        return {"values": values, "median": None, "min": None, "max": None}
    return {"values": values, "median": statistics.median(good), "min": min(good), "max": max(good)}


def cell(summary: dict[str, Any], unit: str) -> str:
    if summary["median"] is None:
        return "failed"
    text = fmt(summary["median"], unit)
    if len(summary["values"]) > 1:
        text += f" ({fmt(summary['min'], unit)}-{fmt(summary['max'], unit)})"
    return text


def build_results(workloads: list[Workload], runs: list[Run]) -> list[dict[str, Any]]:
    results = []
    for w in workloads:
        mine = [r for r in runs if r.workload == w.name]
        for metric in w.metrics:
            row: dict[str, Any] = {
                "workload": w.name,
                "metric": metric.key,
                "unit": metric.unit,
                "pairing": w.pairing,
            }
            for side in SIDES:
                values = [r.values.get(metric.key, math.nan) for r in mine if r.side == side]
                row[side] = {"server": next((r.server for r in mine if r.side == side), "")} | summarize(
                    values
                )
            q, r = row["querator"]["median"], row["redis"]["median"]
            row["ratio"] = q / r if q is not None and r else None
            results.append(row)
    return results


def render_table(results: list[dict[str, Any]]) -> str:
    header = [
        "workload",
        "metric",
        "unit",
        "durability",
        "querator median (min-max)",
        "redis median (min-max)",
        "q/r",
    ]
    rows = [header]
    for row in results:
        ratio = row["ratio"]
        rows.append(
            [
                row["workload"],
                row["metric"],
                row["unit"],
                row["pairing"],
                cell(row["querator"], row["unit"]),
                cell(row["redis"], row["unit"]),
                "-" if ratio is None else f"{ratio:.2f}",
            ]
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = []
    for i, r in enumerate(rows):
        lines.append(
            "  ".join(
                c.ljust(w) if j < len(r) - 1 else c.rjust(w)
                for j, (c, w) in enumerate(zip(r, widths, strict=True))
            )
        )
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines.append("")
    lines.append(
        "q/r = querator median / redis median. For req/s and items/s higher is better (q/r < 1: Querator"
    )
    lines.append("is slower); for ms (latency) lower is better (q/r > 1: Querator is slower).")
    return "\n".join(lines)


def _terminate(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 round and small sizes (about a minute)")
    parser.add_argument(
        "--only", nargs="+", metavar="NAME", choices=list(BY_NAME), help="run only these workloads"
    )
    parser.add_argument("--rounds", type=int, help="rounds per workload (default 3, --quick 1)")
    parser.add_argument(
        "--json", type=Path, default=RESULTS / "latest.json", help="where to write the results"
    )
    parser.add_argument("--list", action="store_true", help="list the workloads and exit")
    args = parser.parse_args(argv)
    if args.list:
        for w in WORKLOADS:
            print(f"{w.name:15} {w.pairing:15} {w.summary}")
        return 0
    rounds = args.rounds or (1 if args.quick else 3)
    if rounds < 1:
        parser.error("--rounds must be at least 1")
    sizes = QUICK if args.quick else DEFAULT
    workloads = [BY_NAME[n] for n in args.only] if args.only else list(WORKLOADS)
    signal.signal(signal.SIGTERM, _terminate)

    started = dt.datetime.now(dt.UTC)
    t0 = time.perf_counter()
    load_before = os.getloadavg()
    print(
        f"bench: {len(workloads)} workload(s) x {rounds} round(s), "
        f"{'quick' if args.quick else 'default'} sizes; {cpu_count()} CPUs, load {load_before[0]:.2f}",
        file=sys.stderr,
    )
    runs: list[Run] = []
    interrupted = False
    try:
        for w in workloads:
            for round_no in range(rounds):
                order = SIDES if round_no % 2 == 0 else SIDES[::-1]
                for side in order:
                    run = run_one(w, side, sizes, round_no)
                    runs.append(run)
                    shown = ", ".join(
                        f"{k} {fmt(v, next(m.unit for m in w.metrics if m.key == k))}"
                        for k, v in run.values.items()
                    )
                    status = f"ERROR {run.error}" if run.error else shown
                    print(
                        f"  {w.name} round {round_no + 1} {run.server}: {status} [{run.seconds}s]",
                        file=sys.stderr,
                    )
                    for problem in run.problems:
                        print(f"    ! {problem}", file=sys.stderr)
    except KeyboardInterrupt:
        interrupted = True
        print("bench: interrupted; reporting what ran", file=sys.stderr)

    results = build_results(workloads, runs)
    problems = []
    for run in runs:
        if run.error:
            problems.append(f"{run.workload} round {run.round + 1} {run.server}: {run.error}")
        problems += [f"{run.workload} round {run.round + 1} {run.server}: {p}" for p in run.problems]
    duration = time.perf_counter() - t0
    table = render_table(results)
    print()
    print(table)
    if problems:
        print("\nProblems seen:")
        for p in problems:
            print(f"  - {p}")
    print(
        f"\n{len(runs)} runs in {duration:.0f}s; "
        f"load average {load_before[0]:.2f} -> {os.getloadavg()[0]:.2f}"
    )

    report = {
        "started": started.isoformat(timespec="seconds"),
        "duration_s": round(duration, 1),
        "argv": sys.argv[1:] if argv is None else argv,
        "quick": args.quick,
        "rounds": rounds,
        "interrupted": interrupted,
        "sizes": asdict(sizes),
        "environment": {
            "cpus": cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "querator": querator_version(),
            "redis": redis_version(),
            "loadavg_before": load_before,
            "loadavg_after": os.getloadavg(),
        },
        "results": results,
        "table": table,
        "problems": problems,
        "runs": [asdict(r) for r in runs],
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"results written to {args.json}", file=sys.stderr)
    return 130 if interrupted else 0


if __name__ == "__main__":
    raise SystemExit(main())
