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
`[id, payload, attempts, lease_deadline_ms]`; completes and retries log the ids and the count the server
replied (retries also whether they were `DEAD` and their `REASON`).

The queue has a dead queue (one partition, so that its order is one list). Consumers hand some items back
with `QRETRY ... REASON` (they come back with a new id, attempts kept) and some with `QRETRY ... DEAD
REASON` (they go to the dead queue). An admin process now and then lists the dead queue (`QITEMS`) and
redrives its first few items (`QREDRIVE ... LIMIT n`, n at most what it listed): nothing else takes items
out of the dead queue during the run and new ones arrive at its tail, so a redrive moves exactly the
first n it listed, or (unknown outcome) either those or nothing.

A controller SIGKILLs the server at random moments 0.5-3 s apart and restarts it on the same port and
data directory, N times, timing each restart to the first successful PING. Then it stops the clients,
waits past the lease timeout, snapshots both queues (`QITEMS`, logged as `snapshot` records), drains the
queue with a fresh client (lease + complete until empty, twice with a pause), logged like any consumer,
and clears the dead queue. `check()` is a pure function over the records.

    python -m bench.chaos [--kills N] [--durability fsync|flush|both] [--producers P] [--consumers C]
                          [--backend rocksdb|postgres] [--nodes N]
                          [--quick] [--json PATH] [--workdir DIR] [--keep] [--seed S]

Defaults: 50 kills per mode (8 with --quick), both durability modes, 2 producers, 4 consumers.

`--backend postgres` runs `--nodes` servers (default 3) on one throwaway PostgreSQL database
(bench/pgcluster.py), the workers spread round robin over them, and each kill SIGKILLs a node drawn at
random (the others keep serving); the checker is the same, since SPEC 9 makes the nodes one Querator.

Only 127.0.0.1 is used; every loop is bounded in count and time; every process started here is killed in
a `finally`. The exit status is 1 when any must-be-0 count is not 0 (the histories are then kept).
"""

from __future__ import annotations

import argparse
import bisect
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

from bench.pgcluster import PgCluster

HOST = "127.0.0.1"
QUEUE = "chaos"
DEAD_QUEUE = "chaos-dead"
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
P_ITEM_RETRIED = 0.03  # ... or handed back with QRETRY REASON
P_ITEM_DEAD = 0.02  # ... or sent to the dead queue with QRETRY DEAD REASON
# The admin process: a dead-queue listing and a redrive of at most this many of its first items, this often.
REDRIVE_MAX = 20
REDRIVE_GAP = (0.02, 0.1)  # seconds between two listings
# Every this many kills the controller waits (at most REDRIVE_WAIT_S) until the admin is sending a
# QREDRIVE and kills then, so that some crashes land in one (a redrive takes a few ms: by chance alone,
# hardly any would).
REDRIVE_KILL_EVERY = 3
REDRIVE_WAIT_S = 1.0


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
            self.history.write("fail", op, call, error=str(e), code=error_code(e))
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
        elif op in ("complete", "retry", "redrive", "clear"):
            self.history.write("ok", op, call, n=int(reply))
        elif op == "items":
            listed = [_item_fields(it) for it in reply or []]
            self.history.write("ok", op, call, items=listed)
            return "ok", listed
        else:
            self.history.write("ok", op, call, reply=_text(reply))
        return "ok", reply


def error_code(error: redis.ResponseError) -> str:
    """The code of an error reply. redis-py drops it from the text where it has a class for it: -TRYAGAIN
    becomes TryAgainError, -ERR a plain ResponseError; codes it does not know stay in the text."""
    if isinstance(error, redis.exceptions.TryAgainError):
        return "TRYAGAIN"
    first = str(error).split(" ", 1)[0]
    if type(error) is redis.ResponseError:
        return first if first.isupper() else "ERR"
    return type(error).__name__


# The QITEMS fields the checker reads; the rest (timestamps, labels) would only make the files larger.
ITEM_FIELDS = ("id", "payload", "state", "attempts", "reason", "source-queue", "source-id", "dead-reason")


def _item_fields(item: Any) -> dict[str, Any]:
    """One QITEMS item (a RESP2 flat field-value array) as a dict of `ITEM_FIELDS`."""
    fields = {_text(k): v for k, v in zip(item[::2], item[1::2], strict=True)}
    return {
        name: int(fields[name]) if name == "attempts" else _text(fields.get(name, b""))
        for name in ITEM_FIELDS
    }


# --------------------------------------------------------------------------------------------------------
# Workers (top-level so that multiprocessing's spawn can import them)


@contextlib.contextmanager
def _worker(port: int, proc: str, path: str, seed: int) -> Iterator[tuple[random.Random, History, Client]]:
    """Around every worker's loop: its history file and client; its exit or its traceback logged."""
    # The controller decides when workers stop; a Ctrl-C in the terminal must not kill them mid-write.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    history = History(Path(path), proc)
    client = Client(port, history)
    try:
        yield random.Random(seed), history, client
        history.write("note", "exit", 0)
    except Exception:
        history.write("error", "worker", 0, traceback=traceback.format_exc())
        raise
    finally:
        client.drop()
        history.close()


def producer_main(port: int, proc: str, path: str, stop: Any, deadline: float, seed: int) -> None:
    with _worker(port, proc, path, seed) as (rng, _, client):
        n = 0
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


def consumer_main(port: int, proc: str, path: str, stop: Any, deadline: float, seed: int) -> None:
    with _worker(port, proc, path, seed) as (rng, history, client):
        retry_no = 0
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
                chosen, retried, dead, skipped = [], [], [], []
                for it in items:
                    roll = rng.random()
                    if roll < P_ITEM_SKIPPED:
                        skipped.append(it[0])
                    elif roll < P_ITEM_SKIPPED + P_ITEM_RETRIED:
                        retried.append(it)
                    elif roll < P_ITEM_SKIPPED + P_ITEM_RETRIED + P_ITEM_DEAD:
                        dead.append(it)
                    else:
                        chosen.append(it)
                if skipped:
                    history.write("note", "abandon", 0, ids=skipped)
                # Each hand-back carries a reason unique to its call, so the checker can tell which
                # QRETRY an item in the dead queue (or back in the queue) remembers.
                for hand_back, dead_flag in ((retried, False), (dead, True)):
                    if hand_back and client.connected():
                        retry_no += 1
                        _retry(client, hand_back, dead_flag, f"{proc} retry {retry_no}: handler failed")
            if not chosen:
                continue
            if not client.connected():
                continue  # the connection died after the lease: these leases will expire
            ids = [it[0] for it in chosen]
            client.call("complete", ["QCOMPLETE", QUEUE, *ids], ids=ids, payloads=[it[1] for it in chosen])


def _retry(client: Client, items: list[list[Any]], dead: bool, reason: str) -> None:
    """QRETRY [DEAD] REASON of leased items, logged with their payloads, whether DEAD, and the reason."""
    ids = [it[0] for it in items]
    args = ["QRETRY", QUEUE, *(["DEAD"] if dead else []), "REASON", reason, *ids]
    client.call("retry", args, ids=ids, payloads=[it[1] for it in items], dead=dead, reason=reason)


def admin_main(
    port: int,
    proc: str,
    path: str,
    stop: Any,
    deadline: float,
    seed: int,
    redriving: Any = None,
    redrives_over: Any = None,
) -> None:
    """Again and again list the dead queue and redrive its first 1..REDRIVE_MAX items (at most as many
    as listed, so that the items moved are exactly the first ones listed, whatever arrived since).
    `redriving` (an Event) is set while a QREDRIVE is on its way, for the controller to kill then; once
    `redrives_over` is set (after the last kill) it only lists, so the dead queue fills up for the end."""
    with _worker(port, proc, path, seed) as (rng, _, client):
        for _ in range(MAX_CALLS_PER_WORKER):
            if stop.is_set() or time.monotonic() > deadline:
                break
            time.sleep(rng.uniform(*REDRIVE_GAP))
            if not client.connected():
                continue
            kind, listed = client.call("items", ["QITEMS", DEAD_QUEUE, "LIMIT", 1000], queue=DEAD_QUEUE)
            if kind != "ok" or len(listed) < 2 or not client.connected():
                continue
            if redrives_over is not None and redrives_over.is_set():
                continue
            # At most half of what is there, so that the dead queue still holds items at the end.
            n = rng.randint(1, min(len(listed) // 2, REDRIVE_MAX))
            first = listed[:n]
            if redriving is not None:
                redriving.set()
            try:
                client.call(
                    "redrive",
                    ["QREDRIVE", DEAD_QUEUE, "LIMIT", n],
                    limit=n,
                    ids=[it["id"] for it in first],
                    payloads=[it["payload"] for it in first],
                )
            finally:
                if redriving is not None:
                    redriving.clear()


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
    retried: str = ""  # the same statuses, for a QRETRY of this delivery's id
    retry_dead: bool = False
    retry_reason: str = ""
    retry_invoke_mono: float = 0.0
    incarnation: int = 0  # how many redrives (acknowledged or not) may have moved the payload before it

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
            "retried": (self.retried + (" dead" if self.retry_dead else "")) if self.retried else "no",
            "incarnation": self.incarnation,
        }


@dataclass
class CheckResult:
    # The contract: each must be 0.
    lost: int = 0  # acknowledged produce, never delivered, not in the drain
    unexpected: int = 0  # delivered (or dead-queued) payload no producer ever sent
    redelivered_after_complete: int = 0  # delivered again after an acknowledged complete of it
    concurrent_leases: int = 0  # leased while an earlier, unexpired, uncompleted lease of it was still valid
    # Further consequences of the same contract (SPEC sections 1 and 4); also must be 0.
    failed_produce_applied: int = 0  # a payload of an error-replied QPRODUCE was delivered
    stale_complete_accepted: int = 0  # a complete or retry counted an id after its item was leased again
    attempts_not_increasing: int = 0  # a later delivery (no redrive between) had attempts <= an earlier one's
    unexpired_lease_not_completed: int = (
        0  # QCOMPLETE / QRETRY, answered before every deadline, counted fewer
    )
    # The dead queue, retries and redrives (SPEC sections 4 and 7); also must be 0.
    unfinished: int = 0  # delivered, never completed (not even maybe) and not in the dead queue at the end
    dead_missing: int = 0  # its QRETRY DEAD acknowledged, no redrive since, not in the dead queue at the end
    dead_duplicated: int = 0  # in the final dead queue more than once
    dead_wrong_provenance: int = 0  # reason / source-queue / source-id / dead-reason not from its QRETRY DEAD
    dead_unexplained: int = 0  # in the dead queue although no QRETRY DEAD of it was ever sent
    dead_delivered: int = 0  # delivered again after an acknowledged QRETRY DEAD, without a redrive between
    completed_and_dead: int = 0  # listed in the dead queue after an acknowledged complete of it
    in_both_queues: int = 0  # in the queue and in its dead queue in the final snapshots
    wrong_reason: int = 0  # in the queue with a reason no QRETRY (not DEAD) of it gave, or with provenance
    # Work done and informational figures.
    produce_calls: dict[str, int] = field(default_factory=dict)  # ok / unknown / fail -> calls
    produce_items: dict[str, int] = field(default_factory=dict)  # ok / unknown / fail -> items
    lease_calls: dict[str, int] = field(default_factory=dict)
    complete_calls: dict[str, int] = field(default_factory=dict)
    retry_calls: dict[str, int] = field(default_factory=dict)
    dead_calls: dict[str, int] = field(default_factory=dict)  # QRETRY DEAD
    redrive_calls: dict[str, int] = field(default_factory=dict)
    retried_acked: int = 0  # items of acknowledged QRETRY (not DEAD) calls
    dead_acked: int = 0  # items of acknowledged QRETRY DEAD calls
    redriven_acked: int = 0  # items moved by acknowledged QREDRIVE calls
    redriven_maybe: int = 0  # items an unknown-outcome QREDRIVE may have moved
    redriven_delivered: int = 0  # payloads delivered after a redrive moved them
    dead_expected: int = 0  # payloads that must be in the final dead queue
    dead_exactly_once: int = 0  # ... and were, once, with the provenance of their QRETRY DEAD
    dead_final: int = 0  # items in the final dead queue
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
        "unfinished",
        "dead_missing",
        "dead_duplicated",
        "dead_wrong_provenance",
        "dead_unexplained",
        "dead_delivered",
        "completed_and_dead",
        "in_both_queues",
        "wrong_reason",
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


_RANK = {"acked": 4, "partial": 3, "unknown": 2, "failed": 1, "": 0}


def _lease_end_status(outcome: dict[str, Any] | None, ids: list[str]) -> str:
    """acked (every id counted) / partial (an ok reply counting fewer) / failed / unknown."""
    if outcome is None or outcome["type"] == "unknown":
        return "unknown"
    if outcome["type"] == "fail":
        return "failed"
    return "acked" if outcome["n"] >= len(set(ids)) else "partial"


def check(records: Iterable[dict[str, Any]], slack_ms: float = CLOCK_SLACK_MS) -> CheckResult:
    """Check the histories of one run (every process's records, in any order).

    Deliveries of one payload are split into incarnations at every QREDRIVE that may have moved it (its
    invoke time): an item leased before the redrive was answered before the redrive was sent (its
    QRETRY DEAD, then the listing that showed it, came in between), and one leased after the redrive
    was leased after the redrive ran. Attempts start again, and the lease rules apply, per incarnation;
    completion is final across all of them.
    """
    records = list(records)
    result = CheckResult()
    calls: dict[str, dict[str, int]] = {
        op: defaultdict(int) for op in ("produce", "lease", "complete", "retry", "dead", "redrive")
    }
    produce_items: dict[str, int] = defaultdict(int)
    invoked: set[str] = set()
    acked: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
    failed: set[str] = set()
    unknown: set[str] = set()
    deliveries: list[Delivery] = []
    by_proc_id: dict[tuple[str, str], list[Delivery]] = defaultdict(list)
    lease_ends: list[tuple[dict[str, Any], dict[str, Any] | None]] = []
    redrive_mono: dict[str, list[float]] = defaultdict(list)  # payload -> invoke times of redrives of it
    dead_listings: list[tuple[float, list[dict[str, Any]]]] = []  # (invoke mono, items) of dead-queue QITEMS

    for invoke, outcome in _pair_calls(records):
        kind = outcome["type"] if outcome else "unknown"
        op = invoke["op"]
        if op == "produce":
            payloads = invoke["payloads"]
            calls["produce"][kind] += 1
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
            calls["lease"][kind] += 1
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
        elif op in ("complete", "retry"):
            calls["dead" if invoke.get("dead") else op][kind] += 1
            lease_ends.append((invoke, outcome))
        elif op == "redrive":
            calls["redrive"][kind] += 1
            # Exactly the first n listed moved (n from the reply), or, outcome unknown, all or none.
            if kind == "fail":
                continue
            moved = invoke["payloads"][: outcome["n"]] if outcome and kind == "ok" else invoke["payloads"]
            if kind == "ok":
                result.redriven_acked += len(moved)
            else:
                result.redriven_maybe += len(moved)
            for p in moved:
                redrive_mono[p].append(invoke["mono"])
        elif op == "items" and invoke.get("queue") == DEAD_QUEUE and kind == "ok":
            assert outcome is not None
            dead_listings.append((invoke["mono"], outcome["items"]))

    # Attach each complete / retry to the delivery it ends: the same process's latest lease of that id.
    for invoke, outcome in lease_ends:
        ids = invoke["ids"]
        status = _lease_end_status(outcome, ids)
        is_retry = invoke["op"] == "retry"
        if is_retry and status == "acked":
            if invoke.get("dead"):
                result.dead_acked += len(set(ids))
            else:
                result.retried_acked += len(set(ids))
        matched: list[Delivery] = []
        for item_id in ids:
            leased = by_proc_id.get((invoke["proc"], item_id), [])
            earlier = [d for d in leased if d.ok_mono <= invoke["mono"]]
            if not earlier:
                continue
            d = max(earlier, key=lambda d: d.ok_mono)
            matched.append(d)
            if is_retry:
                if _RANK[status] > _RANK[d.retried]:
                    d.retried = status
                    d.retry_dead = bool(invoke.get("dead"))
                    d.retry_reason = invoke.get("reason", "")
                    d.retry_invoke_mono = invoke["mono"]
            elif _RANK[status] > _RANK[d.completed]:
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
                {"call": [invoke, outcome], "leases": [d.brief() for d in matched]},
            )

    by_payload: dict[str, list[Delivery]] = defaultdict(list)
    for d in deliveries:
        d.incarnation = bisect.bisect_left(sorted(redrive_mono.get(d.payload, ())), d.ok_mono)
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
        if any(d.incarnation for d in ds):
            result.redriven_delivered += 1
        ds.sort(key=lambda d: d.ok_mono)
        for j in range(1, len(ds)):
            _check_later_delivery(result, ds, j, slack_ms)

    for payload in acked.keys() - by_payload.keys():
        result.lost += 1
        invoke, outcome = acked[payload]
        result.lost_produce_mono.append((invoke["mono"], outcome["mono"]))
        _example(result, "lost", {"payload": payload, "produce": [invoke, outcome]})

    _check_dead_queue(result, records, by_payload, redrive_mono, dead_listings, invoked)

    result.produce_calls = dict(calls["produce"])
    result.produce_items = dict(produce_items)
    result.lease_calls = dict(calls["lease"])
    result.complete_calls = dict(calls["complete"])
    result.retry_calls = dict(calls["retry"])
    result.dead_calls = dict(calls["dead"])
    result.redrive_calls = dict(calls["redrive"])
    result.acknowledged = len(acked)
    result.deliveries = len(deliveries)
    result.delivered_payloads = len(by_payload)
    result.duplicated_payloads = sum(1 for ds in by_payload.values() if len(ds) > 1)
    result.duplicates_pct = (
        100.0 * result.duplicated_payloads / result.delivered_payloads if result.delivered_payloads else 0.0
    )
    result.completed_acked = sum(1 for d in deliveries if d.completed == "acked")
    return result


def _check_later_delivery(result: CheckResult, ds: list[Delivery], j: int, slack_ms: float) -> None:
    """Judge delivery `ds[j]` of one payload against the earlier ones (`ds` sorted by reply time)."""
    later = ds[j]
    after_complete = concurrent = stale = after_dead = False
    for first in ds[:j]:
        if first.completed == "acked" and later.invoke_mono > first.complete_ok_mono:
            # Nothing may deliver this payload again once a complete of it was acknowledged, not even a
            # redrive (the item is gone, so no dead queue can hold it).
            after_complete = True
            continue
        if first.incarnation != later.incarnation:
            continue  # a redrive came between: the later one is a new item
        overlaps = later.ok_wall < first.deadline - slack_ms
        if first.completed == "acked":
            if overlaps:
                concurrent = True
            else:
                stale = True  # re-leased after expiry, then the old id was still completed
        elif first.retried == "acked" and later.ok_mono > first.retry_invoke_mono:
            # Back in the queue at once (a blocked lease may take it before the retrier reads the
            # reply); from the dead queue only through a redrive, which would be a new incarnation.
            after_dead = after_dead or first.retry_dead
        elif first.retried == "acked":
            if overlaps:
                concurrent = True
            else:
                stale = True  # re-leased after expiry, then the old id was still retried
        elif first.retried in ("partial", "unknown") and later.ok_mono > first.retry_invoke_mono:
            pass  # the retry may have ended the lease early
        elif overlaps:
            concurrent = True
    prev = [d for d in ds[:j] if d.incarnation == later.incarnation]
    evidence = {"payload": later.payload, "deliveries": [d.brief() for d in ds[: j + 1]]}
    # Only the most telling verdict counts, in this order.
    verdicts = (
        ("redelivered_after_complete", after_complete),
        ("dead_delivered", after_dead),
        ("concurrent_leases", concurrent),
        ("stale_complete_accepted", stale),
        ("attempts_not_increasing", bool(prev) and later.attempts <= prev[-1].attempts),
    )
    kind = next((name for name, hit in verdicts if hit), None)
    if kind is not None:
        setattr(result, kind, getattr(result, kind) + 1)
        _example(result, kind, evidence)


def _check_dead_queue(
    result: CheckResult,
    records: list[dict[str, Any]],
    by_payload: dict[str, list[Delivery]],
    redrive_mono: dict[str, list[float]],
    dead_listings: list[tuple[float, list[dict[str, Any]]]],
    invoked: set[str],
) -> None:
    """Where every payload ended: completed, or in the dead queue exactly once with its provenance.

    The final snapshots (`snapshot` records, written by the drain before it empties anything) are what
    each queue held once every client had stopped and every lease had run out.
    """
    final: dict[str, list[dict[str, Any]]] = {QUEUE: [], DEAD_QUEUE: []}
    for r in records:
        if r["type"] == "snapshot":
            final[r["queue"]] = r["items"]
    # Where an item ended is known only from the end state; a history cut short (or a hand-written one
    # about something else) has no snapshot and is judged on its calls alone.
    ended = any(r["type"] == "snapshot" for r in records)
    in_dead: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for item in final[DEAD_QUEUE]:
        in_dead[item["payload"]].append(item)
    in_queue = {item["payload"]: item for item in final[QUEUE]}
    result.dead_final = len(final[DEAD_QUEUE])
    completed_at = {
        p: min(d.complete_ok_mono for d in ds if d.completed == "acked")
        for p, ds in by_payload.items()
        if any(d.completed == "acked" for d in ds)
    }

    for payload, items in in_dead.items():
        ds = by_payload.get(payload, [])
        dead_retries = [d for d in ds if d.retry_dead and d.retried in ("acked", "partial", "unknown")]
        if payload not in invoked:
            result.unexpected += 1
            _example(result, "unexpected", {"payload": payload, "dead_queue": items})
        if len(items) > 1:
            result.dead_duplicated += 1
            _example(result, "dead_duplicated", {"payload": payload, "dead_queue": items})
        if payload in in_queue:
            result.in_both_queues += 1
            _example(
                result, "in_both_queues", {"payload": payload, "queue": in_queue[payload], "dead": items}
            )
        if not dead_retries:
            result.dead_unexplained += 1
            _example(result, "dead_unexplained", {"payload": payload, "dead_queue": items})
            continue
        # Reasons are unique per call: the item must carry the reason and id of one QRETRY DEAD of it.
        sent = {(d.retry_reason, d.id) for d in dead_retries}
        for item in items:
            got = (item["reason"], item["source-id"])
            if item["dead-reason"] != "retry-dead" or item["source-queue"] != QUEUE or got not in sent:
                result.dead_wrong_provenance += 1
                _example(
                    result,
                    "dead_wrong_provenance",
                    {"payload": payload, "dead_queue": item, "retries": [d.brief() for d in dead_retries]},
                )

    for listed_mono, items in dead_listings:
        for item in items:
            done = completed_at.get(item["payload"])
            if done is not None and listed_mono > done:
                result.completed_and_dead += 1
                _example(result, "completed_and_dead", {"item": item, "completed_mono": done})
    for payload in in_dead.keys() & completed_at.keys():
        result.completed_and_dead += 1
        _example(result, "completed_and_dead", {"payload": payload, "dead_queue": in_dead[payload]})

    for payload, ds in by_payload.items() if ended else ():
        maybe_done = any(d.completed in ("acked", "partial", "unknown") for d in ds)
        if not maybe_done and payload not in in_dead:
            result.unfinished += 1
            _example(result, "unfinished", {"payload": payload, "deliveries": [d.brief() for d in ds]})
        dead_acked = [d for d in ds if d.retry_dead and d.retried == "acked"]
        if dead_acked:
            last = max(d.retry_invoke_mono for d in dead_acked)
            moved_since = any(t > last for t in redrive_mono.get(payload, ()))
            if not moved_since and not any(d.ok_mono > last for d in ds):
                result.dead_expected += 1
                if payload not in in_dead:
                    result.dead_missing += 1
                    _example(
                        result, "dead_missing", {"payload": payload, "deliveries": [d.brief() for d in ds]}
                    )
                elif (
                    len(in_dead[payload]) == 1
                    and in_dead[payload][0]["reason"]
                    == max(dead_acked, key=lambda d: d.retry_invoke_mono).retry_reason
                ):
                    result.dead_exactly_once += 1

    for payload, item in in_queue.items():
        given = {d.retry_reason for d in by_payload.get(payload, []) if d.retried and not d.retry_dead}
        provenance = item["source-queue"] or item["source-id"] or item["dead-reason"]
        if provenance or (item["reason"] and item["reason"] not in given):
            result.wrong_reason += 1
            _example(
                result, "wrong_reason", {"payload": payload, "item": item, "retry_reasons": sorted(given)}
            )


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
    """`python -m querator serve` on a fixed port and data dir (or, with `postgres_dsn`, a node on that
    database); killed and restarted in place."""

    def __init__(self, data_dir: Path, log_path: Path, durability: str, postgres_dsn: str = "") -> None:
        self.data_dir = data_dir
        self.log_path = log_path
        self.durability = durability
        self.postgres_dsn = postgres_dsn
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def storage_args(self) -> list[str]:
        if self.postgres_dsn:  # durability does not apply to postgres (SPEC 9): the database decides
            return ["--backend", "postgres", "--postgres-dsn", self.postgres_dsn]
        return ["--data", str(self.data_dir), "--durability", self.durability]

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
            *self.storage_args(),
            "--http-port",
            "0",
        ]
        with open(self.log_path, "ab") as log:
            log.write(f"--- start {time.strftime('%H:%M:%S')} ---\n".encode())
            log.flush()
            offset = log.tell()
            t0 = time.monotonic()
            # A postgres node runs in a directory of its own, so nothing it might write lands in ours.
            if self.postgres_dsn:
                self.data_dir.mkdir(parents=True, exist_ok=True)
            self.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=self.data_dir if self.postgres_dsn else None,
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
    admins: int = 1  # processes that list and redrive the dead queue
    # "rocksdb", or "postgres": `nodes` servers on one database (SPEC 9), the workers spread over them and
    # each kill aimed at one of them; the database is `postgres_dsn`, or a throwaway cluster when empty.
    backend: str = "rocksdb"
    nodes: int = 1
    postgres_dsn: str = ""

    @property
    def label(self) -> str:
        """What the run is named by in its summary and JSON: the durability mode, or the node count."""
        return f"postgres-{self.nodes}-nodes" if self.backend == "postgres" else self.durability


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
            f"  retries ok {c.retry_calls.get('ok', 0):,} ({c.retried_acked:,} items) "
            f"unknown {c.retry_calls.get('unknown', 0):,}; QRETRY DEAD ok {c.dead_calls.get('ok', 0):,} "
            f"({c.dead_acked:,} items) unknown {c.dead_calls.get('unknown', 0):,}; redrives ok "
            f"{c.redrive_calls.get('ok', 0):,} ({c.redriven_acked:,} items) unknown "
            f"{c.redrive_calls.get('unknown', 0):,} ({c.redriven_maybe:,} items maybe), "
            f"{c.redriven_delivered:,} redriven payloads delivered again; dead queue at the end "
            f"{c.dead_final:,} items, {c.dead_exactly_once:,} of {c.dead_expected:,} expected there exactly "
            f"once with their reason; unfinished {c.unfinished}, dead missing {c.dead_missing}, "
            f"duplicated {c.dead_duplicated}, wrong provenance {c.dead_wrong_provenance}, unexplained "
            f"{c.dead_unexplained}, delivered after dead {c.dead_delivered}, completed and dead "
            f"{c.completed_and_dead}, in both queues {c.in_both_queues}, wrong reason {c.wrong_reason}\n"
            f"  server counters: produced {_count(stats.get('produced'))} "
            f"(histories: {self.items_applied():,} acknowledged or delivered, "
            f"{_count(self.redriven())} redriven), "
            f"completed {_count(stats.get('completed'))}, "
            f"dead-lettered {_count(stats.get('dead-lettered'))}, "
            f"lease-expired {_count(stats.get('lease-expired'))}, "
            f"left {_count(stats.get('total'))}{'' if self.counters_match() else ' MISMATCH'}; "
            f"{self.elapsed_s:.0f} s"
        )

    def items_applied(self) -> int:
        """Items the server must have stored: acknowledged ones plus unknown ones that were delivered."""
        return self.check.acknowledged + self.check.unknown_produces_delivered

    def redriven(self) -> int | None:
        """Items the server redrove, from its counters: what reached the dead queue minus what stayed."""
        dead = self.final_stats.get("dead-queue", {})
        produced = dead.get("produced")
        return produced - self.drain.get("dead_listed", 0) if isinstance(produced, int) else None

    def counters_match(self) -> bool:
        """QSTATS counters (kept across restarts) agree with the histories, and nothing is left.

        The queue produced what producers stored plus what redrives brought back, and every item it
        produced was completed or dead-lettered. The dead queue received exactly what was dead-lettered,
        the listing at the end held what it received minus what was redriven (between what acknowledged
        redrives moved and what unknown-outcome ones may have), and QCLEAR removed exactly that.
        """
        stats, dead = self.final_stats, self.final_stats.get("dead-queue", {})
        redriven = self.redriven()
        c = self.check
        return (
            redriven is not None
            and c.redriven_acked <= redriven <= c.redriven_acked + c.redriven_maybe
            and stats.get("produced") == self.items_applied() + redriven
            and stats.get("produced") == stats.get("completed", 0) + stats.get("dead-lettered", 0)
            and dead.get("produced") == stats.get("dead-lettered")
            and self.drain.get("dead_cleared") == self.drain.get("dead_listed") == c.dead_final
            and not stats.get("total")
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


def create_queues(port: int) -> None:
    """The dead queue (one partition: one order, so a redrive's items are the first ones listed), then
    the queue that names it."""
    _admin(port, "QCREATE", DEAD_QUEUE)
    _admin(
        port, "QCREATE", QUEUE, "PARTITIONS", PARTITIONS, "LEASE-TIMEOUT", LEASE_TIMEOUT_MS,
        "DEAD-QUEUE", DEAD_QUEUE,
    )  # fmt: skip


def wait_known(port: int, queues: list[str], within: float = 5.0) -> None:
    """Wait until the node on `port` knows the queues: an admin change made through one postgres node
    reaches the others within 1 s (SPEC 9), and a worker started sooner would only see NOQUEUE."""
    deadline = time.monotonic() + within
    while True:
        try:
            for queue in queues:
                _admin(port, "QINFO", queue)
            return
        except redis.ResponseError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def snapshot(port: int, history: History, queue: str, max_seconds: float = 120.0) -> list[dict[str, Any]]:
    """Every item of `queue` (QITEMS pages), logged as one `snapshot` record once complete."""
    client = Client(port, history)
    items: list[dict[str, Any]] = []
    after: list[str] = []
    deadline = time.monotonic() + max_seconds
    errors = 0
    try:
        for _ in range(100_000):
            if time.monotonic() > deadline or errors > 100:
                raise RuntimeError(f"snapshot of {queue} did not finish")
            if not client.connected():
                errors += 1
                time.sleep(0.1)
                continue
            kind, page = client.call("items", ["QITEMS", queue, *after, "LIMIT", 1000], queue=queue)
            if kind != "ok":
                errors += 1
                continue
            items += page
            if len(page) < 1000:
                break
            after = ["AFTER", page[-1]["id"]]
    finally:
        client.drop()
    history.write("snapshot", "snapshot", 0, queue=queue, items=items)
    return items


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
    if config.backend not in ("rocksdb", "postgres") or config.nodes < 1:
        raise ValueError(f"backend {config.backend!r} with {config.nodes} nodes")
    if config.backend == "rocksdb" and config.nodes != 1:
        raise ValueError("several nodes share one database: backend postgres only")
    cluster: PgCluster | None = None
    if config.backend == "postgres":
        dsn = config.postgres_dsn
        if not dsn:
            cluster = PgCluster().start()
            dsn = cluster.create_database("chaos")
        servers = [
            ChaosServer(workdir / f"node{i}", workdir / f"server{i}.log", config.durability, dsn)
            for i in range(config.nodes)
        ]
    else:
        servers = [ChaosServer(fault.data_dir(workdir), workdir / "server.log", config.durability)]
    server = servers[0]  # the one the setup, the snapshots and the drain talk to
    ctx = multiprocessing.get_context("spawn")
    stop = ctx.Event()
    redriving = ctx.Event()
    redrives_over = ctx.Event()
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
        for i, node in enumerate(servers):
            code = node.exited()
            if code is not None:
                which = f"server {i}" if len(servers) > 1 else "server"
                disturbances.append(f"{which} exited by itself with code {code} ({stage}); restarted")
                _log(f"  {config.label}: {disturbances[-1]}")
                node.start()

    def note_dead_workers(stage: str) -> None:
        for w in workers:
            if w.name not in reported_dead and not w.is_alive() and w.exitcode != 0:
                reported_dead.add(w.name)
                disturbances.append(f"worker {w.name} died with exit code {w.exitcode} ({stage})")
                _log(f"  {config.label}: {disturbances[-1]}")

    try:
        first_start_s = max(node.start() for node in servers)
        create_queues(server.port)
        for node in servers[1:]:
            wait_known(node.port, [DEAD_QUEUE, QUEUE])
        roles = [(f"P{i}", producer_main) for i in range(config.producers)]
        roles += [(f"C{i}", consumer_main) for i in range(config.consumers)]
        roles += [(f"A{i}", admin_main) for i in range(config.admins)]
        for n, (name, target) in enumerate(roles):
            path = str(hist_dir / f"{name}.jsonl")
            # Round robin over the nodes: producers, consumers and the admin each land on several of them,
            # so items cross nodes on their way (with one node, everyone is on it).
            port = servers[n % len(servers)].port
            args: tuple[Any, ...] = (port, name, path, stop, hard_deadline, rng.randrange(2**32))
            if target is admin_main:
                args += (redriving, redrives_over)
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
            if config.admins and (k + 1) % REDRIVE_KILL_EVERY == 0:
                redriving.wait(REDRIVE_WAIT_S)  # then kill while a QREDRIVE is on its way (or, rarely, not)
                time.sleep(rng.uniform(0, 0.003))  # now before, now during, now after the server applies it
            # One server: no draw, so a seed gives the run it gave before there were nodes.
            victim = server if len(servers) == 1 else rng.choice(servers)
            fault.crash(victim)
            took = victim.start()
            restart_s.append(took)
            fault.restarted(victim)
            if verbose and (k + 1) % 10 == 0:
                _log(f"  {config.label}: {k + 1}/{config.kills} kills, last restart {took:.2f} s")
        redrives_over.set()
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
            # Nothing moves between queues any more: what each holds now is where every item ended.
            snapshot(server.port, drain_history, QUEUE)
            dead = snapshot(server.port, drain_history, DEAD_QUEUE)
            first = drain(server.port, drain_history)
            time.sleep(LEASE_TIMEOUT_MS / 1000 + REQUEUE_MARGIN_S)
            ensure_serving("between the drain passes")
            second = drain(server.port, drain_history)
            dead_stats = _decode(_admin(server.port, "QSTATS", DEAD_QUEUE))
            cleared = int(_admin(server.port, "QCLEAR", DEAD_QUEUE))
        finally:
            drain_history.close()
        drained = {
            "items": first["items"] + second["items"],
            "first_pass": first["items"],
            "second_pass": second["items"],
            "dead_listed": len(dead),
            "dead_cleared": cleared,
        }
        final_stats = _decode(_admin(server.port, "QSTATS", QUEUE))
        final_stats["dead-queue"] = dead_stats
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
            for node in servers:
                node.stop()
                node.kill()
        finally:
            fault.close()  # e.g. unmount: must happen even when the server would not die
            if cluster is not None:
                cluster.close()
    records = load_histories(sorted(hist_dir.glob("*.jsonl")))
    for r in records:
        if r.get("type") == "error":
            worker_errors.append(f"{r['proc']}: {r.get('traceback', '')}")
    result = check(records)
    return RunResult(
        durability=config.label,
        kills=config.kills,
        check=result,
        restart_s=restart_s,
        first_start_s=first_start_s,
        elapsed_s=time.monotonic() - t_start,
        drain=drained,
        final_stats=final_stats,
        server_log_problems=[line for node in servers for line in node.log_problems()],
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
    parser.add_argument(
        "--backend",
        choices=["rocksdb", "postgres"],
        default="rocksdb",
        help="postgres: --nodes servers on one throwaway database, a random one killed each time",
    )
    parser.add_argument("--nodes", type=int, default=None, help="postgres nodes (default 3)")
    add_run_arguments(parser)
    args = parser.parse_args(argv)
    kills = args.kills if args.kills is not None else (8 if args.quick else 50)
    seed = args.seed if args.seed is not None else random.randrange(2**31)
    nodes = args.nodes if args.nodes is not None else (3 if args.backend == "postgres" else 1)
    if args.backend == "rocksdb" and nodes != 1:
        parser.error("--nodes needs --backend postgres (nodes share one database)")
    # Durability modes are RocksDB's; on postgres the database's synchronous_commit decides (SPEC 9).
    modes = ["fsync", "flush"] if args.durability == "both" else [args.durability]
    if args.backend == "postgres":
        modes = ["fsync"]
    own_workdir = args.workdir is None
    root = Path(tempfile.mkdtemp(prefix="querator-chaos-")) if own_workdir else args.workdir
    _log(
        f"chaos: {args.backend} x{nodes}, {kills} kills per mode, {args.producers} producers, "
        f"{args.consumers} consumers, seed {seed}, workdir {root}"
    )
    results: list[RunResult] = []
    failed = False
    try:
        for i, mode in enumerate(modes):
            config = RunConfig(
                mode, kills, args.producers, args.consumers, seed + i, backend=args.backend, nodes=nodes
            )
            result = run(config, root / config.label)
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
        run_config = {"kills": kills, "seed": seed, "backend": args.backend, "nodes": nodes}
        finish(args, "chaos", run_config, ok, modes_json, root, own_workdir)
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
