"""The full cycle with HTTP off against HTTP on and /metrics scraped every second (issue: at most 5 %
slower). W3's shape: 8 producers, 8 consumers, COUNT 100, RocksDB with fsync, one fresh server per run,
the two variants alternating and swapping who goes first each round. It reports items/s and the server
process's CPU time per item (all threads, from /proc), the steadier figure on a shared machine.

    .venv/bin/python -m bench.http_cycle [--rounds 4] [--items 150000]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_once(scraped: bool, items: int) -> tuple[float, float]:
    """(items/s, server CPU µs per item) of one cycle against a fresh server."""
    port = _free_port()
    http_port = _free_port() if scraped else 0
    data = tempfile.mkdtemp(prefix="querator-http-cycle-")
    server = subprocess.Popen(
        [sys.executable, "-m", "querator", "serve", "--port", str(port), "--data", data,
         "--http-port", str(http_port)],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    assert server.stderr is not None
    log = b""
    while b"ready to accept" not in log:
        chunk = server.stderr.read1(4096)
        if not chunk:
            raise RuntimeError(f"server did not start: {log.decode(errors='replace')}")
        log += chunk
    stop = threading.Event()

    def scrape() -> None:
        while not stop.wait(1.0):
            with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics") as reply:
                reply.read()

    scraper = threading.Thread(target=scrape, daemon=True)
    if scraped:
        scraper.start()
    try:
        cpu_before, started = _cpu_seconds(server.pid), time.monotonic()
        subprocess.run(
            [sys.executable, "-m", "bench.loadgen", "--port", str(port), "--target", "querator", "cycle",
             "--producers", "8", "--consumers", "8", "--count", "100", "--items", str(items)],
            check=True, capture_output=True,
        )  # fmt: skip
        cpu_after, ended = _cpu_seconds(server.pid), time.monotonic()
    finally:
        stop.set()
        server.terminate()
        server.wait(timeout=30)
    return items / (ended - started), (cpu_after - cpu_before) / items * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.http_cycle", description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--items", type=int, default=150_000)
    args = parser.parse_args(argv)
    results: dict[str, list[tuple[float, float]]] = {"off": [], "on+scrape": []}
    for round_ in range(args.rounds):
        order = ["off", "on+scrape"] if round_ % 2 == 0 else ["on+scrape", "off"]
        for variant in order:
            rate, cpu = run_once(variant == "on+scrape", args.items)
            results[variant].append((rate, cpu))
            print(f"round {round_ + 1} {variant:9} {rate:10,.0f} items/s {cpu:6.2f} µs CPU/item", flush=True)
    print("| HTTP | items/s (median) | server CPU µs per item (median) |\n| --- | --- | --- |")
    for variant, runs in results.items():
        rate = statistics.median(r for r, _ in runs)
        cpu = statistics.median(c for _, c in runs)
        print(f"| {variant} | {rate:,.0f} | {cpu:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
