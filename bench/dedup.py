"""What `QPRODUCE ... DEDUP key` costs: plain and DEDUP produces alternated against one server.

    python -m bench.dedup [--rounds R] [--seconds S] [--json PATH] [--quick]

One Querator server (rocksdb, fsync) serves the whole run, so both variants meet the same process, disk
and page cache. Each round measures, for 1 and for 100 items per call, with `redis-benchmark -c 50` (as
`bench.run`'s W1 / W2):

* `plain`:  `QPRODUCE qN ITEMS v [v ...]`
* `dedup`:  `QPRODUCE qN DEDUP k:__rand_int__:__rand_int__ ITEMS v [v ...]`, `-r 2000000000`: every
  call draws a new key (two independent random numbers below 2^31, so a repeat among a few million calls
  is about a one-in-a-billion event), so every call stores and none is deduplicated. `QSTATS
  deduplicated` is read after each measurement and reported: it must be 0.
* `repeat`: `QPRODUCE qN DEDUP same ITEMS v [v ...]`: the first call stores, every later one is a
  duplicate (the repeat path: a key lookup, a counter write, the first call's ids rebuilt).

The order of plain and dedup alternates from round to round (plain first in odd rounds) so that drift on
a shared machine hits both; each measurement uses a fresh queue, deleted afterwards, so none inherits
another's data. Like `bench.run`, a probe run (also the warm-up) sizes each measured run to last about S
seconds. The table shows medians with min-max over the rounds and the ratio dedup / plain; the goal
(issue: "deduplication costs at most 20 % of produce throughput") is a ratio of at least 0.80.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench import redis_benchmark as rb
from bench.run import DEFAULT, QUICK, RESULTS, Sizes, machine
from bench.servers import QueratorServer, call

GOAL_RATIO = 0.80  # deduplication may cost at most 20 % of produce throughput
KEYSPACE = 2_000_000_000  # redis-benchmark -r (an int): each __rand_int__ is random() % this
VARIANTS = ("plain", "dedup", "repeat")
SIZES = (1, 100)


def command(variant: str, queue: str, items: int, run: str) -> tuple[str, ...]:
    """The QPRODUCE that redis-benchmark repeats for one variant; `run` names the redis-benchmark run.

    redis-benchmark seeds its random numbers with the time in seconds, so the probe and the measured run
    that follows it within a second draw the same keys: the run's name in the key keeps them apart.
    """
    unique = f"k:{run}:__rand_int__:__rand_int__"
    dedup = {"plain": (), "dedup": ("DEDUP", unique), "repeat": ("DEDUP", "same")}[variant]
    return ("QPRODUCE", queue, *dedup, "ITEMS", *(["v"] * items))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(server: QueratorServer, variant: str, items: int, sizes: Sizes, label: str) -> dict[str, Any]:
    """One measurement on a fresh queue: items/s, the server's CPU time per call, and the counters that
    prove what it measured. CPU per call is the steadier figure on a shared machine: other engineers' load
    slows the wall clock of both variants, far less the CPU each call costs."""
    assert server.proc is not None
    port = server.port
    queue = f"q-{label}"
    call(port, "QCREATE", queue)
    problems: list[str] = []
    keyspace = KEYSPACE if variant == "dedup" else None
    try:
        # As bench.run.timed_benchmark: a probe (also the warm-up) sizes the run to last about S seconds.
        probe_n = max(20, sizes.probe // items)
        probe = rb.run(port, *command(variant, queue, items, "probe"), requests=probe_n, keyspace=keyspace)
        n = max(probe_n, min(sizes.max_requests, int(probe.rps * sizes.seconds)))
        cpu_before = cpu_seconds(server.proc.pid)
        result = rb.run(
            port,
            *command(variant, queue, items, "run"),
            requests=n,
            keyspace=keyspace,
            timeout=max(60.0, 10 * sizes.seconds + 30),
        )
        cpu = cpu_seconds(server.proc.pid) - cpu_before
        rps, sent = result.rps, probe_n + n
        problems += [f"redis-benchmark stderr: {line}" for line in probe.warnings + result.warnings]
        stats = call(port, "QSTATS", queue)
        fields = dict(zip(stats[::2], stats[1::2], strict=True))
        stored = call(port, "QLEN", queue)
    finally:
        call(port, "QDELETE", queue, timeout=120.0)
    deduplicated = int(fields[b"deduplicated"])
    expected_dups = sent - 1 if variant == "repeat" else 0
    if deduplicated != expected_dups:
        problems.append(f"{label}: deduplicated {deduplicated}, expected {expected_dups} of {sent} calls")
    if stored != (sent - deduplicated) * items:
        problems.append(f"{label}: QLEN {stored} after {sent} calls of {items} item(s), {deduplicated} dups")
    return {
        "variant": variant,
        "items_per_call": items,
        "calls_per_s": rps,
        "items_per_s": rps * items,
        "calls": sent,
        "cpu_us_per_call": 1e6 * cpu / n,
        "deduplicated": deduplicated,
        "stored": stored,
        "argv": " ".join(result.argv[1:]),
        "probe_calls_per_s": probe.rps,
        "seconds": round(result.elapsed, 3),
        "csv": result.rows,
        "problems": problems,
    }


def summarize(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def _k(value: float) -> str:
    return f"{value / 1000:.1f}k" if value < 100_000 else f"{value / 1000:.0f}k"


def render(results: list[dict[str, Any]]) -> tuple[str, list[str]]:
    """The markdown table and the goal verdicts."""
    lines = [
        "| items per call | plain items/s | DEDUP (new key per call) items/s | DEDUP / plain | "
        "repeat (same key) calls/s | server CPU µs per call: plain / DEDUP / repeat |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    verdicts = []
    for items in SIZES:
        by = {
            v: summarize(
                [r["items_per_s"] for r in results if r["variant"] == v and r["items_per_call"] == items]
            )
            for v in VARIANTS
        }
        calls = summarize(
            [r["calls_per_s"] for r in results if r["variant"] == "repeat" and r["items_per_call"] == items]
        )
        ratios = [
            d["items_per_s"] / p["items_per_s"]
            for p in results
            for d in results
            if p["variant"] == "plain" and d["variant"] == "dedup"
            and p["items_per_call"] == d["items_per_call"] == items and p["round"] == d["round"]
        ]  # fmt: skip
        ratio = by["dedup"]["median"] / by["plain"]["median"]
        cpu = {
            v: statistics.median(
                r["cpu_us_per_call"] for r in results if r["variant"] == v and r["items_per_call"] == items
            )
            for v in VARIANTS
        }
        lines.append(
            f"| {items} | {_k(by['plain']['median'])} ({_k(by['plain']['min'])}-{_k(by['plain']['max'])}) "
            f"| {_k(by['dedup']['median'])} ({_k(by['dedup']['min'])}-{_k(by['dedup']['max'])}) "
            f"| **{ratio:.2f}** (per round {min(ratios):.2f}-{max(ratios):.2f}) "
            f"| {_k(calls['median'])} ({_k(calls['min'])}-{_k(calls['max'])}) "
            f"| {cpu['plain']:.0f} / {cpu['dedup']:.0f} / {cpu['repeat']:.0f} "
            f"(DEDUP {100 * (cpu['dedup'] / cpu['plain'] - 1):+.0f} %) |"
        )
        verdicts.append(
            f"{items} item(s) per call, -c 50: DEDUP / plain = {ratio:.2f} "
            f"(cost {100 * (1 - ratio):.0f} %): goal {'met' if ratio >= GOAL_RATIO else 'NOT met'}"
        )
    return "\n".join(lines), verdicts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dedup", description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=None, help="length of one measured run")
    parser.add_argument("--quick", action="store_true", help="2 rounds, short runs")
    parser.add_argument("--json", type=Path, default=RESULTS / "dedup.json")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else DEFAULT
    if args.seconds is not None:
        sizes = replace(sizes, seconds=args.seconds)
    rounds = 2 if args.quick else args.rounds
    before = machine()
    results: list[dict[str, Any]] = []
    problems: list[str] = []
    server = QueratorServer("rocksdb", "fsync")
    try:
        server.start()
        for round_no in range(1, rounds + 1):
            # Alternate which of plain / dedup goes first; the repeat path, measured once a round, last.
            order = ["plain", "dedup"] if round_no % 2 else ["dedup", "plain"]
            for items in SIZES:
                for variant in [*order, "repeat"]:
                    label = f"{variant}-{items}-r{round_no}"
                    r = measure(server, variant, items, sizes, label)
                    r["round"] = round_no
                    results.append(r)
                    problems += r["problems"]
                    print(
                        f"round {round_no}: {variant:6} {items:3} item(s)/call: "
                        f"{r['items_per_s']:>10,.0f} items/s ({r['calls_per_s']:,.0f} calls/s, "
                        f"{r['calls']:,} calls, {r['deduplicated']:,} dups, "
                        f"server CPU {r['cpu_us_per_call']:.0f} us/call)",
                        file=sys.stderr,
                        flush=True,
                    )
    finally:
        server.stop()
        problems += server.problems
    table, verdicts = render(results)
    print(table)
    for line in verdicts:
        print(line)
    for line in problems:
        print(f"PROBLEM: {line}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            {
                "server": server.describe(),
                "rounds": rounds,
                "seconds": sizes.seconds,
                "clients": 50,
                "table": table,
                "verdicts": verdicts,
                "problems": problems,
                "results": results,
                "machine_before": before,
                "machine_after": machine(),
            },
            indent=2,
        )
        + "\n"
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
