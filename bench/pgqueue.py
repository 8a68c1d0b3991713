"""The plain PostgreSQL queue that Querator's postgres backend is to be compared against: the pattern of pgmq
and River, one table, driven by the load shapes of bench/loadgen.py, every commit synchronous.

* one table; an item is ready when `visible_at <= now()`; a lease (`FOR UPDATE SKIP LOCKED`, oldest id
  first) pushes `visible_at` one visibility timeout ahead and counts the attempt, so an unfinished lease
  simply makes the row visible again (where it was, not at the tail: the pgmq semantics);
* produce inserts a whole batch with one `INSERT ... SELECT FROM unnest($1::bytea[])`; complete deletes a
  whole batch with `DELETE ... WHERE id = ANY($1)`; each is one statement, so one transaction and one round
  trip (asyncpg, see docs/adr/0012-postgres-driver.md);
* consumers poll (with a short backoff when the queue is empty) instead of LISTEN / NOTIFY.

    python -m bench.pgqueue [--quick] [--dsn DSN] [--json PATH]

Workloads: `cycle` with 8 producers + 8 consumers at COUNT 1 and COUNT 100 (the sizes of bench/run.py's
cycle workload), and `produce-batch` (50 connections each inserting 100 items per transaction). Each
reports items/s and `lost`: items whose produce was acknowledged but that were neither completed nor still
in the table (must be 0), and `duplicates`: completes that found a row already gone (a double lease).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from bench.loadgen import HandoffResult, percentile, run_async
from bench.pgcluster import PgCluster

TABLE = "pgqueue_items"
VISIBILITY_TIMEOUT_S = 60
# Lower than the default 100 so a lease's update of visible_at finds room on its own page (a HOT update: no
# new index entry), and autovacuum early and often, since every item is inserted, updated and deleted once.
CREATE = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    visible_at timestamptz NOT NULL DEFAULT now(),
    attempts integer NOT NULL DEFAULT 0,
    enqueued_at timestamptz NOT NULL DEFAULT now(),
    payload bytea NOT NULL
) WITH (fillfactor = 70, autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_cost_delay = 0);
"""
SCHEMA = f"DROP TABLE IF EXISTS {TABLE};\n{CREATE}"
PRODUCE = f"INSERT INTO {TABLE} (payload) SELECT * FROM unnest($1::bytea[])"
# The primary key index gives the FIFO order; leased rows are the few in flight, skipped by the filter.
LEASE = f"""
WITH c AS (
    SELECT id FROM {TABLE} WHERE visible_at <= now() ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED
)
UPDATE {TABLE} AS t
SET visible_at = now() + make_interval(secs => {VISIBILITY_TIMEOUT_S}), attempts = t.attempts + 1
FROM c WHERE t.id = c.id
RETURNING t.id, t.payload
"""
COMPLETE = f"DELETE FROM {TABLE} WHERE id = ANY($1::bigint[])"
POLL_MIN_S, POLL_MAX_S = 0.001, 0.02
# Every connection asks for synchronous commit, whatever the server's default: the comparison is durable.
SERVER_SETTINGS = {"synchronous_commit": "on", "application_name": "bench.pgqueue"}


@dataclass(frozen=True)
class Sizes:
    cycle_items_1: int
    cycle_items_100: int
    cycle_time_limit: float
    produce_seconds: float


DEFAULT = Sizes(cycle_items_1=6_000, cycle_items_100=100_000, cycle_time_limit=40.0, produce_seconds=3.0)
QUICK = Sizes(cycle_items_1=1_500, cycle_items_100=20_000, cycle_time_limit=15.0, produce_seconds=0.8)


@dataclass
class PgQueueResult:
    workload: str
    items: int  # items completed (cycle) or acknowledged as stored (produce-batch)
    target_items: int
    produced: int
    elapsed: float
    items_per_s: float
    lost: int
    duplicates: int
    timed_out: bool
    client_cpu: float
    errors: dict[str, int] = field(default_factory=dict)


async def connect(dsn: str) -> asyncpg.Connection:
    return await asyncpg.connect(dsn, server_settings=SERVER_SETTINGS)


async def setup(dsn: str) -> None:
    conn = await connect(dsn)
    try:
        await conn.execute(SCHEMA)
    finally:
        await conn.close()


async def remaining(dsn: str) -> int:
    conn = await connect(dsn)
    try:
        return int(await conn.fetchval(f"SELECT count(*) FROM {TABLE}"))
    finally:
        await conn.close()


async def cycle(
    dsn: str,
    *,
    producers: int = 8,
    consumers: int = 8,
    count: int = 1,
    batch: int | None = None,
    items: int = 20_000,
    time_limit: float = 60.0,
) -> PgQueueResult:
    """Chained produce -> lease -> complete, as loadgen.cycle; end-to-end items/s and the items lost."""
    batch = batch or count
    per_producer = math.ceil(items / producers)
    target = per_producer * producers
    errors: Counter[str] = Counter()
    produced = completed = duplicates = 0
    t_end = 0.0
    done = asyncio.Event()
    await setup(dsn)
    pconns = [await connect(dsn) for _ in range(producers)]
    cconns = [await connect(dsn) for _ in range(consumers)]
    deadline = time.monotonic() + time_limit

    async def produce(conn: asyncpg.Connection, p: int) -> None:
        nonlocal produced
        seq = 0
        while seq < per_producer and time.monotonic() < deadline:
            k = min(batch, per_producer - seq)
            # Unique payloads, so a double delivery would show as a duplicate complete.
            payloads = [b"%d:%d" % (p, seq + i) for i in range(k)]
            try:
                await conn.execute(PRODUCE, payloads)
            except asyncpg.PostgresError as exc:
                errors[f"produce: {type(exc).__name__}"] += 1
                await asyncio.sleep(0.01)
                continue
            produced += k
            seq += k

    async def consume(conn: asyncpg.Connection) -> None:
        nonlocal completed, duplicates, t_end
        pause = POLL_MIN_S
        while not done.is_set() and time.monotonic() < deadline:
            try:
                rows = await conn.fetch(LEASE, count)
                if not rows:
                    await asyncio.sleep(pause)
                    pause = min(POLL_MAX_S, pause * 2)
                    continue
                pause = POLL_MIN_S
                status = await conn.execute(COMPLETE, [r["id"] for r in rows])
            except asyncpg.PostgresError as exc:
                errors[f"lease/complete: {type(exc).__name__}"] += 1
                await asyncio.sleep(0.01)
                continue
            deleted = int(status.split()[-1])
            duplicates += len(rows) - deleted
            completed += deleted
            if completed >= target and not done.is_set():
                t_end = time.perf_counter()
                done.set()

    cpu0 = time.process_time()
    t0 = time.perf_counter()
    tasks = [asyncio.ensure_future(consume(c)) for c in cconns]
    tasks += [asyncio.ensure_future(produce(c, i)) for i, c in enumerate(pconns)]
    try:
        await asyncio.wait_for(asyncio.gather(*tasks), time_limit + 10)
    except TimeoutError:
        errors["load generator: tasks still running after the time limit"] += 1
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for c in pconns + cconns:
            await c.close()
    elapsed = max((t_end or time.perf_counter()) - t0, 1e-9)
    cpu = time.process_time() - cpu0
    left = await remaining(dsn)
    return PgQueueResult(
        workload=f"8p+8c COUNT {count}" if (producers, consumers) == (8, 8) else f"cycle COUNT {count}",
        items=completed,
        target_items=target,
        produced=produced,
        elapsed=elapsed,
        items_per_s=completed / elapsed,
        lost=produced - completed - left,
        duplicates=duplicates,
        timed_out=completed < target,
        client_cpu=cpu / elapsed,
        errors=dict(errors),
    )


async def produce_batch(
    dsn: str, *, clients: int = 50, batch: int = 100, seconds: float = 3.0
) -> PgQueueResult:
    """`clients` connections each inserting `batch` items per transaction for `seconds` (bench/run.py's
    produce-batch: `-c 50 QPRODUCE q ITEMS v x100`); what was acknowledged must all be in the table."""
    await setup(dsn)
    errors: Counter[str] = Counter()
    produced = 0
    conns = [await connect(dsn) for _ in range(clients)]
    payloads = [b"v"] * batch
    stop_at = 0.0

    async def producer(conn: asyncpg.Connection) -> None:
        nonlocal produced
        while time.perf_counter() < stop_at:
            try:
                await conn.execute(PRODUCE, payloads)
            except asyncpg.PostgresError as exc:
                errors[f"produce: {type(exc).__name__}"] += 1
                continue
            produced += batch

    cpu0 = time.process_time()
    t0 = time.perf_counter()
    stop_at = t0 + seconds
    try:
        await asyncio.wait_for(asyncio.gather(*(producer(c) for c in conns)), seconds + 30)
    except TimeoutError:
        errors["load generator: producers still running 30 s after the end"] += 1
    finally:
        for c in conns:
            await c.close()
    elapsed = time.perf_counter() - t0
    left = await remaining(dsn)
    return PgQueueResult(
        workload=f"produce {batch} items -c {clients}",
        items=produced,
        target_items=produced,
        produced=produced,
        elapsed=elapsed,
        items_per_s=produced / elapsed,
        lost=produced - left,
        duplicates=0,
        timed_out=False,
        client_cpu=(time.process_time() - cpu0) / elapsed,
        errors=dict(errors),
    )


# --- big tables: the W5 shape (bench/bulk.py's fill, steady and drain on this queue) ----------------------


@dataclass
class BacklogStep:
    items: int
    seconds: float
    items_per_s: float
    client_cpu: float
    min_backlog: int = 0
    errors: dict[str, int] = field(default_factory=dict)


async def fill(dsn: str, n: int, *, batch: int = 1000, connections: int = 2) -> BacklogStep:
    """Insert n items of 100 bytes (bench/bulk.py's payloads), `batch` per statement, on a few connections;
    the table is made anew first when it does not exist."""
    from bench.bulk import payloads

    conns = [await connect(dsn) for _ in range(connections)]
    await conns[0].execute(CREATE)
    errors: Counter[str] = Counter()
    stored = 0
    batches = -(-n // batch)

    async def worker(conn: asyncpg.Connection, index: int) -> None:
        nonlocal stored
        for b in range(index, batches, connections):
            k = min(batch, n - b * batch)
            try:
                await conn.execute(PRODUCE, payloads(b * batch, k))
            except asyncpg.PostgresError as exc:
                errors[f"fill: {type(exc).__name__}"] += 1
                continue
            stored += k

    cpu0, t0 = time.process_time(), time.perf_counter()
    try:
        await asyncio.gather(*(worker(c, i) for i, c in enumerate(conns)))
    finally:
        for c in conns:
            await c.close()
    elapsed = time.perf_counter() - t0
    return BacklogStep(
        stored, elapsed, stored / elapsed, (time.process_time() - cpu0) / elapsed, 0, dict(errors)
    )


async def drain(dsn: str, *, consumers: int = 4, count: int = 1000, time_limit: float = 600.0) -> BacklogStep:
    """Lease + complete until a lease comes back empty (nothing else produces meanwhile)."""
    conns = [await connect(dsn) for _ in range(consumers)]
    errors: Counter[str] = Counter()
    done = 0
    deadline = time.monotonic() + time_limit

    async def consume(conn: asyncpg.Connection) -> None:
        nonlocal done
        while time.monotonic() < deadline:
            try:
                rows = await conn.fetch(LEASE, count)
                if not rows:
                    return
                await conn.execute(COMPLETE, [r["id"] for r in rows])
            except asyncpg.PostgresError as exc:
                errors[f"drain: {type(exc).__name__}"] += 1
                continue
            done += len(rows)

    cpu0, t0 = time.process_time(), time.perf_counter()
    try:
        await asyncio.gather(*(consume(c) for c in conns))
    finally:
        for c in conns:
            await c.close()
    elapsed = time.perf_counter() - t0
    return BacklogStep(done, elapsed, done / elapsed, (time.process_time() - cpu0) / elapsed, 0, dict(errors))


async def steady(
    dsn: str,
    backlog: int,
    *,
    seconds: float = 1.0,
    warmup: float = 0.3,
    consumers: int = 4,
    count: int = 100,
    refillers: int = 3,
    refill_batch: int = 1000,
) -> BacklogStep:
    """bench/bulk.py's steady on this queue: 4 consumers lease COUNT 100 + complete for `seconds` (after
    `warmup` not counted) while 3 refill producers keep the table at about `backlog` ready items."""
    from bench.bulk import payloads

    cconns = [await connect(dsn) for _ in range(consumers)]
    pconns = [await connect(dsn) for _ in range(refillers)]
    errors: Counter[str] = Counter()
    completed = produced = requested = 0
    min_backlog = backlog
    stop = asyncio.Event()
    more = asyncio.Event()

    async def consume(conn: asyncpg.Connection) -> None:
        nonlocal completed, min_backlog
        while not stop.is_set():
            try:
                rows = await conn.fetch(LEASE, count)
                if not rows:
                    await asyncio.sleep(POLL_MIN_S)
                    continue
                await conn.execute(COMPLETE, [r["id"] for r in rows])
            except asyncpg.PostgresError as exc:
                errors[f"lease/complete: {type(exc).__name__}"] += 1
                continue
            if stop.is_set():
                return  # finished after the window closed: not counted
            completed += len(rows)
            min_backlog = min(min_backlog, backlog + produced - completed)
            more.set()

    async def refill(conn: asyncpg.Connection) -> None:
        nonlocal produced, requested
        offset = 0
        while not stop.is_set():
            deficit = completed - requested
            if deficit < min(refill_batch, backlog // 10 or 1):
                more.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(more.wait(), 0.1)
                continue
            k = min(refill_batch, deficit)
            requested += k
            try:
                await conn.execute(PRODUCE, payloads(offset, k))
            except asyncpg.PostgresError as exc:
                errors[f"refill: {type(exc).__name__}"] += 1
                requested -= k
                continue
            offset += k
            produced += k

    tasks = [asyncio.ensure_future(consume(c)) for c in cconns]
    tasks += [asyncio.ensure_future(refill(c)) for c in pconns]
    try:
        await asyncio.sleep(warmup)
        counted_from = completed
        cpu0, t0 = time.process_time(), time.perf_counter()
        await asyncio.sleep(seconds)
        elapsed = time.perf_counter() - t0
        counted = completed - counted_from
        cpu = time.process_time() - cpu0
        stop.set()
        await asyncio.wait(tasks, timeout=10)
    finally:
        stop.set()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for c in cconns + pconns:
            await c.close()
    return BacklogStep(counted, elapsed, counted / elapsed, cpu / elapsed, min_backlog, dict(errors))


async def handoff(
    dsn: str, *, rate: float = 1000.0, duration: float = 3.0, consumers: int = 8, producers: int = 4
) -> HandoffResult:
    """loadgen.handoff on this queue: items produced one per INSERT at a fixed open-loop rate (each payload
    its send time), consumers polling with LEASE 1 (1-20 ms backoff when empty); produce -> lease latency.
    One connection commits one INSERT at a time, so the sends are dealt over `producers` connections to
    keep the rate when a commit takes longer than the interval."""
    total = int(rate * duration)
    latencies: list[int] = []
    errors: Counter[str] = Counter()
    done = asyncio.Event()
    last_receive = 0.0
    await setup(dsn)
    pconns = [await connect(dsn) for _ in range(producers)]
    cconns = [await connect(dsn) for _ in range(consumers)]

    async def consume(conn: asyncpg.Connection) -> None:
        nonlocal last_receive
        pause = POLL_MIN_S
        while not done.is_set():
            try:
                rows = await conn.fetch(LEASE, 1)
                now = time.perf_counter_ns()
                if not rows:
                    await asyncio.sleep(pause)
                    pause = min(POLL_MAX_S, pause * 2)
                    continue
                pause = POLL_MIN_S
                latencies.extend(now - int(r["payload"]) for r in rows)
                last_receive = now / 1e9
                await conn.execute(COMPLETE, [r["id"] for r in rows])
            except asyncpg.PostgresError as exc:
                errors[f"lease/complete: {type(exc).__name__}"] += 1

    async def send(conn: asyncpg.Connection, lock: asyncio.Lock) -> None:
        async with lock:  # one statement at a time per connection
            try:
                await conn.execute(PRODUCE, [str(time.perf_counter_ns()).encode()])
            except asyncpg.PostgresError as exc:
                errors[f"produce: {type(exc).__name__}"] += 1

    locks = [asyncio.Lock() for _ in pconns]
    ctasks = [asyncio.ensure_future(consume(c)) for c in cconns]
    sends: list[asyncio.Future[None]] = []
    cpu0 = time.process_time()
    try:
        await asyncio.sleep(0.3)
        t0 = time.perf_counter()
        for i in range(total):
            delay = t0 + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            k = i % len(pconns)
            sends.append(asyncio.ensure_future(send(pconns[k], locks[k])))
        t_last = time.perf_counter()
        await asyncio.gather(*sends)
        wait_until = time.monotonic() + 10.0
        while len(latencies) < total and time.monotonic() < wait_until:
            await asyncio.sleep(0.01)
    finally:
        done.set()
        await asyncio.gather(*ctasks, return_exceptions=True)
        for c in pconns + cconns:
            await c.close()
    wall = max(t_last - t0, 1e-9)
    ms = sorted(v / 1e6 for v in latencies)
    if len(ms) < total:
        errors[f"lost: {total - len(ms)} of {total} items never reached a consumer"] += 1
    return HandoffResult(
        sent=total,
        received=len(ms),
        rate=rate,
        achieved_rate=total / wall,
        p50_ms=percentile(ms, 0.50),
        p99_ms=percentile(ms, 0.99),
        max_ms=ms[-1] if ms else math.nan,
        mean_ms=sum(ms) / len(ms) if ms else math.nan,
        drain_ms=max(0.0, last_receive - t_last) * 1000 if ms else math.nan,
        client_cpu=(time.process_time() - cpu0) / wall,
        errors=dict(errors),
    )


def run_handoff(dsn: str, **kwargs: Any) -> HandoffResult:
    return run_async(handoff(dsn, **kwargs))


def run_fill(dsn: str, n: int, **kwargs: Any) -> BacklogStep:
    return run_async(fill(dsn, n, **kwargs))


def run_drain(dsn: str, **kwargs: Any) -> BacklogStep:
    return run_async(drain(dsn, **kwargs))


def run_steady(dsn: str, backlog: int, **kwargs: Any) -> BacklogStep:
    return run_async(steady(dsn, backlog, **kwargs))


def run_cycle(dsn: str, **kwargs: Any) -> PgQueueResult:
    return run_async(cycle(dsn, **kwargs))


def run_produce_batch(dsn: str, **kwargs: Any) -> PgQueueResult:
    return run_async(produce_batch(dsn, **kwargs))


def run_all(dsn: str, sizes: Sizes) -> list[PgQueueResult]:
    """The three measurements of bench/run.py's cycle and produce-batch workloads, in that order."""
    results = []
    for count, items in ((1, sizes.cycle_items_1), (100, sizes.cycle_items_100)):
        results.append(
            run_cycle(dsn, count=count, batch=count, items=items, time_limit=sizes.cycle_time_limit)
        )
    results.append(run_produce_batch(dsn, clients=50, batch=100, seconds=sizes.produce_seconds))
    return results


def problems(results: list[PgQueueResult]) -> list[str]:
    out = []
    for r in results:
        out += [f"{r.workload}: {message} (x{n})" for message, n in r.errors.items()]
        if r.lost:
            out.append(f"{r.workload}: {r.lost} acknowledged items lost")
        if r.duplicates:
            out.append(f"{r.workload}: {r.duplicates} items leased twice")
        if r.timed_out:
            out.append(f"{r.workload}: only {r.items} of {r.target_items} items completed in time")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pgqueue", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the sizes of bench.run --quick")
    parser.add_argument(
        "--dsn", help="an existing database (its table pgqueue_items is dropped and made anew)"
    )
    parser.add_argument("--json", type=Path, help="write the results and problems here")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else DEFAULT
    if args.dsn:
        results = run_all(args.dsn, sizes)
        server = "given DSN"
    else:
        with PgCluster() as pg:
            results = run_all(pg.create_database("pgqueue"), sizes)
            server = f"throwaway cluster ({pg.bindir}), fsync on, synchronous_commit on"
    print(f"{'workload':28} {'items/s':>10} {'items':>8} {'lost':>5} {'dup':>4}")
    for r in results:
        print(f"{r.workload:28} {r.items_per_s:10.0f} {r.items:8} {r.lost:5} {r.duplicates:4}")
    found = problems(results)
    for line in found:
        print(f"problem: {line}", file=sys.stderr)
    if args.json:
        report = {"server": server, "results": [asdict(r) for r in results], "problems": found}
        args.json.write_text(json.dumps(report, indent=2))
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main())
