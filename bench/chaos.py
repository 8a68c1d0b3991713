"""Jepsen-style crash test: SIGKILL the server again and again under load, then check the histories.

Producers and consumers run in their own OS processes (multiprocessing, spawn) over real redis-py
connections (RESP2, socket timeouts, no client-side retries). Each logs every call it makes to its own
history file as JSON lines::

    {"type": "invoke", "op": "produce", "proc": "P0", "call": 7, "mono": ..., "wall": ..., "payloads": [...]}
    {"type": "ok",     "op": "produce", "proc": "P0", "call": 7, "mono": ..., "wall": ..., "ids": [...]}

`type` is `invoke`, then one of `ok` (the reply), `fail` (an error reply: nothing was applied) or
`unknown` (the connection died or timed out mid-call: it may or may not have been applied). `mono` is
`time.monotonic()` in seconds (one clock for every process on the machine), `wall` is Unix time in
milliseconds, the server's clock for lease deadlines. Lease replies log every item as
`[id, payload, attempts, lease_deadline_ms]`; completes log the ids and the count the server replied.

A controller SIGKILLs the server at random moments 0.5-3 s apart and restarts it on the same port and
data directory, N times, timing each restart to the first successful PING. Then it stops the clients,
waits past the lease timeout and drains the queue with a fresh client (lease + complete until empty,
twice with a pause), logged like any consumer. `check()` is a pure function over the records.

    python -m bench.chaos [--kills N] [--durability fsync|flush|both] [--producers P] [--consumers C]
                          [--quick] [--json PATH] [--workdir DIR] [--keep] [--seed S]

Defaults: 50 kills per mode (8 with --quick), both durability modes, 2 producers, 4 consumers.

Only 127.0.0.1 is used; every loop is bounded in count and time; every process started here is killed in
a `finally`. The exit status is 1 when any must-be-0 count is not 0 (the histories are then kept).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

HOST = "127.0.0.1"
QUEUE = "chaos"
LEASE_TIMEOUT_MS = 2000
PARTITIONS = 4
SOCKET_TIMEOUT = 3.0  # seconds; longer than BLOCK 200 plus a slow fsync under load
CONNECT_TIMEOUT = 1.0
LEASE_BLOCK_MS = 200
CLOCK_SLACK_MS = 50.0
KILL_GAP = (0.5, 3.0)  # seconds between "serving again" and the next SIGKILL
REQUEUE_MARGIN_S = 1.2  # an expired lease is back at the tail within 1 s (SPEC section 4)
RESTART_TIMEOUT_S = 60.0
MAX_CALLS_PER_WORKER = 5_000_000
EXAMPLES = 5  # history excerpts kept per violation kind

# Consumer behaviour, per lease reply.
P_ABANDON = 0.01  # forget every item of the reply: the leases expire and the items come back
P_LATE_COMPLETE = 0.003  # complete only after the lease deadline has passed (the ids must be stale by then)
P_ITEM_SKIPPED = 0.01  # otherwise each item is completed with probability 1 - this


# --------------------------------------------------------------------------------------------------------
# History files


class History:
    """One process's history file: JSON lines, flushed line by line."""

    def __init__(self, path: Path, proc: str) -> None:
        self.proc = proc
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._call = 0

    def next_call(self) -> int:
        self._call += 1
        return self._call

    def write(self, type_: str, op: str, call: int, **data: Any) -> None:
        record = {
            "type": type_,
            "op": op,
            "proc": self.proc,
            "call": call,
            "mono": time.monotonic(),
            "wall": time.time() * 1000.0,
            **data,
        }
        self._file.write(json.dumps(record, separators=(",", ":")) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def load_histories(paths: Iterable[Path]) -> list[dict[str, Any]]:
    """Every record of every file; a torn last line (a process killed mid-write) is skipped."""
    records: list[dict[str, Any]] = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for line in f:
                with contextlib.suppress(json.JSONDecodeError):
                    records.append(json.loads(line))
    return records


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="backslashreplace")
    return str(value)


class Client:
    """A redis-py connection that logs each call; reconnects (outside any call) after an error."""

    def __init__(self, port: int, history: History) -> None:
        self.port = port
        self.history = history
        self._redis: Any = None

    def connected(self) -> bool:
        """Connect if needed; False while the server is down (no call is logged for that)."""
        if self._redis is not None:
            return True
        try:
            self._redis = redis.Redis(
                host=HOST,
                port=self.port,
                protocol=2,
                socket_timeout=SOCKET_TIMEOUT,
                socket_connect_timeout=CONNECT_TIMEOUT,
                retry=Retry(NoBackoff(), 0),  # a retried QPRODUCE would hide an unknown outcome
                single_connection_client=True,  # connects here, so a refused connect is not a call
            )
        except (redis.RedisError, OSError):
            self._redis = None
            return False
        return True

    def drop(self) -> None:
        if self._redis is not None:
            with contextlib.suppress(Exception):
                self._redis.close()
        self._redis = None

    def call(self, op: str, args: list[Any], **invoke_data: Any) -> tuple[str, Any]:
        """Run one command, logging invoke then ok / fail / unknown. Returns (type, reply or error)."""
        call = self.history.next_call()
        self.history.write("invoke", op, call, **invoke_data)
        try:
            reply = self._redis.execute_command(*args)
        except redis.ResponseError as e:  # an error reply: nothing was applied
            self.history.write("fail", op, call, error=str(e))
            return "fail", e
        except (redis.RedisError, OSError) as e:  # connection error, timeout, LOADING...: outcome unknown
            self.history.write("unknown", op, call, error=f"{type(e).__name__}: {e}")
            self.drop()
            return "unknown", e
        if op == "produce":
            self.history.write("ok", op, call, ids=[_text(i) for i in reply])
        elif op == "lease":
            items = [[_text(it[0]), _text(it[1]), int(it[2]), int(it[3])] for it in reply or []]
            self.history.write("ok", op, call, items=items)
            return "ok", items
        elif op == "complete":
            self.history.write("ok", op, call, n=int(reply))
        else:
            self.history.write("ok", op, call, reply=_text(reply))
        return "ok", reply


# --------------------------------------------------------------------------------------------------------
# Workers (top-level so that multiprocessing's spawn can import them)


def _worker_setup() -> None:
    # The controller decides when workers stop; a Ctrl-C in the terminal must not kill them mid-write.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def producer_main(port: int, proc: str, path: str, stop: Any, deadline: float, seed: int) -> None:
    _worker_setup()
    rng = random.Random(seed)
    history = History(Path(path), proc)
    client = Client(port, history)
    n = 0
    try:
        for _ in range(MAX_CALLS_PER_WORKER):
            if stop.is_set() or time.monotonic() > deadline:
                break
            if not client.connected():
                time.sleep(0.02)
                continue
            k = rng.randint(1, 10)
            payloads = [f"{proc}-{n + i}" for i in range(k)]
            n += k  # payloads are never reused, whatever the outcome
            client.call("produce", ["QPRODUCE", QUEUE, "ITEMS", *payloads], payloads=payloads)
            time.sleep(rng.uniform(0, 0.004))
        history.write("note", "exit", 0)
    except Exception:
        history.write("error", "worker", 0, traceback=traceback.format_exc())
        raise
    finally:
        client.drop()
        history.close()


def consumer_main(port: int, proc: str, path: str, stop: Any, deadline: float, seed: int) -> None:
    _worker_setup()
    rng = random.Random(seed)
    history = History(Path(path), proc)
    client = Client(port, history)
    try:
        for _ in range(MAX_CALLS_PER_WORKER):
            if stop.is_set() or time.monotonic() > deadline:
                break
            if not client.connected():
                time.sleep(0.02)
                continue
            count = rng.randint(1, 10)
            kind, items = client.call(
                "lease",
                ["QLEASE", QUEUE, "COUNT", count, "BLOCK", LEASE_BLOCK_MS],
                count=count,
                block=LEASE_BLOCK_MS,
            )
            if kind != "ok" or not items:
                continue
            roll = rng.random()
            if roll < P_ABANDON:
                history.write("note", "abandon", 0, ids=[it[0] for it in items])
                continue
            if roll < P_ABANDON + P_LATE_COMPLETE:
                # Sleep past the deadline (bounded, and cut short by stop), then complete: 0 must count.
                wake = time.monotonic() + LEASE_TIMEOUT_MS / 1000 + 0.3
                while time.monotonic() < wake and not stop.is_set():
                    time.sleep(0.05)
                if stop.is_set():
                    history.write("note", "abandon", 0, ids=[it[0] for it in items])
                    break
                chosen = items
            else:
                chosen = [it for it in items if rng.random() >= P_ITEM_SKIPPED]
                if len(chosen) < len(items):
                    skipped = [it[0] for it in items if it not in chosen]
                    history.write("note", "abandon", 0, ids=skipped)
            if not chosen:
                continue
            if not client.connected():
                continue  # the connection died after the lease: these leases will expire
            ids = [it[0] for it in chosen]
            client.call("complete", ["QCOMPLETE", QUEUE, *ids], ids=ids, payloads=[it[1] for it in chosen])
        history.write("note", "exit", 0)
    except Exception:
        history.write("error", "worker", 0, traceback=traceback.format_exc())
        raise
    finally:
        client.drop()
        history.close()


# --------------------------------------------------------------------------------------------------------
# The checker: a pure function over history records


@dataclass
class Delivery:
    """One item of one successful lease reply."""

    payload: str
    id: str
    attempts: int
    deadline: float  # server's lease deadline, Unix ms
    proc: str
    call: int
    invoke_mono: float
    ok_mono: float
    ok_wall: float
    completed: str = ""  # "acked" | "partial" | "unknown" | "failed" | "" (no complete sent)
    complete_call: int = 0
    complete_invoke_mono: float = 0.0
    complete_ok_mono: float = 0.0

    def brief(self) -> dict[str, Any]:
        return {
            "proc": self.proc,
            "lease_call": self.call,
            "id": self.id,
            "attempts": self.attempts,
            "lease_ok_wall_ms": round(self.ok_wall, 1),
            "lease_deadline_ms": self.deadline,
            "completed": self.completed or "no",
            "complete_call": self.complete_call or None,
        }


@dataclass
class CheckResult:
    # The contract: each must be 0.
    lost: int = 0  # acknowledged produce, never delivered, not in the drain
    unexpected: int = 0  # delivered payload no producer ever sent
    redelivered_after_complete: int = 0  # delivered again after an acknowledged complete of it
    concurrent_leases: int = 0  # leased while an earlier, unexpired, uncompleted lease of it was still valid
    # Further consequences of the same contract (SPEC sections 1 and 4); also must be 0.
    failed_produce_applied: int = 0  # a payload of an error-replied QPRODUCE was delivered
    stale_complete_accepted: int = 0  # a complete counted an id after its item had been leased again
    attempts_not_increasing: int = 0  # a later delivery had attempts <= an earlier one's
    unexpired_lease_not_completed: int = 0  # QCOMPLETE, answered before every deadline, counted fewer ids
    # Work done and informational figures.
    produce_calls: dict[str, int] = field(default_factory=dict)  # ok / unknown / fail -> calls
    produce_items: dict[str, int] = field(default_factory=dict)  # ok / unknown / fail -> items
    lease_calls: dict[str, int] = field(default_factory=dict)
    complete_calls: dict[str, int] = field(default_factory=dict)
    acknowledged: int = 0  # distinct payloads of ok produces
    deliveries: int = 0
    delivered_payloads: int = 0
    duplicated_payloads: int = 0  # delivered more than once
    duplicates_pct: float = 0.0
    unknown_produces_delivered: int = 0
    completed_acked: int = 0
    # Per lost payload, its produce's (invoke, ok) times (`mono`): bench.power_loss dates the losses.
    lost_produce_mono: list[tuple[float, float]] = field(default_factory=list)
    examples: dict[str, list[Any]] = field(default_factory=dict)

    MUST_BE_ZERO = (
        "lost",
        "unexpected",
        "redelivered_after_complete",
        "concurrent_leases",
        "failed_produce_applied",
        "stale_complete_accepted",
        "attempts_not_increasing",
        "unexpired_lease_not_completed",
    )

    def violations(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.MUST_BE_ZERO if getattr(self, name)}

    @property
    def ok(self) -> bool:
        return not self.violations()


def _pair_calls(
    records: Iterable[dict[str, Any]],
) -> Iterator[tuple[dict[str, Any], dict[str, Any] | None]]:
    """(invoke, outcome) per call; an invoke without an outcome (the process died) has None."""
    invokes: dict[tuple[str, int], dict[str, Any]] = {}
    outcomes: dict[tuple[str, int], dict[str, Any]] = {}
    for r in records:
        key = (r["proc"], r["call"])
        if r["type"] == "invoke":
            invokes[key] = r
        elif r["type"] in ("ok", "fail", "unknown"):
            outcomes[key] = r
    for key, invoke in invokes.items():
        yield invoke, outcomes.get(key)


def _example(result: CheckResult, kind: str, evidence: Any) -> None:
    bucket = result.examples.setdefault(kind, [])
    if len(bucket) < EXAMPLES:
        bucket.append(evidence)


def check(records: Iterable[dict[str, Any]], slack_ms: float = CLOCK_SLACK_MS) -> CheckResult:
    """Check the histories of one run (every process's records, in any order)."""
    result = CheckResult()
    produce_calls: dict[str, int] = defaultdict(int)
    produce_items: dict[str, int] = defaultdict(int)
    lease_calls: dict[str, int] = defaultdict(int)
    complete_calls: dict[str, int] = defaultdict(int)
    invoked: set[str] = set()
    acked: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
    failed: set[str] = set()
    unknown: set[str] = set()
    deliveries: list[Delivery] = []
    by_proc_id: dict[tuple[str, str], list[Delivery]] = defaultdict(list)
    completes: list[tuple[dict[str, Any], dict[str, Any] | None]] = []

    for invoke, outcome in _pair_calls(records):
        kind = outcome["type"] if outcome else "unknown"
        op = invoke["op"]
        if op == "produce":
            payloads = invoke["payloads"]
            produce_calls[kind] += 1
            produce_items[kind] += len(payloads)
            invoked.update(payloads)
            if kind == "ok":
                assert outcome is not None
                for p in payloads:
                    acked[p] = (invoke, outcome)
            elif kind == "fail":
                failed.update(payloads)
            else:
                unknown.update(payloads)
        elif op == "lease":
            lease_calls[kind] += 1
            if kind == "ok":
                assert outcome is not None
                for item_id, payload, attempts, deadline in outcome["items"]:
                    d = Delivery(
                        payload=payload,
                        id=item_id,
                        attempts=attempts,
                        deadline=deadline,
                        proc=invoke["proc"],
                        call=invoke["call"],
                        invoke_mono=invoke["mono"],
                        ok_mono=outcome["mono"],
                        ok_wall=outcome["wall"],
                    )
                    deliveries.append(d)
                    by_proc_id[(d.proc, d.id)].append(d)
        elif op == "complete":
            complete_calls[kind] += 1
            completes.append((invoke, outcome))

    # Attach each complete to the delivery it completes: the same process's latest lease of that id.
    rank = {"acked": 4, "partial": 3, "unknown": 2, "failed": 1, "": 0}
    for invoke, outcome in completes:
        kind = outcome["type"] if outcome else "unknown"
        ids = invoke["ids"]
        if kind == "ok":
            assert outcome is not None
            status = "acked" if outcome["n"] >= len(set(ids)) else "partial"
        else:
            status = {"fail": "failed"}.get(kind, "unknown")
        matched: list[Delivery] = []
        for item_id in ids:
            leased = by_proc_id.get((invoke["proc"], item_id), [])
            earlier = [d for d in leased if d.ok_mono <= invoke["mono"]]
            if not earlier:
                continue
            d = max(earlier, key=lambda d: d.ok_mono)
            matched.append(d)
            if rank[status] > rank[d.completed]:
                d.completed = status
                d.complete_call = invoke["call"]
                d.complete_invoke_mono = invoke["mono"]
                d.complete_ok_mono = outcome["mono"] if outcome else 0.0
        if (
            status == "partial"
            and outcome is not None
            and matched
            and outcome["wall"] < min(d.deadline for d in matched) - slack_ms
        ):
            result.unexpired_lease_not_completed += 1
            _example(
                result,
                "unexpired_lease_not_completed",
                {"complete": [invoke, outcome], "leases": [d.brief() for d in matched]},
            )

    by_payload: dict[str, list[Delivery]] = defaultdict(list)
    for d in deliveries:
        by_payload[d.payload].append(d)

    for payload, ds in by_payload.items():
        if payload not in invoked:
            result.unexpected += 1
            _example(result, "unexpected", {"payload": payload, "deliveries": [d.brief() for d in ds]})
        elif payload in failed and payload not in acked and payload not in unknown:
            result.failed_produce_applied += 1
            _example(
                result, "failed_produce_applied", {"payload": payload, "deliveries": [d.brief() for d in ds]}
            )
        if payload in unknown and payload not in acked:
            result.unknown_produces_delivered += 1
        if len(ds) < 2:
            continue
        ds.sort(key=lambda d: d.ok_mono)
        for j in range(1, len(ds)):
            later = ds[j]
            after_complete = concurrent = stale = False
            for first in ds[:j]:
                overlaps = later.ok_wall < first.deadline - slack_ms
                if first.completed == "acked":
                    # Nothing may deliver this payload again once a complete of it was acknowledged.
                    if later.invoke_mono > first.complete_ok_mono:
                        after_complete = True
                    elif overlaps:
                        concurrent = True
                    else:
                        stale = True  # re-leased after expiry, then the old id was still completed
                elif overlaps:
                    concurrent = True
            evidence = {"payload": payload, "deliveries": [d.brief() for d in ds[: j + 1]]}
            if after_complete:
                result.redelivered_after_complete += 1
                _example(result, "redelivered_after_complete", evidence)
            elif concurrent:
                result.concurrent_leases += 1
                _example(result, "concurrent_leases", evidence)
            elif stale:
                result.stale_complete_accepted += 1
                _example(result, "stale_complete_accepted", evidence)
            elif later.attempts <= ds[j - 1].attempts:
                result.attempts_not_increasing += 1
                _example(result, "attempts_not_increasing", evidence)

    for payload in acked.keys() - by_payload.keys():
        result.lost += 1
        invoke, outcome = acked[payload]
        result.lost_produce_mono.append((invoke["mono"], outcome["mono"]))
        _example(result, "lost", {"payload": payload, "produce": [invoke, outcome]})

    result.produce_calls = dict(produce_calls)
    result.produce_items = dict(produce_items)
    result.lease_calls = dict(lease_calls)
    result.complete_calls = dict(complete_calls)
    result.acknowledged = len(acked)
    result.deliveries = len(deliveries)
    result.delivered_payloads = len(by_payload)
    result.duplicated_payloads = sum(1 for ds in by_payload.values() if len(ds) > 1)
    result.duplicates_pct = (
        100.0 * result.duplicated_payloads / result.delivered_payloads if result.delivered_payloads else 0.0
    )
    result.completed_acked = sum(1 for d in deliveries if d.completed == "acked")
    return result


# --------------------------------------------------------------------------------------------------------
# The server under test


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def ping(port: int, timeout: float = 0.5) -> bool:
    """One PING on a fresh raw connection (no client library state involved)."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as s:
            s.sendall(b"*1\r\n$4\r\nPING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class ChaosServer:
    """`python -m querator serve` on a fixed port and data dir; killed and restarted in place."""

    def __init__(self, data_dir: Path, log_path: Path, durability: str) -> None:
        self.data_dir = data_dir
        self.log_path = log_path
        self.durability = durability
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> float:
        """Start the process and wait for the first successful PING; returns the seconds that took."""
        cmd = [
            sys.executable,
            "-m",
            "querator",
            "serve",
            "--bind",
            HOST,
            "--port",
            str(self.port),
            "--data",
            str(self.data_dir),
            "--durability",
            self.durability,
            "--http-port",
            "0",
        ]
        with open(self.log_path, "ab") as log:
            log.write(f"--- start {time.strftime('%H:%M:%S')} ---\n".encode())
            log.flush()
            offset = log.tell()
            t0 = time.monotonic()
            self.proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = t0 + RESTART_TIMEOUT_S
        ready = f":{self.port} ".encode()
        while time.monotonic() < deadline:
            # PING alone could reach another program that took the port while ours was down: the answer
            # counts once our own process has logged that it listens on the port.
            if ping(self.port) and self.proc.poll() is None and self._logged_ready(offset, ready):
                return time.monotonic() - t0
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}; see {self.log_path}")
            time.sleep(0.01)
        raise RuntimeError(f"server not serving after {RESTART_TIMEOUT_S} s; see {self.log_path}")

    def _logged_ready(self, offset: int, port_text: bytes) -> bool:
        with open(self.log_path, "rb") as log:
            log.seek(offset)
            return any(
                b"ready to accept connections" in line and port_text in line + b" "
                for line in log.read().splitlines()
            )

    def exited(self) -> int | None:
        """The exit code if the process ended without us killing it, else None."""
        return None if self.proc is None else self.proc.poll()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 20 s."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_problems(self) -> list[str]:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return []
        words = (" ERROR ", " CRITICAL ", "Traceback")
        return [line for line in text.splitlines() if any(w in line for w in words)]


# --------------------------------------------------------------------------------------------------------
# The fault


class Fault:
    """How the server is crashed, and where its data lives. This one is a plain SIGKILL.

    `bench.power_loss` swaps in one that cuts the power of the filesystem under the data directory too.
    """

    name = "kill"

    def data_dir(self, workdir: Path) -> Path:
        """Called once before the first start; may mount something there."""
        return workdir / "data"

    def crash(self, server: ChaosServer) -> None:
        """End the server abruptly; `run` starts it again right after."""
        server.kill()

    def restarted(self, server: ChaosServer) -> None:
        """Called once the server serves again after `crash`."""

    def close(self) -> None:
        """Called in `run`'s finally, after the server was stopped: undo what `data_dir` set up."""


# --------------------------------------------------------------------------------------------------------
# One run


@dataclass
class RunConfig:
    durability: str = "fsync"
    kills: int = 50
    producers: int = 2
    consumers: int = 4
    seed: int = 0
    kill_gap: tuple[float, float] = KILL_GAP


@dataclass
class RunResult:
    durability: str
    kills: int
    check: CheckResult
    restart_s: list[float]
    first_start_s: float
    elapsed_s: float
    drain: dict[str, int]
    final_stats: dict[str, Any]
    server_log_problems: list[str]
    worker_errors: list[str]
    disturbances: list[str]  # things that happened to the run, not by its design (see run())
    workdir: str

    @property
    def ok(self) -> bool:
        return self.check.ok and not self.worker_errors

    def restart_p50(self) -> float:
        return statistics.median(self.restart_s) if self.restart_s else 0.0

    def restart_max(self) -> float:
        return max(self.restart_s, default=0.0)

    def summary(self) -> str:
        c = self.check
        return (
            f"{self.durability}: {c.lost} of {c.acknowledged:,} acknowledged items lost "
            f"over {self.kills} kills; "
            f"unexpected {c.unexpected}; redelivered after complete {c.redelivered_after_complete}; "
            f"concurrent leases {c.concurrent_leases}; duplicates {c.duplicates_pct:.2f} %; "
            f"restart to serving p50 {self.restart_p50():.2f} s max {self.restart_max():.2f} s"
        )

    def details(self) -> str:
        c = self.check
        stats = self.final_stats
        pc, pi = c.produce_calls, c.produce_items
        return (
            f"  produces ok {pc.get('ok', 0):,} ({pi.get('ok', 0):,} items), "
            f"unknown {pc.get('unknown', 0):,} "
            f"({pi.get('unknown', 0):,} items, {c.unknown_produces_delivered:,} of them delivered), "
            f"failed {pc.get('fail', 0):,}; leases ok {c.lease_calls.get('ok', 0):,} "
            f"unknown {c.lease_calls.get('unknown', 0):,} failed {c.lease_calls.get('fail', 0):,}; "
            f"completes ok {c.complete_calls.get('ok', 0):,} unknown {c.complete_calls.get('unknown', 0):,} "
            f"failed {c.complete_calls.get('fail', 0):,}\n"
            f"  deliveries {c.deliveries:,} of {c.delivered_payloads:,} payloads "
            f"({c.duplicated_payloads:,} delivered more than once); drained {self.drain.get('items', 0):,}; "
            f"failed produce applied {c.failed_produce_applied}; stale complete accepted "
            f"{c.stale_complete_accepted}; attempts not increasing {c.attempts_not_increasing}; "
            f"unexpired lease not completed {c.unexpired_lease_not_completed}\n"
            f"  server counters: produced {_count(stats.get('produced'))} "
            f"(histories: {self.items_applied():,} acknowledged or delivered), "
            f"completed {_count(stats.get('completed'))}, "
            f"lease-expired {_count(stats.get('lease-expired'))}, "
            f"left {_count(stats.get('total'))}{'' if self.counters_match() else ' MISMATCH'}; "
            f"{self.elapsed_s:.0f} s"
        )

    def items_applied(self) -> int:
        """Items the server must have stored: acknowledged ones plus unknown ones that were delivered."""
        return self.check.acknowledged + self.check.unknown_produces_delivered

    def counters_match(self) -> bool:
        """QSTATS `produced` and `completed` (kept across restarts) agree with the histories, none left."""
        stats = self.final_stats
        return stats.get("produced") == stats.get("completed") == self.items_applied() and not stats.get(
            "total"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "durability": self.durability,
            "kills": self.kills,
            "ok": self.ok,
            "summary": self.summary(),
            "violations": self.check.violations(),
            "check": asdict(self.check),
            "restart_to_serving_s": {
                "p50": self.restart_p50(),
                "max": self.restart_max(),
                "all": self.restart_s,
                "first_start": self.first_start_s,
            },
            "elapsed_s": self.elapsed_s,
            "drain": self.drain,
            "final_stats": self.final_stats,
            "counters_match": self.counters_match(),
            "server_log_problems": self.server_log_problems[:50],
            "worker_errors": self.worker_errors,
            "disturbances": self.disturbances,
            "workdir": self.workdir,
        }


def _count(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else str(value)


def _decode(reply: Any) -> Any:
    """A RESP2 reply as plain JSON values; a flat field-value array (QSTATS) becomes a dict."""
    if isinstance(reply, bytes):
        return _text(reply)
    if not isinstance(reply, list):
        return reply
    if len(reply) % 2 == 0 and reply and all(isinstance(k, bytes) for k in reply[::2]):
        return {_text(k): _decode(v) for k, v in zip(reply[::2], reply[1::2], strict=True)}
    return [_decode(x) for x in reply]


def _admin(port: int, *args: Any) -> Any:
    """One command on a fresh connection (setup and final stats; not part of the histories)."""
    client: Any = redis.Redis(host=HOST, port=port, protocol=2, socket_timeout=10)
    try:
        return client.execute_command(*args)
    finally:
        client.close()


def drain(port: int, history: History, max_seconds: float = 300.0) -> dict[str, int]:
    """Lease + complete until the queue is empty (bounded in calls and time)."""
    client = Client(port, history)
    stats = {"items": 0, "calls": 0, "errors": 0}
    deadline = time.monotonic() + max_seconds
    try:
        for _ in range(1_000_000):
            if time.monotonic() > deadline:
                raise RuntimeError("drain did not finish in time")
            if not client.connected():
                stats["errors"] += 1
                if stats["errors"] > 100:
                    raise RuntimeError("drain cannot connect")
                time.sleep(0.1)
                continue
            stats["calls"] += 1
            kind, items = client.call("lease", ["QLEASE", QUEUE, "COUNT", 100], count=100, block=None)
            if kind != "ok":
                stats["errors"] += 1
                if stats["errors"] > 100:
                    raise RuntimeError(f"drain keeps failing: {items}")
                continue
            if not items:
                break
            stats["items"] += len(items)
            ids = [it[0] for it in items]
            client.call("complete", ["QCOMPLETE", QUEUE, *ids], ids=ids, payloads=[it[1] for it in items])
    finally:
        client.drop()
    return stats


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run(config: RunConfig, workdir: Path, verbose: bool = True, fault: Fault | None = None) -> RunResult:
    """One chaos run against a fresh server and data directory under `workdir`; `fault` crashes it."""

    workdir.mkdir(parents=True, exist_ok=True)
    hist_dir = workdir / "histories"
    hist_dir.mkdir(exist_ok=True)
    rng = random.Random(config.seed)
    fault = fault if fault is not None else Fault()
    server = ChaosServer(fault.data_dir(workdir), workdir / "server.log", config.durability)
    ctx = multiprocessing.get_context("spawn")
    stop = ctx.Event()
    workers: list[Any] = []
    restart_s: list[float] = []
    worker_errors: list[str] = []
    # A server that exits although we did not kill it (a crash, or a signal from outside the test) and a
    # worker that dies without logging a traceback are reported, and the run goes on: the histories stay
    # valid (a dead worker's last call has no outcome, i.e. unknown), and a server that exited is one more
    # restart. Both are printed with the summary.
    disturbances: list[str] = []
    reported_dead: set[str] = set()
    t_start = time.monotonic()
    expected = sum(config.kill_gap) / 2 * config.kills + 10 * config.kills + 120
    hard_deadline = t_start + expected

    def ensure_serving(stage: str) -> None:
        code = server.exited()
        if code is not None:
            disturbances.append(f"server exited by itself with code {code} ({stage}); restarted")
            _log(f"  {config.durability}: {disturbances[-1]}")
            server.start()

    def note_dead_workers(stage: str) -> None:
        for w in workers:
            if w.name not in reported_dead and not w.is_alive() and w.exitcode != 0:
                reported_dead.add(w.name)
                disturbances.append(f"worker {w.name} died with exit code {w.exitcode} ({stage})")
                _log(f"  {config.durability}: {disturbances[-1]}")

    try:
        first_start_s = server.start()
        _admin(server.port, "QCREATE", QUEUE, "PARTITIONS", PARTITIONS, "LEASE-TIMEOUT", LEASE_TIMEOUT_MS)
        roles = [(f"P{i}", producer_main) for i in range(config.producers)]
        roles += [(f"C{i}", consumer_main) for i in range(config.consumers)]
        for name, target in roles:
            path = str(hist_dir / f"{name}.jsonl")
            args = (server.port, name, path, stop, hard_deadline, rng.randrange(2**32))
            workers.append(ctx.Process(target=target, args=args, name=name, daemon=True))
        for w in workers:
            w.start()
        time.sleep(1.0)  # let every worker import redis and connect before the first kill
        for k in range(config.kills):
            if time.monotonic() > hard_deadline:
                raise RuntimeError("the run took too long")
            time.sleep(rng.uniform(*config.kill_gap))
            note_dead_workers(f"before kill {k + 1}")
            ensure_serving(f"before kill {k + 1}")
            fault.crash(server)
            took = server.start()
            restart_s.append(took)
            fault.restarted(server)
            if verbose and (k + 1) % 10 == 0:
                _log(f"  {config.durability}: {k + 1}/{config.kills} kills, last restart {took:.2f} s")
        time.sleep(rng.uniform(*config.kill_gap))  # some load after the last restart too
        note_dead_workers("after the last kill")
        stop.set()
        for w in workers:
            w.join(SOCKET_TIMEOUT + LEASE_TIMEOUT_MS / 1000 + 5)
        note_dead_workers("while stopping")
        # Every lease a client still holds ends within lease timeout + 1 s; then the queue holds everything.
        time.sleep(LEASE_TIMEOUT_MS / 1000 + REQUEUE_MARGIN_S)
        drain_history = History(hist_dir / "drain.jsonl", "drain")
        try:
            ensure_serving("before the drain")
            first = drain(server.port, drain_history)
            time.sleep(LEASE_TIMEOUT_MS / 1000 + REQUEUE_MARGIN_S)
            ensure_serving("between the drain passes")
            second = drain(server.port, drain_history)
        finally:
            drain_history.close()
        drained = {
            "items": first["items"] + second["items"],
            "first_pass": first["items"],
            "second_pass": second["items"],
        }
        final_stats = _decode(_admin(server.port, "QSTATS", QUEUE))
        ensure_serving("after the drain")
    finally:
        stop.set()
        for w in workers:
            if w.is_alive():
                w.join(1)
            if w.is_alive():
                w.terminate()
                w.join(2)
            if w.is_alive():
                w.kill()
                w.join(2)
        try:
            server.stop()
            server.kill()
        finally:
            fault.close()  # e.g. unmount: must happen even when the server would not die
    records = load_histories(sorted(hist_dir.glob("*.jsonl")))
    for r in records:
        if r.get("type") == "error":
            worker_errors.append(f"{r['proc']}: {r.get('traceback', '')}")
    result = check(records)
    return RunResult(
        durability=config.durability,
        kills=config.kills,
        check=result,
        restart_s=restart_s,
        first_start_s=first_start_s,
        elapsed_s=time.monotonic() - t_start,
        drain=drained,
        final_stats=final_stats,
        server_log_problems=server.log_problems(),
        worker_errors=worker_errors,
        disturbances=disturbances,
        workdir=str(workdir),
    )


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The options `bench.chaos` shares with `bench.power_loss` (which adds its own count of faults)."""
    parser.add_argument("--durability", choices=["fsync", "flush", "both"], default="both")
    parser.add_argument("--producers", type=int, default=2)
    parser.add_argument("--consumers", type=int, default=4)
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--workdir", type=Path, default=None, help="data and histories (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the workdir even when every check passes")
    parser.add_argument("--seed", type=int, default=None)


def print_violations(result: RunResult) -> None:
    """Each must-be-0 count that is not, with its history excerpts, and the workers' tracebacks."""
    for name, count in result.check.violations().items():
        print(f"  VIOLATION {name}: {count}", flush=True)
        for ex in result.check.examples.get(name, []):
            print("    " + json.dumps(ex)[:2000], flush=True)
    for err in result.worker_errors:
        print(f"  WORKER ERROR {err[:2000]}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__.split("\n")[0])
    parser.add_argument("--kills", type=int, default=None, help="SIGKILLs per durability mode (default 50)")
    parser.add_argument("--quick", action="store_true", help="8 kills per mode")
    add_run_arguments(parser)
    args = parser.parse_args(argv)
    kills = args.kills if args.kills is not None else (8 if args.quick else 50)
    seed = args.seed if args.seed is not None else random.randrange(2**31)
    modes = ["fsync", "flush"] if args.durability == "both" else [args.durability]
    own_workdir = args.workdir is None
    root = Path(tempfile.mkdtemp(prefix="querator-chaos-")) if own_workdir else args.workdir
    _log(
        f"chaos: {kills} kills per mode, {args.producers} producers, {args.consumers} consumers, "
        f"seed {seed}, workdir {root}"
    )
    results: list[RunResult] = []
    failed = False
    try:
        for i, mode in enumerate(modes):
            config = RunConfig(mode, kills, args.producers, args.consumers, seed + i)
            result = run(config, root / mode)
            results.append(result)
            print(result.summary(), flush=True)
            print(result.details(), flush=True)
            if not result.ok:
                failed = True
                print_violations(result)
            for line in result.disturbances:
                print(f"  DISTURBANCE {line}", flush=True)
            if result.server_log_problems:
                print(
                    f"  server log: {len(result.server_log_problems)} ERROR/Traceback lines, first: "
                    f"{result.server_log_problems[0][:300]}",
                    flush=True,
                )
    except BaseException:
        failed = True
        raise
    finally:
        ok = not failed and len(results) == len(modes)
        modes_json = {r.durability: r.to_json() for r in results}
        finish(args, "chaos", {"kills": kills, "seed": seed}, ok, modes_json, root, own_workdir)
    return 1 if failed else 0


def finish(
    args: argparse.Namespace,
    prog: str,
    config: dict[str, Any],
    ok: bool,
    modes: dict[str, Any],
    root: Path,
    own_workdir: bool,
) -> None:
    """Write the JSON results (`--json`), then keep the workdir (failure, `--keep`, given) or remove it."""
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "ok": ok,
            "config": {
                **config,
                "producers": args.producers,
                "consumers": args.consumers,
                "lease_timeout_ms": LEASE_TIMEOUT_MS,
                "partitions": PARTITIONS,
                "kill_gap_s": list(KILL_GAP),
                "clock_slack_ms": CLOCK_SLACK_MS,
            },
            "modes": modes,
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    if not ok or args.keep or not own_workdir:
        _log(f"{prog}: histories and server logs kept in {root}")
    else:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
