"""Two commits of Querator side by side, alternating in one run: the before / after that every kept
performance change needs (issue "Performance"). Each commit is checked out in a temporary git worktree
and served from it (its own code, this checkout's load generators), RocksDB with fsync; the workloads are
a one-item QPRODUCE (redis-benchmark -c 50), W3's cycle (bench.loadgen, 8 producers, 8 consumers,
COUNT 100) and W4's handoff (bench.loadgen, 8 blocked consumers, 1,000 items/s for 3 s). It prints
items/s and the server process's CPU µs per operation (all threads, from /proc), and for the handoff its
p50 / p99 latency, per run and as medians: on a shared machine the CPU figure is the steadier one.

    .venv/bin/python -m bench.compare_commits BEFORE AFTER [--rounds 4] [--items 150000]
        [--only produce cycle handoff] [--data-root /dev/shm]
"""

from __future__ import annotations

import argparse
import json
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

    def __init__(self, tree: Path, data_root: str | None = None) -> None:
        self.port = _free_port()
        self.data = tempfile.mkdtemp(prefix="querator-compare-", dir=data_root)
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


# A workload returns the operations it made and, for latency workloads, named figures in ms.
Outcome = tuple[int, dict[str, float]]


def one_item_produce(server: Served, items: int) -> Outcome:
    subprocess.run(["redis-cli", "-p", str(server.port), "QCREATE", "q"], check=True, capture_output=True)
    calls = items // 5  # about as long as the cycle
    subprocess.run(
        ["redis-benchmark", "-p", str(server.port), "-c", "50", "-n", str(calls), "-q",
         "QPRODUCE", "q", "ITEMS", "v"],
        check=True, capture_output=True,
    )  # fmt: skip
    return calls, {}


def cycle(server: Served, items: int) -> Outcome:
    subprocess.run(
        [sys.executable, "-m", "bench.loadgen", "--port", str(server.port), "--target", "querator", "cycle",
         "--producers", "8", "--consumers", "8", "--count", "100", "--items", str(items)],
        check=True, capture_output=True, cwd=ROOT,
    )  # fmt: skip
    return items, {}


def handoff(server: Served, items: int) -> Outcome:
    """W4: the rate is fixed (1,000 items/s for 3 s); what matters is the latency."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.loadgen", "--port", str(server.port), "--target", "querator", "handoff",
         "--rate", "1000", "--duration", "3"],
        check=True, capture_output=True, cwd=ROOT,
    )  # fmt: skip
    result = json.loads(done.stdout)
    return result["received"], {"p50 ms": result["p50_ms"], "p99 ms": result["p99_ms"]}


WORKLOADS: dict[str, Callable[[Served, int], Outcome]] = {
    "produce": one_item_produce,
    "cycle": cycle,
    "handoff": handoff,
}


def measure(
    tree: Path, workload: Callable[[Served, int], Outcome], items: int, data_root: str | None
) -> tuple[float, float, dict[str, float]]:
    server = Served(tree, data_root)
    try:
        cpu0, started = server.cpu(), time.monotonic()
        ops, figures = workload(server, items)
        cpu1, ended = server.cpu(), time.monotonic()
    finally:
        server.stop()
    return ops / (ended - started), (cpu1 - cpu0) / ops * 1e6, figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.compare_commits", description=__doc__.split("\n")[0]
    )
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--items", type=int, default=150_000)
    parser.add_argument("--only", nargs="+", choices=list(WORKLOADS), default=["produce", "cycle"])
    parser.add_argument(
        "--data-root",
        help="where the servers' data directories go (default: the system's temporary directory); a tmpfs "
        "such as /dev/shm makes fsync nearly free, which leaves the server's own share of a latency",
    )
    args = parser.parse_args(argv)
    workloads = {name: WORKLOADS[name] for name in args.only}
    work = Path(tempfile.mkdtemp(prefix="querator-commits-"))
    trees: dict[str, Path] = {}
    try:
        for label, rev in (("before", args.before), ("after", args.after)):
            trees[label] = work / label
            subprocess.run(
                ["git", "worktree", "add", "--detach", str(trees[label]), rev], cwd=ROOT, check=True,
                capture_output=True,
            )  # fmt: skip
        results: dict[tuple[str, str], list[tuple[float, float, dict[str, float]]]] = {}
        for round_ in range(args.rounds):
            order = ["before", "after"] if round_ % 2 == 0 else ["after", "before"]
            for name, workload in workloads.items():
                for label in order:
                    rate, cpu, figures = measure(trees[label], workload, args.items, args.data_root)
                    results.setdefault((name, label), []).append((rate, cpu, figures))
                    extra = "".join(f" {key} {value:7.2f}" for key, value in figures.items())
                    print(
                        f"round {round_ + 1} {name:8} {label:6} {rate:10,.0f}/s {cpu:7.2f} µs CPU/op{extra}",
                        flush=True,
                    )
        _table(args.before, args.after, list(workloads), results)
    finally:
        for tree in trees.values():
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    return 0


def _table(
    before: str,
    after: str,
    workloads: list[str],
    results: dict[tuple[str, str], list[tuple[float, float, dict[str, float]]]],
) -> None:
    """Medians, with the min-max of the latency figures (their spread is most of what they say)."""
    print(f"\n| workload | figure | {before} | {after} |")
    print("| --- | --- | --- | --- |")
    for name in workloads:
        runs = {label: results[(name, label)] for label in ("before", "after")}
        rows = [
            ("/s", [f"{statistics.median(r for r, _, _ in runs[label]):,.0f}" for label in runs]),
            ("µs CPU/op", [f"{statistics.median(c for _, c, _ in runs[label]):.2f}" for label in runs]),
        ]
        for key in runs["before"][0][2]:
            cells = []
            for label in runs:
                values = [figures[key] for _, _, figures in runs[label]]
                cells.append(f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})")
            rows.append((key, cells))
        for figure, cells in rows:
            print(f"| {name} | {figure} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    sys.exit(main())
