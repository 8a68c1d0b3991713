"""Where a Querator server's CPU goes under one workload, by thread and by library, sampled with `perf`.

py-spy names the Python function on top of the stack, and charges it with whatever C code and system call
runs under it: under W1 it put 29 % of the event loop in `Connection._flush` and 39 % in "the event loop",
which read as "the server is bound by its sockets". `perf record -e cpu-clock` samples the CPU itself, so
each sample lands in the library that was running: the interpreter (libpython), RocksDB (rocksdict), the
kernel, libc, uvloop. That is the split this prints, for the event-loop thread and for the whole process.

    .venv/bin/python -m bench.cpu_split [--workload produce|produce-batch|cycle]
        [--backend rocksdb|memory] [--seconds 5]

It needs `perf` (Debian: linux-perf) with permission to sample the server; everything else is the
benchmarks' own (a server from bench/servers.py, redis-benchmark or bench.loadgen as the load).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.servers import QueratorServer, call  # noqa: E402

# What each workload sends, for longer than the sampling lasts (it is stopped once the samples are in).
_LOADS = {
    "produce": ["redis-benchmark", "-c", "50", "-n", "100000000", "-q", "QPRODUCE", "q", "ITEMS", "v"],
    "produce-batch": [
        "redis-benchmark", "-c", "50", "-n", "100000000", "-q", "QPRODUCE", "q", "ITEMS", *["v"] * 100,
    ],
    "cycle": [
        sys.executable, "-m", "bench.loadgen", "--port", "{port}", "--target", "querator", "cycle",
        "--producers", "8", "--consumers", "8", "--count", "100", "--items", "100000000",
        "--time-limit", "600",
    ],
}  # fmt: skip

# Shared objects grouped under the names a reader knows them by; anything else is "other".
_LIBRARIES = (
    ("libpython", "Python interpreter"),
    ("rocksdict", "RocksDB (rocksdict)"),
    ("[kernel", "kernel"),
    ("libc.so", "libc"),
    ("loop.cpython", "uvloop"),
)

# A `perf report --sort pid,dso` row, "  45.72%    15307:python   libpython3.11.so.1.0"; pid is the thread.
_ROW = re.compile(r"^\s*([\d.]+)%\s+(\d+):(\S+)\s+(\S+)\s*$")


def library(dso: str) -> str:
    return next((name for prefix, name in _LIBRARIES if dso.startswith(prefix)), "other")


def thread_role(pid: int, tid: int, comm: str) -> str:
    if tid == pid:
        return "event loop"
    if comm.startswith("rocksdb"):
        return "RocksDB background"
    return "other threads (fsync)"


def sample(pid: int, seconds: float, out: Path) -> list[tuple[float, str, str]]:
    """(share %, thread role, library) rows of a `perf record` of `pid` for `seconds`."""
    subprocess.run(
        ["perf", "record", "-q", "-e", "cpu-clock", "-F", "999", "-p", str(pid), "-o", str(out),
         "--", "sleep", str(seconds)],
        check=True, capture_output=True,
    )  # fmt: skip
    report = subprocess.run(
        ["perf", "report", "-i", str(out), "--stdio", "--sort", "pid,dso"],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    rows = []
    for line in report.splitlines():
        match = _ROW.match(line)
        if match:
            share, tid, comm, dso = match.groups()
            rows.append((float(share), thread_role(pid, int(tid), comm), library(dso)))
    return rows


def split(rows: list[tuple[float, str, str]]) -> dict[str, dict[str, float]]:
    """Shares (% of all samples) by thread role, by library within the event loop, by library overall."""
    threads: defaultdict[str, float] = defaultdict(float)
    loop: defaultdict[str, float] = defaultdict(float)
    overall: defaultdict[str, float] = defaultdict(float)
    for share, role, lib in rows:
        threads[role] += share
        overall[lib] += share
        if role == "event loop":
            loop[lib] += share
    return {"threads": dict(threads), "event loop": dict(loop), "process": dict(overall)}


def measure(workload: str, backend: str, seconds: float) -> dict[str, dict[str, float]]:
    with QueratorServer(backend=backend).start() as server, tempfile.TemporaryDirectory() as tmp:
        assert server.proc is not None
        call(server.port, "QCREATE", "q")
        argv = [arg.format(port=server.port) for arg in _LOADS[workload]]
        if argv[0] == "redis-benchmark":
            argv[1:1] = ["-p", str(server.port)]
        load = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(1.5)  # past the connections' set-up and the first memtable's growth
            if load.poll() is not None:
                raise RuntimeError(f"the load ended early: {' '.join(argv)}")
            return split(sample(server.proc.pid, seconds, Path(tmp) / "perf.data"))
        finally:
            load.terminate()
            load.wait(timeout=30)


def table(result: dict[str, dict[str, float]]) -> str:
    lines = ["| part | share of the process's samples |", "| --- | --- |"]
    for section, shares in result.items():
        for name, share in sorted(shares.items(), key=lambda pair: -pair[1]):
            lines.append(f"| {section}: {name} | {share:.1f} % |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cpu_split", description=__doc__.split("\n")[0])
    parser.add_argument("--workload", choices=list(_LOADS), default="cycle")
    parser.add_argument("--backend", choices=["rocksdb", "memory"], default="rocksdb")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--json", type=Path, help="also write the shares here")
    args = parser.parse_args(argv)
    result = measure(args.workload, args.backend, args.seconds)
    print(f"{args.workload} on {args.backend}, {args.seconds:g} s of samples\n")
    print(table(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
