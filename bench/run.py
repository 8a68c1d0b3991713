"""Querator against redis-server, workload by workload, in the same run.

    python -m bench.run [--quick] [--big] [--only NAME ...] [--rounds R] [--json PATH] [--charts DIR]

Each workload runs R rounds (default 3, but 1 for the big-queue workloads backlog, memory, memory-backend
and restart; `--quick`: 1 round, small sizes). A round measures both servers back to back, each on a fresh
server process with its data in a temporary directory, and the order alternates (Querator first in odd
rounds, Redis first in even ones) so slow drift on this shared machine hits both sides alike. The table
shows each side's median with its min-max and the ratio of the medians (querator / redis). Results also go
to bench/results/latest.json, and charts rendered from it to docs/img/. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
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
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from bench import bulk, loadgen, pgqueue
from bench import redis_benchmark as rb
from bench.pgcluster import find_bindir
from bench.servers import (
    PgBackedServer,
    PgQueueServer,
    QueratorPgNodes,
    QueratorServer,
    RedisServer,
    Server,
    call,
    cpu_count,
    querator_version,
    redis_version,
)

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DOCS_IMG = ROOT / "docs" / "img"
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
    backlog_small: int  # W5: the reference backlog (also what is queued after the big one is completed)
    backlog_sizes: tuple[int, ...]  # W5: the bigger backlogs (--big adds 10 million)
    steady_seconds: float  # W5: how long one lease + complete window lasts
    steady_windows: int  # W5: windows per backlog (interleaved with the other backlogs' windows)
    steady_warmup: float  # W5: uncounted lease + complete before each window
    memory_items: tuple[int, ...]  # W6: items queued when the RSS is read (--big adds 10 million)
    restart_items: int  # W7: items queued before the restart
    restart_leased: int  # W7: items leased (lease timeout 1 h) before the second restart


DEFAULT = Sizes(
    seconds=3.0,
    probe=3000,
    max_requests=5_000_000,
    cycle_items_1=6_000,
    cycle_items_100=100_000,
    cycle_time_limit=40.0,
    handoff_seconds=3.0,
    backlog_small=10_000,
    backlog_sizes=(1_000_000,),
    steady_seconds=1.0,
    steady_windows=3,
    steady_warmup=0.3,
    memory_items=(1_000_000,),
    restart_items=1_000_000,
    restart_leased=10_000,
)
QUICK = Sizes(
    seconds=0.8,
    probe=1500,
    max_requests=1_500_000,
    cycle_items_1=1_500,
    cycle_items_100=20_000,
    cycle_time_limit=15.0,
    handoff_seconds=1.5,
    backlog_small=10_000,
    backlog_sizes=(100_000,),
    steady_seconds=0.5,
    steady_windows=2,
    steady_warmup=0.2,
    memory_items=(100_000,),
    restart_items=100_000,
    restart_leased=2_000,
)
BIG_ITEMS = 10_000_000  # what --big adds to W5 and W6


def with_big(sizes: Sizes) -> Sizes:
    return replace(
        sizes,
        backlog_sizes=(*sizes.backlog_sizes, BIG_ITEMS),
        memory_items=(*sizes.memory_items, BIG_ITEMS),
    )


def human(n: int) -> str:
    """10_000 -> '10k', 1_000_000 -> '1M'."""
    for div, suffix in ((1_000_000, "M"), (1_000, "k")):
        if n >= div and n % div == 0:
            return f"{n // div}{suffix}"
    return str(n)


@dataclass(frozen=True)
class Metric:
    key: str
    unit: str  # "req/s", "items/s" (higher is better) or "ms", "s", "MB", "µs/item" (lower is better)


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
    metrics: tuple[Metric, ...] | Callable[[Sizes], tuple[Metric, ...]]
    servers: dict[str, Callable[[], Server]]
    measure: dict[str, Measure]
    # Rounds when --rounds is not given (None: the run's default). The big-queue workloads run once: each
    # of their rounds fills a million items or more per side.
    rounds: int | None = None
    # The sides in the order of round 1; each later round starts one side further on, so every side is
    # measured first as often as the others (two sides: they alternate).
    sides: tuple[str, ...] = SIDES

    def metrics_for(self, sizes: Sizes) -> tuple[Metric, ...]:
        return self.metrics(sizes) if callable(self.metrics) else self.metrics


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
            with CpuMeter(server) as cpu:
                r = loadgen.run_cycle(server.port, target, **cycle_shape(count, items, sizes))
            note_cycle(m, key, r, sizes)
            if count == 100 and r.items:
                # W3 asks for the server's CPU per item at or below Redis's; COUNT 1 runs too few items
                # for /proc's 10 ms ticks.
                m.values[f"{key}: server CPU"] = cpu.seconds["server"] / r.items * 1e6

    return measure


def cycle_shape(count: int, items: int, sizes: Sizes) -> dict[str, Any]:
    """The cycle's clients (8 producers, 8 consumers, `count` per call) for every target."""
    return dict(
        producers=8, consumers=8, count=count, batch=count, items=items, time_limit=sizes.cycle_time_limit
    )


def note_cycle(
    m: Measurement, key: str, r: loadgen.CycleResult | pgqueue.PgQueueResult, sizes: Sizes
) -> None:
    """A cycle's figures and details, and what went wrong in it: errors, a time-out, completes that
    acknowledged too few ids or items lost, a stall."""
    m.details[key] = asdict(r)
    m.values[key] = r.items_per_s
    note_loadgen(m, key, r.errors, r.client_cpu)
    if r.timed_out:
        m.problems.append(
            f"{key}: only {r.items} of {r.target_items} items completed within "
            f"{sizes.cycle_time_limit}s ({r.produced} produced)"
        )
    if isinstance(r, pgqueue.PgQueueResult):
        if r.lost or r.duplicates:
            m.problems.append(f"{key}: {r.lost} items lost, {r.duplicates} leased twice")
        return
    if r.short_completes:
        m.problems.append(f"{key}: {r.short_completes} completes acknowledged fewer ids than sent")
    if r.max_stall_ms > 1000:
        m.problems.append(f"{key}: no completion for {r.max_stall_ms:.0f} ms at one point (stall)")


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


# The problems that report timing on a busy machine (a stall of either server, consumers behind a
# producer, a load generator short of CPU), not a fault: smoke tests, which judge no speed, leave them out.
TIMING_PROBLEMS = ("(stall)", "fell behind", "producer reached only", "the client may be the limit")


def note_loadgen(m: Measurement, key: str, errors: dict[str, int], client_cpu: float) -> None:
    for message, n in errors.items():
        m.problems.append(f"{key}: {message} (x{n})")
    if client_cpu > 0.9:
        m.problems.append(
            f"{key}: load generator used {client_cpu:.0%} of a core; the client may be the limit"
        )


# --- big queues: backlog, memory, restart -----------------------------------------------------------


def durable_server(target: str) -> Server:
    """The fsync/always pair: Querator rocksdb/fsync or redis-server with an AOF fsynced always."""
    return QueratorServer("rocksdb", "fsync") if target == "querator" else RedisServer("always")


class extra_server:
    """Start one more server inside a measurement; stop it and keep its problems in `m` at the end."""

    def __init__(self, factory: Callable[[], Server], m: Measurement) -> None:
        self.server = factory()
        self.m = m

    def __enter__(self) -> Server:
        return self.server.start()

    def __exit__(self, *exc: object) -> None:
        # proc is None once stopped on purpose (stop() is idempotent); a process that ended by itself is not.
        crashed = self.server.proc is not None and self.server.proc.poll() is not None
        self.server.stop()
        if crashed:
            self.m.problems.append(f"{self.server.describe()} (extra server) exited during the run")
        self.m.problems.extend(self.server.problems)


def queued(server: Server, target: str) -> int:
    if target == "querator":
        return int(call(server.port, "QLEN", bulk.QUEUE))
    return int(call(server.port, "XLEN", bulk.QUEUE))


def checked_fill(
    server: Server,
    target: str,
    n: int,
    m: Measurement,
    label: str,
    *,
    expect_total: int | None = None,
    **kw: Any,
) -> bulk.FillResult:
    """Fill n items (outside any timed part), keep the details, check the count on the server."""
    r = bulk.run_fill(server.port, target, n, time_limit=max(120.0, n / 5_000), **kw)
    m.details[label] = asdict(r)
    note_loadgen(m, label, r.errors, 0.0)
    if r.timed_out:
        m.problems.append(f"{label}: gave up after {r.seconds:.0f}s with {r.items} of {n} items stored")
    total = queued(server, target)
    m.details[label]["queued_after"] = total
    want = n if expect_total is None else expect_total
    if r.items != n or total != want:
        m.problems.append(
            f"{label}: replies say {r.items} of {n} stored; the server holds {total} (expected {want})"
        )
    return r


def steady_window(server: Server, target: str, backlog: int, sizes: Sizes, m: Measurement, key: str) -> None:
    """One window of steady lease + complete; the windows of one case are added up in m.details[key]."""
    r = bulk.run_steady(
        server.port, target, backlog, seconds=sizes.steady_seconds, warmup=sizes.steady_warmup
    )
    d = m.details.setdefault(key, {"backlog": backlog, "completed": 0, "seconds": 0.0, "windows": []})
    d["completed"] += r.completed
    d["seconds"] = round(d["seconds"] + r.seconds, 3)
    d["windows"].append(asdict(r))
    note_loadgen(m, key, r.errors, r.client_cpu)
    if r.short_completes:
        m.problems.append(f"{key}: {r.short_completes} completes acknowledged fewer ids than sent")
    if r.max_stall_ms > 1000:
        m.problems.append(f"{key}: no completion for {r.max_stall_ms:.0f} ms at one point (stall)")
    if r.min_backlog < backlog // 2:
        m.problems.append(f"{key}: the refill fell behind; the backlog went down to {r.min_backlog}")


def interleaved(
    cases: list[tuple[str, Server, int]], target: str, sizes: Sizes, m: Measurement, phase: str
) -> dict[str, float]:
    """Steady windows on several live servers in turn (A B C, then B C A, ...), so that drift on the shared
    machine hits every case alike. Returns items/s per case for this phase (completed / measured time)."""
    totals = {key: [0, 0.0] for key, _, _ in cases}
    for w in range(sizes.steady_windows):
        order = cases[w % len(cases) :] + cases[: w % len(cases)]
        for key, server, backlog in order:
            before = m.details.get(key, {"completed": 0, "seconds": 0.0})
            c0, s0 = before["completed"], before["seconds"]
            steady_window(server, target, backlog, sizes, m, key)
            totals[key][0] += m.details[key]["completed"] - c0
            totals[key][1] += m.details[key]["seconds"] - s0
    rates = {key: c / t if t else math.nan for key, (c, t) in totals.items()}
    m.details.setdefault("phases", {})[phase] = rates
    return rates


RATIO = "ratio"


def backlog_metrics(sizes: Sizes) -> tuple[Metric, ...]:
    small = human(sizes.backlog_small)
    out = [Metric(f"{small} queued", ITEMS)]
    for i, n in enumerate(sizes.backlog_sizes):
        out.append(Metric(f"{human(n)} queued", ITEMS))
        if i == 0:
            out.append(Metric(f"{small} after {human(n)} completed", ITEMS))
    for i, n in enumerate(sizes.backlog_sizes):
        out.append(Metric(f"{human(n)} queued / {small} queued", RATIO))
        if i == 0:
            out.append(Metric(f"{small} after {human(n)} completed / {small} queued", RATIO))
    out += [Metric(f"fill {human(n)}", "s") for n in sizes.backlog_sizes]
    first = human(sizes.backlog_sizes[0])
    out.append(Metric(f"lease+complete all {first}", "s"))
    return tuple(out)


def backlog(target: str) -> Measure:
    """W5, on live servers side by side: S holds the small backlog, one more server per bigger size.

    Phase 1: fill them all (timed, outside the measurement), then steady lease + complete windows on each in
    turn. Phase 2: lease + complete everything on the first big one (COUNT 1000, timed), queue the small
    backlog there again, and alternate windows between it and S. Each ratio compares windows of the same
    phase, so slow drift of the machine cancels out."""

    def measure(server: Server, sizes: Sizes, m: Measurement) -> None:
        small = sizes.backlog_small
        s_key = f"{human(small)} queued"
        checked_fill(server, target, small, m, f"fill {human(small)}")
        with contextlib.ExitStack() as stack:
            cases = [(s_key, server, small)]
            for n in sizes.backlog_sizes:
                big = stack.enter_context(extra_server(lambda: durable_server(target), m))
                f = checked_fill(big, target, n, m, f"fill {human(n)}")
                m.values[f"fill {human(n)}"] = f.seconds
                cases.append((f"{human(n)} queued", big, n))
            rates = interleaved(cases, target, sizes, m, "1")
            for key, _, _n in cases[1:]:
                m.values[key] = rates[key]
                m.values[f"{key} / {s_key}"] = rates[key] / rates[s_key]

            _, big0, n0 = cases[1]
            for _, other, _ in cases[2:]:  # the 10M server is done: free its memory and CPU
                other.stop()
            d = bulk.run_drain(big0.port, target, time_limit=max(120.0, n0 / 2_000))
            key = f"lease+complete all {human(n0)}"
            m.details[key] = asdict(d)
            m.values[key] = d.seconds
            note_loadgen(m, key, d.errors, 0.0)
            left = int(call(big0.port, "QLEN", bulk.QUEUE)) if target == "querator" else 0
            if d.timed_out or d.short_completes or left:
                m.problems.append(
                    f"{key}: {d.items} items in {d.seconds:.0f}s, {d.short_completes} short completes, "
                    f"{left} still queued"
                )
            # Redis: XACK leaves the acknowledged entries in the stream, so XLEN keeps counting them.
            base = 0 if target == "querator" else queued(big0, target)
            checked_fill(big0, target, small, m, f"fill {human(small)} after", expect_total=base + small)
            a_key = f"{human(small)} after {human(n0)} completed"
            rates2 = interleaved([(s_key, server, small), (a_key, big0, small)], target, sizes, m, "2")
            m.values[a_key] = rates2[a_key]
            m.values[f"{a_key} / {s_key}"] = rates2[a_key] / rates2[s_key]
        total = m.details[s_key]
        m.values[s_key] = total["completed"] / total["seconds"] if total["seconds"] else math.nan

    return measure


def memory_metrics(sizes: Sizes) -> tuple[Metric, ...]:
    out = [Metric("RSS, empty queue", "MB")]
    for n in sizes.memory_items:
        out += [Metric(f"RSS, {human(n)} queued", "MB"), Metric(f"peak RSS, {human(n)} queued", "MB")]
    return tuple(out)


def memory(target: str, sizes_of: Callable[[Sizes], tuple[int, ...]] = lambda s: s.memory_items) -> Measure:
    """W6. Fill up to each size in turn (100-byte items), wait 2 s, read VmRSS / VmHWM of the server."""

    def measure(server: Server, sizes: Sizes, m: Measurement) -> None:
        assert server.proc is not None
        setup = bulk.run_fill(server.port, target, 0)  # creates the queue / stream and group only
        note_loadgen(m, "setup", setup.errors, 0.0)
        time.sleep(0.5)
        m.values["RSS, empty queue"] = bulk.rss(server.proc.pid)["VmRSS"]
        have = 0
        for n in sizes_of(sizes):
            label = human(n)
            f = checked_fill(server, target, n - have, m, f"fill to {label}", expect_total=n)
            have = n
            time.sleep(2.0)
            mem = bulk.rss(server.proc.pid)
            m.values[f"RSS, {label} queued"] = mem["VmRSS"]
            m.values[f"peak RSS, {label} queued"] = mem["VmHWM"]
            detail: dict[str, Any] = {"fill_s": f.seconds, **mem}
            if server.tmpdir is not None:
                detail["data_dir_mb"] = round(bulk.dir_size_mb(server.tmpdir), 1)
            if target == "redis":
                info = call(server.port, "INFO", "memory").decode()
                for line in info.splitlines():
                    if line.startswith(("used_memory:", "used_memory_rss:", "mem_fragmentation_ratio:")):
                        k, _, v = line.partition(":")
                        detail[k] = float(v)
            m.details[f"memory {label}"] = detail

    return measure


RESTART_LEASE_TIMEOUT_MS = 3_600_000  # an hour: nothing leased expires during the workload


def restart_metrics(sizes: Sizes) -> tuple[Metric, ...]:
    n, k = human(sizes.restart_items), human(sizes.restart_leased)
    return tuple(
        Metric(f"{what}, {sig}", "s")
        for sig in ("SIGTERM", "SIGKILL")
        for what in (f"{n} queued", f"{n} queued, {k} leased")
    )


def _stats(server: Server, target: str) -> dict[str, int]:
    """Querator: ready / leased from QSTATS; Redis: stream length and pending count."""
    if target == "querator":
        flat = call(server.port, "QSTATS", bulk.QUEUE)
        pairs = dict(zip(flat[::2], flat[1::2], strict=True))
        return {"ready": int(pairs[b"ready"]), "leased": int(pairs[b"leased"])}
    pending = call(server.port, "XPENDING", bulk.QUEUE, "g")
    return {"length": int(call(server.port, "XLEN", bulk.QUEUE)), "pending": int(pending[0])}


def restart(target: str) -> Measure:
    """W7. Per signal (SIGTERM, then SIGKILL on a second server): fill, stop with the signal, start again
    and time until the first lease returns an item; then lease `restart_leased` (lease timeout 1 h; the
    timed lease counts as one of them), stop and start again, time the same."""

    def measure(server: Server, sizes: Sizes, m: Measurement) -> None:
        n, k = sizes.restart_items, sizes.restart_leased
        lease_cmd: tuple[Any, ...]
        if target == "querator":
            lease_cmd = ("QLEASE", bulk.QUEUE, "COUNT", 1)
        else:
            lease_cmd = ("XREADGROUP", "GROUP", "g", "c0", "COUNT", 1, "STREAMS", bulk.QUEUE, ">")
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.ExitStack() as stack:
                srv = (
                    server
                    if sig == signal.SIGTERM
                    else stack.enter_context(extra_server(lambda: durable_server(target), m))
                )
                checked_fill(
                    srv,
                    target,
                    n,
                    m,
                    f"fill {human(n)} ({sig.name})",
                    lease_timeout_ms=RESTART_LEASE_TIMEOUT_MS,
                )
                for with_leased in (False, True):
                    if with_leased:
                        got = bulk.run_lease_n(srv.port, target, k - 1)
                        if got != k - 1:
                            m.problems.append(
                                f"restart: leased only {got} of {k - 1} items before the restart"
                            )
                    key = (
                        f"{human(n)} queued, {human(k)} leased, {sig.name}"
                        if with_leased
                        else (f"{human(n)} queued, {sig.name}")
                    )
                    before = _stats(srv, target)
                    r = srv.restart(sig)
                    fl = bulk.first_lease(srv.port, lease_cmd, r["t0"], timeout=120.0)
                    detail: dict[str, Any] = {**r, **asdict(fl), "before": before}
                    detail.pop("t0")
                    m.details[key] = detail
                    if fl.seconds is None:
                        m.problems.append(
                            f"restart {key}: no lease within 120 s (attempts {fl.attempts}, "
                            f"last: {fl.last_error}); "
                            f"server {'running' if srv.alive() else 'exited'}"
                        )
                        return
                    m.values[key] = fl.seconds
                    expected_exit = (0, -signal.SIGTERM) if sig == signal.SIGTERM else (-signal.SIGKILL,)
                    if r["exit_code"] not in expected_exit:
                        m.problems.append(f"restart {key}: the old process exited with {r['exit_code']}")
                    after = _stats(srv, target)
                    detail["after"] = after
                    # The timed lease took one item: one more leased / pending, one less ready.
                    if target == "querator":
                        ok = after == {"ready": before["ready"] - 1, "leased": before["leased"] + 1}
                    else:
                        ok = after == {"length": before["length"], "pending": before["pending"] + 1}
                    if not ok:
                        m.problems.append(
                            f"restart {key}: before {before}, after the restart and one lease {after}"
                        )

    return measure


# --- PostgreSQL (SPEC 9): Querator nodes on one database against the plain SQL queue -------------------
#
# Each side runs on its own throwaway cluster (bench/pgcluster.py: fsync and synchronous_commit on), made
# for that one measurement, so a reply promises the same on both sides: the commit is flushed. The plain
# queue (bench/pgqueue.py) is SQL sent by the load generator's own process, so its client CPU is part of
# "loadgen" there; Querator's is the nodes' CPU.

CORES = "cores"
PG_ONE, PG_TWO, PGQUEUE = "querator", "querator x2", "pgqueue"
PG_SIDES = (PG_ONE, PG_TWO, PGQUEUE)
PG_PROCESSES = ("node 1", "node 2", "postgres", "loadgen", "total")
# (numerator, denominator): the ratios every PostgreSQL throughput row shows.
PG_RATIOS = ((PG_ONE, PGQUEUE), (PG_TWO, PG_ONE))
# Issue #13's goals: (workload, metric, numerator, denominator, goal).
PG_GOALS = (
    ("cycle-pg", "8p+8c COUNT 100", PG_ONE, PGQUEUE, 1.5),
    ("cycle-pg", "8p+8c COUNT 100", PG_TWO, PG_ONE, 1.3),
)
PG_BACKLOG_GOAL = 0.8


def pg_ratios(row: dict[str, Any], sides: tuple[str, ...], unit: str) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    if unit != ITEMS:
        return out
    for a, b in PG_RATIOS:
        if a in sides and b in sides:
            x, y = row[a]["median"], row[b]["median"]
            out[f"{a} / {b}"] = x / y if x is not None and y else None
    return out


class CpuMeter:
    """CPU of every process taking part in one measurement (`Server.cpu_sources`: the server, or each
    Querator node and the PostgreSQL server with all its processes summed) and of this process, the load
    generator: in CPU seconds, and in cores (CPU seconds / wall seconds). On a 2-core machine the sum of
    the cores shows how close a measurement came to the machine's limit."""

    def __init__(self, server: Server) -> None:
        self.sources: dict[str, Callable[[], float]] = {**server.cpu_sources(), "loadgen": time.process_time}
        self.before: dict[str, float] = {}
        self.seconds: dict[str, float] = {}
        self.cores: dict[str, float] = {}
        self.t0 = 0.0

    def __enter__(self) -> CpuMeter:
        self.before = {k: f() for k, f in self.sources.items()}
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        wall = max(time.perf_counter() - self.t0, 1e-9)
        self.seconds = {k: f() - self.before[k] for k, f in self.sources.items()}
        self.cores = {k: cpu / wall for k, cpu in self.seconds.items()}
        # Against the machine's cores: near 2 here, the machine rather than any one side was the limit.
        self.cores["total"] = sum(self.cores.values())

    def record(self, m: Measurement, key: str) -> None:
        m.details.setdefault("cpu", {})[key] = self.cores
        for name, cores in self.cores.items():
            m.values[f"{key}: cpu {name}"] = cores


def pg_cpu_metrics(key: str, sides: tuple[str, ...]) -> list[Metric]:
    nodes = 2 if PG_TWO in sides else 1
    return [Metric(f"{key}: cpu {p}", CORES) for p in PG_PROCESSES if p != "node 2" or nodes == 2]


def pg_cycle_metrics(sizes: Sizes) -> tuple[Metric, ...]:
    out = []
    for count in (1, 100):
        key = f"8p+8c COUNT {count}"
        out += [Metric(key, ITEMS), *pg_cpu_metrics(key, PG_SIDES)]
    return tuple(out)


def _ports(server: Server) -> list[int]:
    assert isinstance(server, QueratorPgNodes)
    return server.ports


def _dsn(server: Server) -> str:
    assert isinstance(server, PgBackedServer)
    return server.dsn


def pg_cycle(side: str) -> Measure:
    """bench.run's cycle on PostgreSQL: the load generator against the nodes (clients dealt over them), or
    the same shape as SQL against the plain queue."""

    def measure(server: Server, sizes: Sizes, m: Measurement) -> None:
        for count, items in ((1, sizes.cycle_items_1), (100, sizes.cycle_items_100)):
            key = f"8p+8c COUNT {count}"
            shape = cycle_shape(count, items, sizes)
            r: loadgen.CycleResult | pgqueue.PgQueueResult
            with CpuMeter(server) as cpu:
                if side == PGQUEUE:
                    r = pgqueue.run_cycle(_dsn(server), **shape)
                else:
                    r = loadgen.run_cycle(_ports(server), "querator", **shape)
            cpu.record(m, key)
            note_cycle(m, key, r, sizes)

    return measure


def wait_for_qlen(port: int, expected: int, timeout: float = 2.0) -> int:
    """QLEN through one node until it says `expected` (SPEC 9 lets counts lag other nodes by up to 1 s)."""
    deadline = time.monotonic() + timeout
    while True:
        n = int(call(port, "QLEN", bulk.QUEUE))
        if n == expected or time.monotonic() > deadline:
            return n
        time.sleep(0.05)


PG_PRODUCE_KEY = "produce 100 items -c 50"


def pg_produce(side: str) -> Measure:
    """produce-batch on PostgreSQL: 50 connections each sending 100 items per request (Querator, dealt over
    the nodes) or per INSERT (the plain queue) for a fixed time; everything acknowledged must be stored."""

    def measure(server: Server, sizes: Sizes, m: Measurement) -> None:
        key = PG_PRODUCE_KEY
        shape: dict[str, Any] = dict(clients=50, batch=100, seconds=sizes.seconds)
        with CpuMeter(server) as cpu:
            if side == PGQUEUE:
                r = pgqueue.run_produce_batch(_dsn(server), **shape)
            else:
                q = loadgen.run_produce_batch(_ports(server), "querator", **shape)
        cpu.record(m, key)
        if side == PGQUEUE:
            m.details[key] = asdict(r)
            m.values[key] = r.items_per_s
            note_loadgen(m, key, r.errors, r.client_cpu)
            if r.lost:
                m.problems.append(f"{key}: {r.lost} acknowledged items lost")
            return
        m.details[key] = asdict(q)
        m.values[key] = q.items_per_s
        note_loadgen(m, key, q.errors, q.client_cpu)
        stored = wait_for_qlen(server.port, q.items)
        m.details["stored"] = stored
        if stored != q.items:
            m.problems.append(f"{key}: QLEN is {stored} after {q.items} items were acknowledged")

    return measure


def pg_backlog_metrics(sizes: Sizes) -> tuple[Metric, ...]:
    small, big = human(sizes.backlog_small), human(sizes.backlog_sizes[0])
    fresh, after = f"{small} queued, fresh table", f"{small} queued after {big} completed"
    return (
        Metric(fresh, ITEMS),
        Metric(after, ITEMS),
        Metric(f"{after} / fresh", RATIO),
        Metric(f"fill {big}", "s"),
        Metric(f"lease+complete all {big}", "s"),
    )


def pg_backlog(side: str) -> Measure:
    """W5 on PostgreSQL: steady lease + complete (4 consumers, COUNT 100, the backlog refilled) on a fresh
    table holding 10k items, against a second database of the same cluster where 1M items were produced
    and completed before 10k were queued again: what a million dead rows at the head cost. Windows
    alternate between the two, so drift cancels in the ratio. The 1M fill is batched (1000 per request
    or INSERT) and the drain leases and completes 1000 at a time."""

    def measure(server: Server, sizes: Sizes, m: Measurement) -> None:
        assert isinstance(server, PgBackedServer)
        small, big = sizes.backlog_small, sizes.backlog_sizes[0]
        fresh, after = (
            f"{human(small)} queued, fresh table",
            f"{human(small)} queued after {human(big)} completed",
        )
        after_dsn = server.cluster.create_database("after")
        if side == PGQUEUE:
            _pgqueue_backlog(server.dsn, after_dsn, sizes, m, fresh, after)
            return
        with extra_server(lambda: QueratorServer("postgres", postgres_dsn=after_dsn), m) as other:
            checked_fill(server, "querator", small, m, f"fill {human(small)}")
            f = checked_fill(other, "querator", big, m, f"fill {human(big)}")
            m.values[f"fill {human(big)}"] = f.seconds
            d = bulk.run_drain(other.port, "querator", time_limit=max(120.0, big / 2_000))
            key = f"lease+complete all {human(big)}"
            m.details[key] = asdict(d)
            m.values[key] = d.seconds
            note_loadgen(m, key, d.errors, 0.0)
            left = int(call(other.port, "QLEN", bulk.QUEUE))
            if d.timed_out or d.short_completes or left:
                m.problems.append(
                    f"{key}: {d.items} items in {d.seconds:.0f}s, {d.short_completes} short completes, "
                    f"{left} still queued"
                )
            checked_fill(other, "querator", small, m, f"fill {human(small)} after")
            rates = interleaved([(fresh, server, small), (after, other, small)], "querator", sizes, m, "1")
        m.values[fresh], m.values[after] = rates[fresh], rates[after]
        m.values[f"{after} / fresh"] = rates[after] / rates[fresh]

    return measure


def _pgqueue_backlog(
    fresh_dsn: str, after_dsn: str, sizes: Sizes, m: Measurement, fresh: str, after: str
) -> None:
    small, big = sizes.backlog_small, sizes.backlog_sizes[0]
    steps = {
        f"fill {human(small)}": pgqueue.run_fill(fresh_dsn, small),
        f"fill {human(big)}": pgqueue.run_fill(after_dsn, big),
        f"lease+complete all {human(big)}": pgqueue.run_drain(after_dsn, time_limit=max(120.0, big / 2_000)),
        f"fill {human(small)} after": pgqueue.run_fill(after_dsn, small),
    }
    for key, step in steps.items():
        m.details[key] = asdict(step)
        note_loadgen(m, key, step.errors, 0.0)
        m.values[key] = step.seconds
    if steps[f"lease+complete all {human(big)}"].items != big:
        m.problems.append(
            f"lease+complete all {human(big)}: {steps[f'lease+complete all {human(big)}'].items} items"
        )
    totals = {fresh: [0, 0.0], after: [0, 0.0]}
    cases = [(fresh, fresh_dsn), (after, after_dsn)]
    for w in range(sizes.steady_windows):
        for key, dsn in cases[w % 2 :] + cases[: w % 2]:
            r = pgqueue.run_steady(dsn, small, seconds=sizes.steady_seconds, warmup=sizes.steady_warmup)
            m.details.setdefault(key, {"windows": []})["windows"].append(asdict(r))
            note_loadgen(m, key, r.errors, r.client_cpu)
            if r.min_backlog < small // 2:
                m.problems.append(f"{key}: the refill fell behind; the backlog went down to {r.min_backlog}")
            totals[key][0] += r.items
            totals[key][1] += r.seconds
    rates = {key: c / t if t else math.nan for key, (c, t) in totals.items()}
    m.values[fresh], m.values[after] = rates[fresh], rates[after]
    m.values[f"{after} / fresh"] = rates[after] / rates[fresh]


# Lower than handoff's 1000/s: SPEC 9's bound is a latency, so the rate must stay well inside what one
# partition commits one item at a time; at saturation the figure would measure a backlog instead.
PG_HANDOFF_RATE = 200


def pg_handoff(side: str) -> Measure:
    """handoff on PostgreSQL: 8 consumers blocked in QLEASE COUNT 1 (polling, for the plain queue), one
    producer at a fixed PG_HANDOFF_RATE items/s; on two nodes the producer uses the first and the consumers
    the second, so every item crosses nodes (SPEC 9: within 100 ms at the 99th percentile)."""

    def measure(server: Server, sizes: Sizes, m: Measurement) -> None:
        shape: dict[str, Any] = dict(rate=PG_HANDOFF_RATE, duration=sizes.handoff_seconds, consumers=8)
        r: loadgen.HandoffResult
        with CpuMeter(server) as cpu:
            if side == PGQUEUE:
                r = pgqueue.run_handoff(_dsn(server), **shape)
            else:
                r = loadgen.run_handoff(_ports(server), "querator", time_limit=60, **shape)
        cpu.record(m, "handoff")
        m.details["handoff"] = asdict(r)
        m.values["p50"], m.values["p99"], m.values["max"] = r.p50_ms, r.p99_ms, r.max_ms
        note_loadgen(m, "handoff", r.errors, r.client_cpu)
        if r.drain_ms > 250:
            m.problems.append(
                f"handoff: consumers fell behind the producer ({r.drain_ms:.0f} ms to drain after the last "
                "send); the latencies measure a backlog, not the handoff"
            )
        if r.achieved_rate < 0.95 * r.rate:
            m.problems.append(f"handoff: producer reached only {r.achieved_rate:.0f} of {r.rate:.0f} items/s")

    return measure


PG_HANDOFF_P99_MS = 100.0  # SPEC 9: a consumer blocked on one node gets an item produced on another


def pg_goals(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Issue #13's goals checked against this run's medians."""
    out = []
    for workload, metric, a, b, goal in PG_GOALS:
        for row in results:
            if row["workload"] == workload and row["metric"] == metric:
                ratio = row["ratios"].get(f"{a} / {b}")
                out.append(
                    {
                        "what": f"{workload} {metric}: {a} / {b}",
                        "ratio": ratio,
                        "goal": goal,
                        "met": None if ratio is None else ratio >= goal,
                    }
                )
    for row in results:
        if row["workload"] == "handoff-pg" and row["metric"] == "p99" and PG_TWO in row["sides"]:
            p99 = row[PG_TWO]["median"]
            out.append(
                {
                    "what": f"handoff-pg p99 ms, {PG_TWO} (producer and consumers on different nodes)",
                    "ratio": p99,
                    "goal": PG_HANDOFF_P99_MS,
                    "at_most": True,
                    "met": None if p99 is None else p99 <= PG_HANDOFF_P99_MS,
                }
            )
        if row["workload"] == "backlog-pg" and row["unit"] == RATIO:
            for side in row["sides"]:
                ratio = row[side]["median"]
                out.append(
                    {
                        "what": f"backlog-pg {row['metric']}: {side}",
                        "ratio": ratio,
                        "goal": PG_BACKLOG_GOAL if side == PG_ONE else None,
                        "met": None if ratio is None or side != PG_ONE else ratio >= PG_BACKLOG_GOAL,
                    }
                )
    return out


def render_pg_goals(goals: list[dict[str, Any]]) -> str:
    if not goals:
        return ""
    lines = ["PostgreSQL goals (issue #13):"]
    width = max(len(g["what"]) for g in goals)
    for g in goals:
        ratio = "-" if g["ratio"] is None else f"{g['ratio']:.2f}"
        goal = "" if g["goal"] is None else f"{'<=' if g.get('at_most') else '>='} {g['goal']:.2f}"
        verdict = (
            "" if g["goal"] is None else ("-" if g["met"] is None else ("met" if g["met"] else "NOT met"))
        )
        lines.append(f"  {g['what'].ljust(width)}  {ratio:>5}  {goal:8}  {verdict}")
    return "\n".join(lines)


# --- the workloads ----------------------------------------------------------------------------------

RATE = "req/s"
ITEMS = "items/s"
CPU_PER_ITEM = "µs/item"  # the server process's CPU (all threads) per item; lower is better

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
        metrics=(
            Metric("8p+8c COUNT 1", ITEMS),
            Metric("8p+8c COUNT 100", ITEMS),
            Metric("8p+8c COUNT 100: server CPU", CPU_PER_ITEM),
        ),
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
    Workload(
        name="backlog",
        summary="4 consumers lease COUNT 100 + complete for 3 s, the queue held at 10k / 1M items, "
        "and at 10k after 1M were produced and completed (--big: 10M too)",
        pairing="fsync/always",
        metrics=backlog_metrics,
        servers={"querator": lambda: durable_server("querator"), "redis": lambda: durable_server("redis")},
        measure={"querator": backlog("querator"), "redis": backlog("redis")},
        rounds=1,
    ),
    Workload(
        name="memory",
        summary="VmRSS of the server process with 1M 100-byte items queued (--big: 10M too); "
        "Querator rocksdb/fsync vs redis without persistence",
        pairing="fsync/none",
        metrics=memory_metrics,
        servers={
            "querator": lambda: QueratorServer("rocksdb", "fsync"),
            "redis": lambda: RedisServer("none"),
        },
        measure={"querator": memory("querator"), "redis": memory("redis")},
        rounds=1,
    ),
    Workload(
        name="memory-backend",
        summary="as memory, with Querator's in-memory backend (1M items only)",
        pairing="memory/none",
        metrics=lambda s: memory_metrics(replace(s, memory_items=s.memory_items[:1])),
        servers={"querator": lambda: QueratorServer("memory", "flush"), "redis": lambda: RedisServer("none")},
        measure={
            "querator": memory("querator", lambda s: s.memory_items[:1]),
            "redis": memory("redis", lambda s: s.memory_items[:1]),
        },
        rounds=1,
    ),
    Workload(
        name="restart",
        summary="start -> first successful lease with 1M queued, then with 10k of them leased; "
        "after SIGTERM and after SIGKILL",
        pairing="fsync/always",
        metrics=restart_metrics,
        servers={"querator": lambda: durable_server("querator"), "redis": lambda: durable_server("redis")},
        measure={"querator": restart("querator"), "redis": restart("redis")},
        rounds=1,
    ),
)
PG_SERVERS: dict[str, Callable[[], Server]] = {
    PG_ONE: lambda: QueratorPgNodes(1),
    PG_TWO: lambda: QueratorPgNodes(2),
    PGQUEUE: PgQueueServer,
}
WORKLOADS += (
    Workload(
        name="cycle-pg",
        summary="as cycle, on PostgreSQL: Querator on 1 node and on 2 nodes sharing one database (clients "
        "spread over both) vs the plain SKIP LOCKED queue (bench/pgqueue.py)",
        pairing="sync commit",
        metrics=pg_cycle_metrics,
        servers=PG_SERVERS,
        measure={side: pg_cycle(side) for side in PG_SIDES},
        sides=PG_SIDES,
    ),
    Workload(
        name="produce-batch-pg",
        summary="as produce-batch, on PostgreSQL: 50 connections x 100 items per request, 1 and 2 nodes vs "
        "the plain queue's INSERT of 100",
        pairing="sync commit",
        metrics=(Metric(PG_PRODUCE_KEY, ITEMS), *pg_cpu_metrics(PG_PRODUCE_KEY, PG_SIDES)),
        servers=PG_SERVERS,
        measure={side: pg_produce(side) for side in PG_SIDES},
        sides=PG_SIDES,
    ),
    Workload(
        name="handoff-pg",
        summary="as handoff, on PostgreSQL: produce -> lease latency at 200 items/s; on 2 nodes the "
        "producer is on one node and the blocked consumers on the other",
        pairing="sync commit",
        metrics=(
            Metric("p50", "ms"),
            Metric("p99", "ms"),
            Metric("max", "ms"),
            *pg_cpu_metrics("handoff", PG_SIDES),
        ),
        servers=PG_SERVERS,
        measure={side: pg_handoff(side) for side in PG_SIDES},
        sides=PG_SIDES,
    ),
    Workload(
        name="backlog-pg",
        summary="as backlog, on PostgreSQL: 10k queued in a fresh table vs 10k queued after 1M were "
        "produced and completed (--quick: 100k), one node vs the plain queue",
        pairing="sync commit",
        metrics=pg_backlog_metrics,
        servers={side: PG_SERVERS[side] for side in (PG_ONE, PGQUEUE)},
        measure={PG_ONE: pg_backlog(PG_ONE), PGQUEUE: pg_backlog(PGQUEUE)},
        rounds=1,
        sides=(PG_ONE, PGQUEUE),
    ),
)
PG_WORKLOADS = ("cycle-pg", "produce-batch-pg", "handoff-pg", "backlog-pg")
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
    if unit == "s":
        return f"{value:.1f}" if value >= 100 else f"{value:.2f}"
    if unit == "MB":
        return f"{value:.0f}"
    if unit in (RATIO, CORES, CPU_PER_ITEM):
        return f"{value:.2f}"
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


def build_results(workloads: list[Workload], runs: list[Run], sizes: Sizes) -> list[dict[str, Any]]:
    results = []
    for w in workloads:
        mine = [r for r in runs if r.workload == w.name]
        for metric in w.metrics_for(sizes):
            row: dict[str, Any] = {
                "workload": w.name,
                "metric": metric.key,
                "unit": metric.unit,
                "pairing": w.pairing,
            }
            for side in w.sides:
                values = [r.values.get(metric.key, math.nan) for r in mine if r.side == side]
                row[side] = {"server": next((r.server for r in mine if r.side == side), "")} | summarize(
                    values
                )
            q, r = row[w.sides[0]]["median"], row[w.sides[1]]["median"]
            row["ratio"] = q / r if q is not None and r and metric.unit not in (RATIO, CORES) else None
            if w.sides != SIDES:
                row["sides"] = list(w.sides)
                row["ratios"] = pg_ratios(row, w.sides, metric.unit)
            results.append(row)
    return results


def grid(rows: list[list[str]]) -> list[str]:
    """Columns padded to their widest cell (the last one right-aligned), a rule under the header row."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
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
    return lines


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
        if "sides" in row:
            continue  # the PostgreSQL workloads have a table of their own
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
    if len(rows) == 1:
        return ""
    lines = grid(rows)
    lines.append("")
    lines.append(
        "q/r = querator median / redis median. For req/s and items/s higher is better (q/r < 1: Querator"
    )
    lines.append(
        "is slower); for ms, s, MB and µs/item lower is better (q/r > 1: Querator is slower or bigger)."
    )
    return "\n".join(lines)


def render_pg_table(results: list[dict[str, Any]]) -> str:
    """The PostgreSQL workloads: one column per side, then the ratios of PG_RATIOS."""
    pg_rows = [r for r in results if "sides" in r]
    if not pg_rows:
        return ""
    ratio_names = [f"{a} / {b}" for a, b in PG_RATIOS]
    rows = [["workload", "metric", "unit", *(f"{s} median (min-max)" for s in PG_SIDES), *ratio_names]]
    for row in pg_rows:
        cells = []
        for side in PG_SIDES:
            summary = row.get(side)
            cells.append("-" if summary is None or summary["median"] is None else cell(summary, row["unit"]))
        ratios = [row["ratios"].get(n) for n in ratio_names]
        rows.append(
            [
                row["workload"],
                row["metric"],
                row["unit"],
                *cells,
                *("-" if x is None else f"{x:.2f}" for x in ratios),
            ]
        )
    lines = grid(rows)
    lines.append("")
    lines.append(
        f"PostgreSQL, fsync and synchronous_commit on, a throwaway cluster per side and round. {PG_ONE}: one"
    )
    lines.append(
        f"node; {PG_TWO}: two nodes on one database, clients dealt over both; {PGQUEUE}: bench/pgqueue.py."
    )
    lines.append(
        "cpu rows: CPU seconds per wall second of each process (postgres: all its processes summed; loadgen:"
    )
    lines.append("the load generator, which for pgqueue also runs the queue's SQL client).")
    return "\n".join(lines)


BACKLOG_GOAL = 0.9


def backlog_ratios(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The backlog ratio rows (each backlog's items/s over the small backlog's, measured in the same
    interleaved phase) with the W5 goal for Querator: >= 0.9."""
    out = []
    for r in results:
        if r["workload"] == "backlog" and r["unit"] == RATIO:
            q = r["querator"]["median"]
            out.append(
                {
                    "metric": r["metric"],
                    "querator": q,
                    "redis": r["redis"]["median"],
                    "goal": BACKLOG_GOAL,
                    "met": None if q is None else q >= BACKLOG_GOAL,
                }
            )
    return out


def render_backlog_ratios(ratios: list[dict[str, Any]]) -> str:
    if not ratios:
        return ""
    lines = [f"backlog goal: Querator items/s with a big backlog >= {BACKLOG_GOAL:.2f} x the small one"]
    width = max(len(r["metric"]) for r in ratios)
    for r in ratios:
        cells = "  ".join(f"{side} {'-' if r[side] is None else format(r[side], '.2f')}" for side in SIDES)
        verdict = "-" if r["met"] is None else ("met" if r["met"] else "NOT met")
        lines.append(f"  {r['metric'].ljust(width)}  {cells}  {verdict}")
    return "\n".join(lines)


def _terminate(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def machine() -> dict[str, Any]:
    """What the numbers were measured on (pasted into docs/benchmarks.md)."""
    info: dict[str, Any] = {
        "nproc": cpu_count(),
        "cpu_model": "?",
        "mem_total_mb": None,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "python_executable": sys.executable,
    }
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["mem_total_mb"] = int(line.split()[1]) // 1024
    for module in ("rocksdict", "hiredis", "uvloop"):
        try:
            from importlib.metadata import version

            info[module] = version(module)
        except Exception:
            info[module] = "?"
    return info


def run_charts(json_path: Path, out_dir: Path) -> None:
    try:
        from bench import charts
    except ImportError as exc:  # matplotlib missing
        print(f"bench: charts skipped ({exc})", file=sys.stderr)
        return
    try:
        written = charts.render(json_path, out_dir)
    except Exception as exc:
        print(f"bench: charts failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return
    for path in written:
        print(f"chart written to {path}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 round and small sizes (about a minute)")
    parser.add_argument(
        "--only", nargs="+", metavar="NAME", choices=list(BY_NAME), help="run only these workloads"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        help="rounds for every workload (default: 3, but 1 for backlog, memory, memory-backend and restart; "
        "--quick: 1)",
    )
    parser.add_argument("--big", action="store_true", help="backlog and memory with 10 million items too")
    parser.add_argument(
        "--json", type=Path, default=RESULTS / "latest.json", help="where to write the results"
    )
    parser.add_argument(
        "--charts",
        type=Path,
        default=None,
        help=f"where to write the PNG charts (default {DOCS_IMG.relative_to(ROOT)}, with --quick or --only "
        f"{(RESULTS / 'img').relative_to(ROOT)})",
    )
    parser.add_argument("--no-charts", action="store_true", help="do not render charts")
    parser.add_argument("--list", action="store_true", help="list the workloads and exit")
    args = parser.parse_args(argv)
    if args.list:
        for w in WORKLOADS:
            rounds = f"{w.rounds} round" if w.rounds else ""
            print(f"{w.name:15} {w.pairing:15} {rounds:8} {w.summary}")
        return 0
    if args.rounds is not None and args.rounds < 1:
        parser.error("--rounds must be at least 1")
    sizes = QUICK if args.quick else DEFAULT
    if args.big:
        sizes = with_big(sizes)
    workloads = [BY_NAME[n] for n in args.only] if args.only else list(WORKLOADS)
    skipped = []
    if find_bindir() is None:
        skipped = [w.name for w in workloads if w.name in PG_WORKLOADS]
        workloads = [w for w in workloads if w.name not in PG_WORKLOADS]
        if skipped:
            print(
                f"bench: {', '.join(skipped)} skipped: no PostgreSQL server binaries (make postgres)",
                file=sys.stderr,
            )
    signal.signal(signal.SIGTERM, _terminate)

    def rounds_of(w: Workload) -> int:
        if args.rounds:
            return int(args.rounds)
        if args.quick:
            return 1
        return w.rounds or 3

    started = dt.datetime.now(dt.UTC)
    t0 = time.perf_counter()
    load_before = os.getloadavg()
    print(
        f"bench: {len(workloads)} workload(s), {sum(map(rounds_of, workloads))} rounds in all, "
        f"{'quick' if args.quick else 'default'}{' + big' if args.big else ''} sizes; "
        f"{cpu_count()} CPUs, load {load_before[0]:.2f}",
        file=sys.stderr,
    )
    runs: list[Run] = []
    workload_seconds: dict[str, float] = {}
    interrupted = False
    try:
        for w in workloads:
            units = {m.key: m.unit for m in w.metrics_for(sizes)}
            w_started = time.perf_counter()
            try:
                for round_no in range(rounds_of(w)):
                    k = round_no % len(w.sides)
                    order = w.sides[k:] + w.sides[:k]
                    for side in order:
                        run = run_one(w, side, sizes, round_no)
                        runs.append(run)
                        shown = ", ".join(
                            f"{k} {fmt(v, units.get(k, ''))}"
                            for k, v in run.values.items()
                            if units.get(k) != CORES  # in the table; too many for a progress line
                        )
                        status = f"ERROR {run.error}" if run.error else shown
                        print(
                            f"  {w.name} round {round_no + 1} {run.server}: {status} [{run.seconds}s]",
                            file=sys.stderr,
                        )
                        for problem in run.problems:
                            print(f"    ! {problem}", file=sys.stderr)
            finally:
                workload_seconds[w.name] = round(time.perf_counter() - w_started, 1)
    except KeyboardInterrupt:
        interrupted = True
        print("bench: interrupted; reporting what ran", file=sys.stderr)

    results = build_results(workloads, runs, sizes)
    ratios = backlog_ratios(results)
    problems = []
    for run in runs:
        if run.error:
            problems.append(f"{run.workload} round {run.round + 1} {run.server}: {run.error}")
        problems += [f"{run.workload} round {run.round + 1} {run.server}: {p}" for p in run.problems]
    duration = time.perf_counter() - t0
    goals = pg_goals(results)
    table = "\n\n".join(t for t in (render_table(results), render_pg_table(results)) if t)
    extra = "\n\n".join(t for t in (render_backlog_ratios(ratios), render_pg_goals(goals)) if t)
    print()
    print(table)
    if extra:
        print()
        print(extra)
    if problems:
        print("\nProblems seen:")
        for p in problems:
            print(f"  - {p}")
    print(
        f"\n{len(runs)} runs in {duration:.0f}s "
        f"({', '.join(f'{k} {v:.0f}s' for k, v in workload_seconds.items())}); "
        f"load average {load_before[0]:.2f} -> {os.getloadavg()[0]:.2f}"
    )

    report = {
        "started": started.isoformat(timespec="seconds"),
        "duration_s": round(duration, 1),
        "workload_seconds": workload_seconds,
        "argv": sys.argv[1:] if argv is None else argv,
        "quick": args.quick,
        "big": args.big,
        "rounds": {w.name: rounds_of(w) for w in workloads},
        "interrupted": interrupted,
        "sizes": asdict(sizes),
        "environment": {
            "cpus": cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "querator": querator_version(),
            "redis": redis_version(),
            "machine": machine(),
            "loadavg_before": load_before,
            "loadavg_after": os.getloadavg(),
        },
        "results": results,
        "backlog_ratios": ratios,
        "pg_goals": goals,
        "skipped": skipped,
        "table": table + ("\n\n" + extra if extra else ""),
        "problems": problems,
        "runs": [asdict(r) for r in runs],
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"results written to {args.json}", file=sys.stderr)
    if not args.no_charts and runs:
        # Only a full run replaces the charts docs/benchmarks.md shows; partial runs keep theirs apart.
        partial = args.quick or args.only
        run_charts(args.json, args.charts or (RESULTS / "img" if partial else DOCS_IMG))
    return 130 if interrupted else 0


if __name__ == "__main__":
    raise SystemExit(main())
