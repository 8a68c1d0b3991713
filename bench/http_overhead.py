"""Does the HTTP listener slow the RESP path? RESP throughput with HTTP off, on (idle) and on while
/metrics is scraped, alternating the three and rotating which goes first in each round, so drift on a
shared machine hits each alike (ADR 13). The
server's CPU time per request is printed too: on a busy machine it moves far less than requests/s.

    .venv/bin/python -m bench.http_overhead [--rounds 3] [--requests 100000] [--scrape-interval 1.0]

Each round starts a fresh memory-backed server per variant and runs
`redis-benchmark -c 50 -n N -t ping_mbulk` and `-t ping_mbulk -P 16`, then a QPRODUCE/QLEASE mix.
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

from bench import redis_benchmark
from bench.servers import QueratorServer, call, free_port

VARIANTS = ("off", "on", "on+scrape")


@contextmanager
def scraping(port: int, interval: float) -> Iterator[list[int]]:
    """Fetch /metrics every `interval` seconds until the block ends; yields the count of scrapes."""
    done = threading.Event()
    count = [0]

    def loop() -> None:
        while not done.wait(interval):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
                response.read()
            count[0] += 1

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield count
    finally:
        done.set()
        thread.join(10)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc/<pid>/stat (fields 14 and 15, in clock ticks)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(variant: str, requests: int, interval: float) -> dict[str, tuple[float, float]]:
    """Per test: (requests/s, server CPU µs per request)."""
    http_port = 0 if variant == "off" else free_port()
    with QueratorServer("memory", "flush", http_port=http_port) as server:
        for i in range(20):  # queues, so a scrape has per-queue series to read
            call(server.port, "QCREATE", f"q{i}")
        call(server.port, "QPRODUCE", "q0", "ITEMS", *["x"] * 100)
        assert server.proc is not None
        pid = server.proc.pid
        rows: dict[str, tuple[float, float]] = {}
        runs = {
            "ping": ((), {"tests": "ping_mbulk", "requests": requests}),
            "ping -P 16": ((), {"tests": "ping_mbulk", "requests": requests * 4, "pipeline": 16}),
            "qproduce": (("QPRODUCE", "q1", "ITEMS", "payload"), {"requests": requests // 2}),
        }
        with scraping(http_port, interval) if variant == "on+scrape" else _nothing():
            for name, (command, options) in runs.items():
                before = cpu_seconds(pid)
                result = redis_benchmark.run(server.port, *command, **options)  # type: ignore[arg-type]
                used = cpu_seconds(pid) - before
                rows[name] = (result.rps, used / int(options["requests"]) * 1e6)
        return rows


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--scrape-interval", type=float, default=1.0)
    args = parser.parse_args()
    results: dict[str, dict[str, list[tuple[float, float]]]] = {v: {} for v in VARIANTS}
    for round_no in range(args.rounds):
        shift = round_no % len(VARIANTS)
        for variant in VARIANTS[shift:] + VARIANTS[:shift]:
            for name, (rps, cpu_us) in measure(variant, args.requests, args.scrape_interval).items():
                results[variant].setdefault(name, []).append((rps, cpu_us))
                print(f"round {round_no + 1} {variant:10} {name:12} {rps:10.0f} req/s {cpu_us:6.2f} µs CPU")
    print("\nmedians: requests/s, server CPU µs per request")
    print("| test | " + " | ".join(f"HTTP {v}" for v in VARIANTS) + " |")
    print("| --- |" + " --- |" * len(VARIANTS))
    for name in results["off"]:
        cells = []
        for variant in VARIANTS:
            rows = results[variant][name]
            rps = statistics.median(r for r, _ in rows)
            cpu = statistics.median(c for _, c in rows)
            cells.append(f"{rps:,.0f} req/s, {cpu:.2f} µs")
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
