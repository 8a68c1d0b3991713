"""Drive `redis-benchmark` against a port and read requests/s from its `--csv` output.

    redis-benchmark -h 127.0.0.1 -p P -c C -n N [-P pipeline] -q --csv <command...>
    redis-benchmark -h 127.0.0.1 -p P -c C -n N [-P pipeline] -q --csv -t ping_mbulk
    redis-benchmark ... -r K <command with __rand_int__>   (each __rand_int__: a random number below K)

The CSV has a header row (`"test","rps","avg_latency_ms",...`) and one row per test. redis-benchmark
stops at the first error reply (`Error from server: ...` on stderr, exit status 1), so an error aborts
the run and is raised as `BenchmarkError` with the server's message.
"""

from __future__ import annotations

import csv
import shutil
import subprocess
import time
from dataclasses import dataclass, field

from bench.servers import HOST


class BenchmarkError(RuntimeError):
    """redis-benchmark failed, timed out or printed no result."""


@dataclass
class BenchmarkResult:
    rps: float  # requests/s of the first (usually only) test
    rows: dict[str, dict[str, float]]  # test name -> rps, avg_latency_ms, p50_latency_ms, ...
    elapsed: float  # wall seconds of the whole redis-benchmark process
    argv: list[str]
    stderr: str = ""
    warnings: list[str] = field(default_factory=list)


def build_argv(
    port: int,
    command: tuple[str, ...] | list[str] = (),
    *,
    clients: int = 50,
    requests: int = 100_000,
    pipeline: int = 1,
    tests: str | None = None,
    keyspace: int | None = None,
) -> list[str]:
    if bool(command) == bool(tests):
        raise ValueError("give either a command or tests (-t), not both or neither")
    binary = shutil.which("redis-benchmark") or "redis-benchmark"
    argv = [binary, "-h", HOST, "-p", str(port), "-c", str(clients), "-n", str(requests)]
    if pipeline > 1:
        argv += ["-P", str(pipeline)]
    if keyspace is not None:
        argv += ["-r", str(keyspace)]
    argv += ["-q", "--csv"]
    if tests:
        argv += ["-t", tests]
    else:
        argv += [str(arg) for arg in command]
    return argv


def parse_csv(text: str) -> dict[str, dict[str, float]]:
    rows: dict[str, dict[str, float]] = {}
    header: list[str] | None = None
    for row in csv.reader(line for line in text.splitlines() if line.strip()):
        if not row:
            continue
        if row[0] == "test":
            header = row
            continue
        names = header or ["test", "rps"]
        values: dict[str, float] = {}
        for name, value in zip(names[1:], row[1:], strict=False):
            try:
                values[name] = float(value)
            except ValueError:
                continue
        if "rps" in values:
            rows[row[0]] = values
    return rows


def run(
    port: int,
    *command: str,
    clients: int = 50,
    requests: int = 100_000,
    pipeline: int = 1,
    tests: str | None = None,
    timeout: float = 120.0,
    keyspace: int | None = None,
) -> BenchmarkResult:
    """Run redis-benchmark once; at most `timeout` seconds (then it is killed and this raises)."""
    argv = build_argv(
        port, command, clients=clients, requests=requests, pipeline=pipeline, tests=tests, keyspace=keyspace
    )
    started = time.perf_counter()
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise BenchmarkError(f"redis-benchmark timed out after {timeout}s: {' '.join(argv[1:])}") from exc
    elapsed = time.perf_counter() - started
    rows = parse_csv(proc.stdout)
    stderr = proc.stderr.strip()
    if proc.returncode != 0 or not rows:
        detail = stderr or proc.stdout.strip()
        raise BenchmarkError(
            f"redis-benchmark exit {proc.returncode}: {detail[-500:]}  [{' '.join(argv[1:])[:120]}]"
        )
    warnings = [line for line in stderr.splitlines() if line.strip()]
    first = next(iter(rows.values()))
    return BenchmarkResult(
        rps=first["rps"], rows=rows, elapsed=elapsed, argv=argv, stderr=stderr, warnings=warnings
    )
