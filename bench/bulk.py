"""Big-queue helpers for the backlog, memory and restart workloads (W5-W7).

* `fill`: put N items of 100 bytes in a queue / stream as fast as the server takes them, outside any timed
  part: Querator `QPRODUCE q ITEMS p1 .. p1000`, Redis 1000 pipelined `XADD s * f p`, a few batches in
  flight per connection.
* `steady`: lease + complete for a fixed time (`QLEASE q COUNT 100` + `QCOMPLETE`, or `XREADGROUP ...
  COUNT 100` + `XACK`) by 4 consumers, while one producer tops the queue back up to the starting backlog
  so the backlog stays the same size for the whole measurement (otherwise a 10k backlog would be gone
  in well under a second).
* `drain`: lease + complete everything that is queued (COUNT 1000), to leave deleted keys at the head.
* `lease_n`: lease N items and keep them leased (for the restart workload).
* `first_lease`: poll a restarting server until a lease returns an item; the restart workload's clock.
* `rss`: VmRSS / VmHWM of a process from /proc/PID/status.

Payloads are 100 bytes of base64 text drawn from a pool of 4096 random ones, so neither RocksDB's LZ4
blocks nor anything else can shrink them to nothing. Every loop is bounded by a count and a deadline, and
only 127.0.0.1 is targeted (see `loadgen.Conn`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import random
import socket
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import hiredis

from bench.loadgen import (
    BLOCK_MS,
    Conn,
    Dialect,
    QueratorDialect,
    RedisStreamDialect,
    _error_key,
    complete_leased,
    run_async,
)
from bench.servers import HOST

PAYLOAD_BYTES = 100
QUEUE = "bench"
_rng = random.Random(20261127)
PAYLOADS: list[bytes] = [base64.b64encode(_rng.randbytes(75))[:PAYLOAD_BYTES] for _ in range(4096)]


def payloads(start: int, n: int) -> list[bytes]:
    """n payloads from the pool, starting at `start` (wrapping)."""
    start %= len(PAYLOADS)
    out = PAYLOADS[start : start + n]
    while len(out) < n:
        out += PAYLOADS[: n - len(out)]
    return out


def dialect(target: str, lease_timeout_ms: int | None = None) -> Dialect:
    if target == "querator":
        return _Querator(QUEUE, lease_timeout_ms)
    if target == "redis":
        return _Redis(QUEUE)
    raise ValueError(f"target must be querator or redis, not {target!r}")


class _Querator(QueratorDialect):
    def __init__(self, queue: str, lease_timeout_ms: int | None) -> None:
        super().__init__(queue)
        self.lease_timeout_ms = lease_timeout_ms

    async def setup(self, conn: Conn) -> None:
        args: list[Any] = ["QCREATE", self.queue]
        if self.lease_timeout_ms:
            args += ["LEASE-TIMEOUT", self.lease_timeout_ms]
        reply = await conn.call(*args)
        if isinstance(reply, hiredis.ReplyError) and not str(reply).startswith("EXISTS"):
            raise RuntimeError(f"QCREATE {self.queue}: {reply}")

    def lease_now(self, count: int) -> tuple[Any, ...]:
        return ("QLEASE", self.queue, "COUNT", count)


class _Redis(RedisStreamDialect):
    async def setup(self, conn: Conn) -> None:
        # Unlike the loadgen dialect, keep what is there: the stream may already hold a backlog.
        reply = await conn.call("XGROUP", "CREATE", self.stream, self.group, "0", "MKSTREAM")
        if isinstance(reply, hiredis.ReplyError) and "BUSYGROUP" not in str(reply):
            raise RuntimeError(f"XGROUP CREATE: {reply}")

    def lease_now(self, count: int) -> tuple[Any, ...]:
        return ("XREADGROUP", "GROUP", self.group, "c0", "COUNT", count, "STREAMS", self.stream, ">")


# --- fill -------------------------------------------------------------------------------------------


@dataclass
class FillResult:
    items: int  # items the replies say were stored
    seconds: float
    items_per_s: float
    errors: dict[str, int] = field(default_factory=dict)
    timed_out: bool = False


async def fill(
    port: int,
    d: Dialect,
    n: int,
    *,
    batch: int = 1000,
    connections: int = 2,
    inflight: int = 4,
    time_limit: float = 600.0,
) -> FillResult:
    """Produce n items (rounded up to whole batches per connection), `inflight` batches pipelined."""
    errors: Counter[str] = Counter()
    stored = 0
    deadline = time.monotonic() + time_limit
    setup = await Conn.open(port)
    try:
        await d.setup(setup)
    finally:
        await setup.close()
    batches = -(-n // batch)
    shares = [batches // connections + (1 if i < batches % connections else 0) for i in range(connections)]
    conns = [await Conn.open(port) for _ in range(connections)]
    timed_out = False

    async def worker(conn: Conn, nbatches: int, offset: int) -> None:
        nonlocal stored, timed_out
        sent = 0
        pending: deque[int] = deque()
        while sent < nbatches or pending:
            while sent < nbatches and len(pending) < inflight:
                if time.monotonic() > deadline:
                    timed_out = True
                    nbatches = sent
                    break
                commands = d.produce(payloads(offset + sent * batch, batch))
                conn.send(*commands)
                pending.append(len(commands))
                sent += 1
            await conn.drain()
            if not pending:
                break
            replies = [await conn.read() for _ in range(pending.popleft())]
            for r in replies:
                if isinstance(r, hiredis.ReplyError):
                    errors[f"produce: {_error_key(r)}"] += 1
            stored += d.produced(replies)

    t0 = time.perf_counter()
    try:
        await asyncio.gather(
            *(worker(c, k, i * 7919) for i, (c, k) in enumerate(zip(conns, shares, strict=True)))
        )
    except (ConnectionError, OSError) as exc:
        errors[f"connection: {exc}"] += 1
    finally:
        for c in conns:
            await c.close()
    seconds = time.perf_counter() - t0
    return FillResult(stored, round(seconds, 3), stored / max(seconds, 1e-9), dict(errors), timed_out)


# --- steady lease + complete -------------------------------------------------------------------------


@dataclass
class SteadyResult:
    backlog: int  # the level the producer keeps the queue at
    seconds: float
    completed: int  # in the measured window
    items_per_s: float
    produced: int  # refill items produced during warm-up and measurement
    min_backlog: int  # lowest estimated backlog seen (produced - completed, from the client's counters)
    max_stall_ms: float
    client_cpu: float
    short_completes: int = 0
    errors: dict[str, int] = field(default_factory=dict)


async def steady(
    port: int,
    d: Dialect,
    backlog: int,
    *,
    seconds: float = 3.0,
    consumers: int = 4,
    count: int = 100,
    refill_batch: int = 1000,
    refillers: int = 3,
    warmup: float = 0.5,
) -> SteadyResult:
    """Lease + complete for `seconds` (after `warmup` seconds not counted) with the queue kept at about
    `backlog` ready items."""
    errors: Counter[str] = Counter()
    completed = 0
    produced = 0
    short = 0
    min_backlog = backlog
    last = 0.0
    max_stall = 0.0
    stop = asyncio.Event()
    more = asyncio.Event()
    cconns = [await Conn.open(port) for _ in range(consumers)]
    # Refill producers, each with one batch in flight, so that the refill keeps up with fast consumers.
    pconns = [await Conn.open(port) for _ in range(refillers)]

    async def consume(conn: Conn, name: str) -> None:
        nonlocal completed, short, last, max_stall, min_backlog
        while not stop.is_set():
            reply = await conn.call(*d.lease(name, count, BLOCK_MS))
            if isinstance(reply, hiredis.ReplyError):
                errors[f"lease: {_error_key(reply)}"] += 1
                await asyncio.sleep(0.01)
                continue
            got = d.leased(reply)
            if not got:
                continue
            acked = await complete_leased(conn, d, got, errors)
            if acked is None:
                continue
            if not acked:
                short += 1
            if stop.is_set():
                return  # finished after the window closed: not counted
            now = time.perf_counter()
            if last:
                max_stall = max(max_stall, now - last)
            last = now
            completed += len(got)
            min_backlog = min(min_backlog, backlog + produced - completed)
            more.set()

    requested = 0  # refill items sent, replied to or not

    async def refill(conn: Conn) -> None:
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
            replies = await conn.pipeline(d.produce(payloads(offset, k)))
            offset += k
            for r in replies:
                if isinstance(r, hiredis.ReplyError):
                    errors[f"refill: {_error_key(r)}"] += 1
            stored = d.produced(replies)
            produced += stored
            requested -= k - stored

    tasks = [asyncio.ensure_future(consume(c, f"c{i}")) for i, c in enumerate(cconns)]
    tasks += [asyncio.ensure_future(refill(c)) for c in pconns]
    try:
        await asyncio.sleep(warmup)  # connections, caches and the first fsyncs settle; not counted
        counted_from = completed
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        await asyncio.sleep(seconds)
        elapsed = time.perf_counter() - t0
        counted = completed - counted_from
        stop.set()
        done, pending = await asyncio.wait(tasks, timeout=BLOCK_MS / 1000 + 10)
        if pending:
            errors["load generator: tasks still blocked 10 s after the window (server stall?)"] += 1
        for t in done:
            if t.exception() is not None:
                errors[f"task: {t.exception()}"] += 1
    finally:
        stop.set()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for c in [*cconns, *pconns]:
            await c.close()
    return SteadyResult(
        backlog=backlog,
        seconds=round(elapsed, 3),
        completed=counted,
        items_per_s=counted / elapsed,
        produced=produced,
        min_backlog=min_backlog,
        max_stall_ms=round(max_stall * 1000, 1),
        client_cpu=round((time.process_time() - cpu0) / elapsed, 3),
        short_completes=short,
        errors=dict(errors),
    )


# --- drain and lease ---------------------------------------------------------------------------------


@dataclass
class DrainResult:
    items: int
    seconds: float
    items_per_s: float
    short_completes: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    timed_out: bool = False


async def drain(
    port: int, d: Any, *, consumers: int = 4, count: int = 1000, time_limit: float = 600.0
) -> DrainResult:
    """Lease + complete until a lease comes back empty (nothing else produces meanwhile)."""
    errors: Counter[str] = Counter()
    done_items = 0
    short = 0
    timed_out = False
    deadline = time.monotonic() + time_limit
    conns = [await Conn.open(port) for _ in range(consumers)]

    async def consume(conn: Conn) -> None:
        nonlocal done_items, short, timed_out
        failures = 0
        while True:
            if time.monotonic() > deadline:
                timed_out = True
                return
            reply = await conn.call(*d.lease_now(count))
            if isinstance(reply, hiredis.ReplyError):
                errors[f"lease: {_error_key(reply)}"] += 1
                failures += 1
                if failures > 100:
                    return
                await asyncio.sleep(0.01)
                continue
            got = d.leased(reply)
            if not got:
                return
            acked = await complete_leased(conn, d, got, errors)
            if acked is None:
                continue
            if not acked:
                short += 1
            done_items += len(got)

    t0 = time.perf_counter()
    try:
        await asyncio.gather(*(consume(c) for c in conns))
    except (ConnectionError, OSError) as exc:
        errors[f"connection: {exc}"] += 1
    finally:
        for c in conns:
            await c.close()
    seconds = time.perf_counter() - t0
    return DrainResult(
        done_items, round(seconds, 3), done_items / max(seconds, 1e-9), short, dict(errors), timed_out
    )


async def lease_n(port: int, d: Any, n: int, *, count: int = 1000) -> int:
    """Lease n items and leave them leased (not completed). Returns how many were leased."""
    conn = await Conn.open(port)
    got = 0
    try:
        for _ in range(-(-n // count) + 10):  # bounded
            if got >= n:
                break
            reply = await conn.call(*d.lease_now(min(count, n - got)))
            if isinstance(reply, hiredis.ReplyError):
                raise RuntimeError(f"lease: {reply}")
            items = d.leased(reply)
            if not items:
                break
            got += len(items)
    finally:
        await conn.close()
    return got


# --- restart clock -----------------------------------------------------------------------------------


@dataclass
class FirstLease:
    seconds: float | None  # from `t0` to the first lease that returned an item
    first_connect_s: float | None  # first accepted TCP connection
    attempts: int
    last_error: str = ""


def first_lease(port: int, command: tuple[Any, ...], t0: float, *, timeout: float = 120.0) -> FirstLease:
    """Poll (every 2 ms) until `command` returns a non-empty, non-error reply; times from `t0` (perf_counter).

    A refused connection, a closed one, an error reply (`-LOADING` from Redis while it replays its AOF)
    or an empty reply all count as not yet.
    """
    deadline = t0 + timeout
    packed = hiredis.pack_command(tuple(command))
    attempts = 0
    connected: float | None = None
    last_error = ""
    while time.perf_counter() < deadline:
        attempts += 1
        try:
            with socket.create_connection(
                (HOST, port), timeout=max(0.5, deadline - time.perf_counter())
            ) as s:
                if connected is None:
                    connected = time.perf_counter() - t0
                s.settimeout(max(0.5, deadline - time.perf_counter()))
                reader = hiredis.Reader()
                s.sendall(packed)
                reply: Any = False
                while reply is False:
                    data = s.recv(65536)
                    if not data:
                        raise ConnectionError("closed")
                    reader.feed(data)
                    reply = reader.gets()
            if isinstance(reply, hiredis.ReplyError):
                last_error = str(reply)[:120]
            elif reply:
                return FirstLease(time.perf_counter() - t0, connected, attempts, last_error)
            else:
                last_error = "empty reply"
        except (OSError, ConnectionError) as exc:
            last_error = f"{type(exc).__name__}: {exc}"[:120]
        time.sleep(0.002)
    return FirstLease(None, connected, attempts, last_error)


# --- memory ------------------------------------------------------------------------------------------


def rss(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (peak) of a process in MB (MiB), from /proc/PID/status."""
    out: dict[str, float] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(rest.split()[0]) / 1024  # kB -> MiB
    return out


def dir_size_mb(path: str | os.PathLike[str]) -> float:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.path.getsize(os.path.join(root, name))
    return total / (1 << 20)


# --- sync wrappers -----------------------------------------------------------------------------------


def run_fill(port: int, target: str, n: int, **kwargs: Any) -> FillResult:
    lease_timeout = kwargs.pop("lease_timeout_ms", None)
    return run_async(fill(port, dialect(target, lease_timeout), n, **kwargs))


def run_steady(port: int, target: str, backlog: int, **kwargs: Any) -> SteadyResult:
    return run_async(steady(port, dialect(target), backlog, **kwargs))


def run_drain(port: int, target: str, **kwargs: Any) -> DrainResult:
    return run_async(drain(port, dialect(target), **kwargs))


def run_lease_n(port: int, target: str, n: int) -> int:
    return run_async(lease_n(port, dialect(target), n))
