"""What bounds the goals Querator does not reach (W1-W4), measured on this machine in one run.

    python -m bench.limits [--quick] [--rounds R] [--only cpu engine disk] [--json PATH]

Three measurements, each next to its reference:

* **cpu**: the server's CPU time per request (user and system, from /proc/PID/stat around one
  `redis-benchmark -c 50` run), for PING and a one-item produce, on Querator (memory backend), on
  redis-server (no persistence) and on `bench.floor_server`, a uvloop + hiredis server that answers PONG to
  everything and does nothing else: the least any Python asyncio server pays per request. W1 asks a
  produce to cost no more than 1.1 x a Redis XADD.
* **engine**: W2's produce (50 clients, 100 items per call) and the W3 cycle (8 producers and 8
  consumers, `COUNT` 100) run in-process against `querator.Service` on RocksDB, with no network, parsing
  or replies at all: items/s and CPU per item. Set against the end-to-end figures of bench.run, they show
  how much of the server's time per item is the engine and how much the protocol. W3 asks for 100,000
  items/s end to end.
* **disk**: the latency of a 100-byte append plus `fdatasync` in the directory the servers keep their
  data in (a temporary directory, as in bench.run): what every durable reply waits for at least once.
  W4 asks a handoff p99 of 2 ms, which includes one such sync.

The servers run one at a time, alternating in each round; the table shows medians and min-max over the
rounds. Results also go to bench/results/limits.json. See "Where the time goes" in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import uvloop

from bench import redis_benchmark as rb
from bench.servers import ROOT, QueratorServer, RedisServer, Server, call
from querator import Service
from querator.config import Config, Durability

RESULTS = ROOT / "bench" / "results"
_TICKS = os.sysconf("SC_CLK_TCK")


class FloorServer(Server):
    """`python -m bench.floor_server`: PONG to every command, nothing else."""

    kind = "floor"

    def describe(self) -> str:
        return "floor (uvloop + hiredis, PONG only)"

    def command(self, port: int, tmpdir: Path) -> list[str]:
        return [sys.executable, str(ROOT / "bench" / "floor_server.py"), "--port", str(port)]


@dataclass(frozen=True)
class Sizes:
    requests: int  # per redis-benchmark run
    engine_items: int
    syncs: int


FULL = Sizes(requests=200_000, engine_items=200_000, syncs=2_000)
QUICK = Sizes(requests=5_000, engine_items=4_000, syncs=50)


@dataclass
class Row:
    section: str
    label: str
    unit: str
    values: list[float] = field(default_factory=list)

    def summary(self) -> str:
        if not self.values:
            return "-"
        median = statistics.median(self.values)
        if len(self.values) == 1:
            return _fmt(median)
        return f"{_fmt(median)} ({_fmt(min(self.values))}-{_fmt(max(self.values))})"


@dataclass
class Run:
    """What one run measured, and what went wrong on the way (server exit codes, warnings in their logs)."""

    rows: dict[str, Row] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def record(self, key: str, section: str, label: str, unit: str, value: float) -> None:
        self.rows.setdefault(key, Row(section, label, unit)).values.append(value)

    def log(self, line: str) -> None:
        print(line, file=sys.stderr, flush=True)


def _fmt(value: float) -> str:
    return f"{value:,.0f}" if value >= 1000 else f"{value:.2f}" if value < 10 else f"{value:.1f}"


def cpu_seconds(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of a process, all its threads included."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / _TICKS, int(fields[12]) / _TICKS  # utime, stime (fields 14 and 15)


def cpu_per_request(server: Server, command: tuple[str, ...], requests: int) -> tuple[float, float, float]:
    """(requests/s, user µs, system µs per request) of one `redis-benchmark -c 50` run (after a warm-up)."""
    assert server.proc is not None
    rb.run(server.port, *command, requests=max(1_000, requests // 20), timeout=120)
    user0, sys0 = cpu_seconds(server.proc.pid)
    result = rb.run(server.port, *command, requests=requests, timeout=300)
    user1, sys1 = cpu_seconds(server.proc.pid)
    return result.rps, (user1 - user0) / requests * 1e6, (sys1 - sys0) / requests * 1e6


# Each case: the server to start, a setup step, and the command redis-benchmark sends.
_Case = tuple[str, Callable[[], Server], Callable[[int], None], tuple[str, ...]]


def _no_setup(port: int) -> None:
    return None


def _cpu_cases() -> list[_Case]:
    def create_queue(port: int) -> None:
        call(port, "QCREATE", "q")

    querator = partial(QueratorServer, "memory", "flush")
    redis = partial(RedisServer, "none")
    return [
        ("floor PING", FloorServer, _no_setup, ("PING",)),
        ("querator PING", querator, _no_setup, ("PING",)),
        ("redis PING", redis, _no_setup, ("PING",)),
        ("querator QPRODUCE q ITEMS v", querator, create_queue, ("QPRODUCE", "q", "ITEMS", "v")),
        ("redis XADD s * f v", redis, _no_setup, ("XADD", "s", "*", "f", "v")),
    ]


def measure_cpu(run: Run, sizes: Sizes, rounds: int) -> None:
    cases = _cpu_cases()
    for round_no in range(rounds):
        order = cases if round_no % 2 == 0 else list(reversed(cases))
        for label, make, setup, command in order:
            with make() as server:
                setup(server.port)
                rps, user, system = cpu_per_request(server, command, sizes.requests)
            run.problems.extend(server.problems)  # filled in when the server stopped
            per_request = (("req/s", "req/s", rps), ("user", "µs/req", user), ("system", "µs/req", system))
            for name, unit, value in per_request:
                run.record(f"cpu {label} {name}", "cpu", f"{label}: {name}", unit, value)
            run.log(f"cpu {label}: {rps:,.0f} req/s, user {user:.1f} µs, system {system:.1f} µs per request")


@asynccontextmanager
async def engine(durability: Durability) -> AsyncIterator[Service]:
    """A `querator.Service` on RocksDB in a temporary directory, with an empty queue `q`."""
    with tempfile.TemporaryDirectory(prefix="bench-engine-") as data:
        service = Service(Config(backend="rocksdb", data=data, durability=durability))
        await service.start()
        try:
            await service.create_queue("q")
            yield service
        finally:
            await service.close()


async def engine_produce(
    durability: Durability, items: int, batch: int = 100, clients: int = 50
) -> tuple[float, float]:
    """(items/s, CPU µs per item) of W2's produce (50 clients, 100 items per call) in this process."""
    async with engine(durability) as service:
        payloads = [b"v"] * batch
        calls_each = max(1, items // batch // clients)

        async def produce() -> None:
            for _ in range(calls_each):
                await service.produce("q", payloads)

        started = time.perf_counter()
        cpu0 = time.process_time()
        await asyncio.gather(*(produce() for _ in range(clients)))
        cpu = time.process_time() - cpu0
        elapsed = time.perf_counter() - started
    total = calls_each * batch * clients
    return total / elapsed, cpu / total * 1e6


async def engine_cycle(
    durability: Durability, items: int, batch: int = 100, pairs: int = 8
) -> tuple[float, float]:
    """(items/s, CPU µs per item) of W3's COUNT 100 cycle (8 producers, 8 consumers) in this process."""
    async with engine(durability) as service:
        payloads = [b"x" * 64] * batch
        rounds_each = max(1, items // batch // pairs)
        total = rounds_each * batch * pairs
        completed = 0
        finished: tuple[float, float] | None = None  # (perf_counter, process_time) at the last complete

        async def produce() -> None:
            for _ in range(rounds_each):
                await service.produce("q", payloads)

        async def consume() -> None:
            nonlocal completed, finished
            while completed < total:
                leased = await service.lease("q", batch, 200)
                if leased:
                    # Not `completed += await ...`: that reads `completed` before the await, and the
                    # other consumers' additions made meanwhile would be lost.
                    done = await service.complete("q", [item.id for item in leased])
                    completed += done
                    if completed >= total and finished is None:
                        finished = (time.perf_counter(), time.process_time())

        started = time.perf_counter()
        cpu0 = time.process_time()
        # The other consumers may still wait out a blocking lease after the last item: not counted.
        await asyncio.gather(*(produce() for _ in range(pairs)), *(consume() for _ in range(pairs)))
        assert finished is not None
    return total / (finished[0] - started), (finished[1] - cpu0) / total * 1e6


def measure_engine(run: Run, sizes: Sizes, rounds: int) -> None:
    durabilities: tuple[Durability, ...] = ("fsync", "flush")
    workloads = (
        ("engine produce ITEMS x 100, 50 clients", engine_produce),
        ("engine cycle COUNT 100", engine_cycle),
    )
    for _ in range(rounds):
        for name, workload in workloads:
            for durability in durabilities:
                rate, cpu = uvloop.run(workload(durability, sizes.engine_items))
                label = f"{name}, rocksdb/{durability}"
                run.record(f"{label} rate", "engine", f"{label}: items/s", "items/s", rate)
                run.record(f"{label} cpu", "engine", f"{label}: CPU", "µs/item", cpu)
                run.log(f"{label}: {rate:,.0f} items/s, {cpu:.1f} µs CPU per item")


def sync_latencies(directory: str, count: int) -> list[float]:
    """Milliseconds of each 100-byte append + fdatasync to a fresh file in `directory`."""
    path = os.path.join(directory, f"sync-probe-{os.getpid()}")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        record = b"x" * 99 + b"\n"
        times = []
        for _ in range(count):
            started = time.perf_counter()
            os.write(fd, record)
            os.fdatasync(fd)
            times.append((time.perf_counter() - started) * 1000)
        return times
    finally:
        os.close(fd)
        os.unlink(path)


def measure_disk(run: Run, sizes: Sizes, rounds: int) -> None:
    for _ in range(rounds):
        with tempfile.TemporaryDirectory(prefix="bench-disk-") as directory:
            times = sorted(sync_latencies(directory, sizes.syncs))
        p50, p99 = times[len(times) // 2], times[min(len(times) - 1, int(len(times) * 0.99))]
        for name, value in (("p50", p50), ("p99", p99), ("max", times[-1])):
            run.record(f"disk {name}", "disk", f"append 100 B + fdatasync {name}", "ms", value)
        run.log(f"disk: fdatasync p50 {p50:.2f} ms, p99 {p99:.2f} ms, max {times[-1]:.2f} ms")


SECTIONS: dict[str, Callable[[Run, Sizes, int], None]] = {
    "cpu": measure_cpu,
    "engine": measure_engine,
    "disk": measure_disk,
}


def table(rows: dict[str, Row]) -> str:
    lines = ["| section | measurement | median (min-max) | unit |", "| --- | --- | --- | --- |"]
    lines += [f"| {r.section} | {r.label} | {r.summary()} | {r.unit} |" for r in rows.values()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.limits", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, 1 round (keeps the script working)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds per section (default 3, --quick 1)")
    parser.add_argument("--only", nargs="+", choices=list(SECTIONS), default=list(SECTIONS))
    parser.add_argument("--json", type=Path, default=RESULTS / "limits.json")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    rounds = args.rounds or (1 if args.quick else 3)

    run = Run()
    started = time.time()
    load_before = os.getloadavg()
    for name in args.only:
        SECTIONS[name](run, sizes, rounds)
    report: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "seconds": round(time.time() - started, 1),
        "rounds": rounds,
        "quick": args.quick,
        "cpus": os.cpu_count(),
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "rows": {key: {"label": r.label, "unit": r.unit, "values": r.values} for key, r in run.rows.items()},
        "problems": run.problems,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    print(table(run.rows))
    if run.problems:
        print("\nProblems seen:\n" + "\n".join(f"* {p}" for p in run.problems))
    return 0


if __name__ == "__main__":
    sys.exit(main())
