"""Two commits of Querator side by side, alternating in one run: the before / after that every kept
performance change needs (issue "Performance"). Each commit is checked out in a temporary git worktree
and served from it (its own code, this checkout's load generators), RocksDB with fsync. The workloads:
a one-item QPRODUCE (`produce`, redis-benchmark -c 50), W2's 100-item QPRODUCE (`produce-batch`, the
same; its operations are items), W3's cycle (`cycle`, bench.loadgen, 8 producers, 8 consumers,
COUNT 100), W4's handoff (`handoff`, bench.loadgen, 8 blocked consumers, 1,000 items/s for 3 s) and,
with no server, `engine`: W3's cycle on `querator.Service` in a process of the commit's own
(bench.limits, as a library user calls it, with str ids; RocksDB with fsync). It prints items/s and the
server process's CPU µs per operation (all threads, from /proc), and for the handoff its p50 / p99
latency, per run and as medians: on a shared machine the CPU figure is the steadier one.

    .venv/bin/python -m bench.compare_commits BEFORE AFTER [--rounds 4] [--items 150000]
        [--only produce produce-batch cycle handoff engine] [--data-root /dev/shm]
        [--backend postgres [--nodes 2]]

With `--backend postgres`, each measurement gets a throwaway PostgreSQL cluster (bench/pgcluster.py,
fsync and synchronous_commit on) and `--nodes` Querator nodes on it, the clients dealt over them; the CPU
figure is then the nodes' and PostgreSQL's together.
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
sys.path.insert(0, str(ROOT))  # run as a script too: the load generators and the cluster are this checkout's

from bench.pgcluster import PgCluster  # noqa: E402
from bench.servers import postgres_cpu  # noqa: E402


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Served:
    """Querator started from `tree` (a checkout of one commit) on fresh storage: a data directory, or a
    throwaway PostgreSQL cluster with `nodes` nodes on it."""

    def __init__(
        self, tree: Path, data_root: str | None = None, backend: str = "rocksdb", nodes: int = 1
    ) -> None:
        self.tree = tree
        self.procs: list[subprocess.Popen[bytes]] = []
        self.ports: list[int] = []
        self.data = ""
        self.cluster: PgCluster | None = None
        try:
            if backend == "postgres":
                self.cluster = PgCluster().start()
                dsn = self.cluster.create_database("bench")
                for _ in range(nodes):
                    self._start(["--backend", "postgres", "--postgres-dsn", dsn])
            else:
                self.data = tempfile.mkdtemp(prefix="querator-compare-", dir=data_root)
                self._start(["--data", self.data])
        except BaseException:
            self.stop()
            raise
        self.port = self.ports[0]

    def _start(self, storage: list[str]) -> None:
        port = _free_port()
        args = [sys.executable, "-m", "querator", "serve", "--port", str(port), *storage]
        if "http-port" in (self.tree / "querator" / "cli.py").read_text():
            args += ["--http-port", "0"]  # versions with HTTP: keep it off, as the older ones have none
        env = dict(os.environ, PYTHONPATH=str(self.tree))
        proc = subprocess.Popen(
            args, cwd=self.tree, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL
        )
        self.procs.append(proc)
        assert proc.stderr is not None
        log = b""
        while b"ready to accept" not in log:
            chunk = os.read(proc.stderr.fileno(), 4096)
            if not chunk:
                raise RuntimeError(f"{self.tree}: server did not start: {log.decode(errors='replace')}")
            log += chunk
        self.ports.append(port)

    def cpu(self) -> float:
        """CPU seconds so far of every node and, on postgres, of the database server too."""
        total = sum(_cpu_seconds(proc.pid) for proc in self.procs)
        if self.cluster is not None:
            total += postgres_cpu(int((self.cluster.datadir / "postmaster.pid").read_text().split()[0]))
        return total

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
            proc.wait(timeout=30)
        if self.cluster is not None:
            self.cluster.close()
        if self.data:
            shutil.rmtree(self.data, ignore_errors=True)


# A workload returns the operations it made and, for latency workloads, named figures in ms.
Outcome = tuple[int, dict[str, float]]


def one_item_produce(server: Served, items: int) -> Outcome:
    calls = items // 5  # about as long as the cycle
    return _produce(server, calls, 1), {}


def batch_produce(server: Served, items: int) -> Outcome:
    """W2: 100 items per QPRODUCE; the operations counted are items."""
    calls = items // 10  # about as long as the cycle
    return _produce(server, calls, 100) * 100, {}


def _produce(server: Served, calls: int, per_call: int) -> int:
    subprocess.run(["redis-cli", "-p", str(server.port), "QCREATE", "q"], check=True, capture_output=True)
    subprocess.run(
        ["redis-benchmark", "-p", str(server.port), "-c", "50", "-n", str(calls), "-q",
         "QPRODUCE", "q", "ITEMS", *["v"] * per_call],
        check=True, capture_output=True,
    )  # fmt: skip
    return calls


def cycle(server: Served, items: int) -> Outcome:
    subprocess.run(
        [sys.executable, "-m", "bench.loadgen", "--port", *map(str, server.ports), "--target", "querator",
         "cycle",
         "--producers", "8", "--consumers", "8", "--count", "100", "--items", str(items)],
        check=True, capture_output=True, cwd=ROOT,
    )  # fmt: skip
    return items, {}


def handoff(server: Served, items: int) -> Outcome:
    """W4: the rate is fixed (1,000 items/s for 3 s); what matters is the latency."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.loadgen", "--port", *map(str, server.ports), "--target", "querator",
         "handoff",
         "--rate", "1000", "--duration", "3"],
        check=True, capture_output=True, cwd=ROOT,
    )  # fmt: skip
    result = json.loads(done.stdout)
    return result["received"], {"p50 ms": result["p50_ms"], "p99 ms": result["p99_ms"]}


WORKLOADS: dict[str, Callable[[Served, int], Outcome]] = {
    "produce": one_item_produce,
    "produce-batch": batch_produce,
    "cycle": cycle,
    "handoff": handoff,
}

# The in-process cycle, run by the commit's own interpreter and code: it prints items/s and CPU µs/item.
_ENGINE_CYCLE = """
import sys, uvloop
from bench.limits import engine_cycle
print(*uvloop.run(engine_cycle("fsync", int(sys.argv[1]))))
"""


def in_process_cycle(tree: Path, items: int) -> tuple[float, float, dict[str, float]]:
    env = dict(os.environ, PYTHONPATH=str(tree))
    done = subprocess.run(
        [sys.executable, "-c", _ENGINE_CYCLE, str(items)],
        cwd=tree, env=env, check=True, capture_output=True, text=True,
    )  # fmt: skip
    rate, cpu = map(float, done.stdout.split())
    return rate, cpu, {}


def measure(
    tree: Path, workload: Callable[[Served, int], Outcome] | None, items: int, args: argparse.Namespace
) -> tuple[float, float, dict[str, float]]:
    if workload is None:
        return in_process_cycle(tree, items)
    server = Served(tree, args.data_root, args.backend, args.nodes)
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
    parser.add_argument("--only", nargs="+", choices=[*WORKLOADS, "engine"], default=["produce", "cycle"])
    parser.add_argument(
        "--data-root",
        help="where the servers' data directories go (default: the system's temporary directory); a tmpfs "
        "such as /dev/shm makes fsync nearly free, which leaves the server's own share of a latency",
    )
    parser.add_argument("--backend", choices=["rocksdb", "postgres"], default="rocksdb")
    parser.add_argument(
        "--nodes", type=int, default=1, help="with --backend postgres: nodes on the one database"
    )
    args = parser.parse_args(argv)
    workloads = {name: WORKLOADS.get(name) for name in args.only}  # None: the in-process engine
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
                    rate, cpu, figures = measure(trees[label], workload, args.items, args)
                    results.setdefault((name, label), []).append((rate, cpu, figures))
                    extra = "".join(f" {key} {value:7.2f}" for key, value in figures.items())
                    print(
                        f"round {round_ + 1} {name:13} {label:6} {rate:10,.0f}/s {cpu:7.2f} µs CPU/op{extra}",
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
