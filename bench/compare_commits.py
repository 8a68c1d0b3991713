"""Two commits of Querator side by side, alternating in one run: the before / after that every kept
performance change needs (issue "Performance"). Each commit is checked out in a temporary git worktree
and served from it (its own code, this checkout's load generators), RocksDB with fsync; the workloads are
a one-item QPRODUCE (redis-benchmark -c 50) and W3's cycle (bench.loadgen, 8 producers, 8 consumers,
COUNT 100). It prints items/s and the server process's CPU µs per operation (all threads, from /proc),
per run and as medians: on a shared machine the CPU figure is the steadier one.

    .venv/bin/python -m bench.compare_commits BEFORE AFTER [--rounds 4] [--items 150000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Served:
    """A server started from `tree` (a checkout of one commit) on a fresh data directory."""

    def __init__(self, tree: Path) -> None:
        self.port = _free_port()
        self.data = tempfile.mkdtemp(prefix="querator-compare-")
        args = [sys.executable, "-m", "querator", "serve", "--port", str(self.port), "--data", self.data]
        if "http-port" in (tree / "querator" / "cli.py").read_text():
            args += ["--http-port", "0"]  # versions with HTTP: keep it off, as the older ones have none
        env = dict(os.environ, PYTHONPATH=str(tree))
        self.proc = subprocess.Popen(
            args, cwd=tree, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL
        )
        assert self.proc.stderr is not None
        log = b""
        while b"ready to accept" not in log:
            chunk = self.proc.stderr.read1(4096)
            if not chunk:
                raise RuntimeError(f"{tree}: server did not start: {log.decode(errors='replace')}")
            log += chunk

    def cpu(self) -> float:
        return _cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)
        shutil.rmtree(self.data, ignore_errors=True)


def one_item_produce(server: Served, items: int) -> int:
    subprocess.run(["redis-cli", "-p", str(server.port), "QCREATE", "q"], check=True, capture_output=True)
    calls = items // 5  # about as long as the cycle
    subprocess.run(
        ["redis-benchmark", "-p", str(server.port), "-c", "50", "-n", str(calls), "-q",
         "QPRODUCE", "q", "ITEMS", "v"],
        check=True, capture_output=True,
    )  # fmt: skip
    return calls


def cycle(server: Served, items: int) -> int:
    subprocess.run(
        [sys.executable, "-m", "bench.loadgen", "--port", str(server.port), "--target", "querator", "cycle",
         "--producers", "8", "--consumers", "8", "--count", "100", "--items", str(items)],
        check=True, capture_output=True, cwd=ROOT,
    )  # fmt: skip
    return items


WORKLOADS: dict[str, Callable[[Served, int], int]] = {"produce 1 item": one_item_produce, "cycle": cycle}


def measure(tree: Path, workload: Callable[[Served, int], int], items: int) -> tuple[float, float]:
    server = Served(tree)
    try:
        cpu0, started = server.cpu(), time.monotonic()
        ops = workload(server, items)
        cpu1, ended = server.cpu(), time.monotonic()
    finally:
        server.stop()
    return ops / (ended - started), (cpu1 - cpu0) / ops * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.compare_commits", description=__doc__.split("\n")[0]
    )
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--items", type=int, default=150_000)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="querator-commits-"))
    trees: dict[str, Path] = {}
    try:
        for label, rev in (("before", args.before), ("after", args.after)):
            trees[label] = work / label
            subprocess.run(
                ["git", "worktree", "add", "--detach", str(trees[label]), rev], cwd=ROOT, check=True,
                capture_output=True,
            )  # fmt: skip
        results: dict[tuple[str, str], list[tuple[float, float]]] = {}
        for round_ in range(args.rounds):
            order = ["before", "after"] if round_ % 2 == 0 else ["after", "before"]
            for name, workload in WORKLOADS.items():
                for label in order:
                    rate, cpu = measure(trees[label], workload, args.items)
                    results.setdefault((name, label), []).append((rate, cpu))
                    print(f"round {round_ + 1} {name:15} {label:6} {rate:10,.0f}/s {cpu:7.2f} µs CPU/op")
        print(f"\n| workload | {args.before} /s | µs CPU/op | {args.after} /s | µs CPU/op |")
        print("| --- | --- | --- | --- | --- |")
        for name in WORKLOADS:
            cells = []
            for label in ("before", "after"):
                runs = results[(name, label)]
                cells += [
                    f"{statistics.median(r for r, _ in runs):,.0f}",
                    f"{statistics.median(c for _, c in runs):.2f}",
                ]
            print(f"| {name} | " + " | ".join(cells) + " |")
    finally:
        for tree in trees.values():
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
