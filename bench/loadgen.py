"""Asyncio load generator on raw sockets (asyncio streams) and `hiredis.Reader`.

Two modes, each for Querator (QPRODUCE / QLEASE / QCOMPLETE) or Redis streams (XADD / XREADGROUP / XACK):

* `cycle`: N producers and M consumers on one queue / stream. Producers send `items` in all, `batch` per
  round trip (Querator: one `QPRODUCE q ITEMS p1 .. pk`; Redis: k pipelined `XADD s * f p`). Consumers
  lease then complete (`QLEASE q COUNT k BLOCK 1000` + `QCOMPLETE q ids...`; `XREADGROUP GROUP g c COUNT
  k BLOCK 1000 STREAMS s >` + `XACK s g ids...`). The result is end-to-end items/s: items completed over
  the time from the first produce to the last complete.
* `handoff`: consumers are already blocked in a lease when one producer sends items open-loop at a fixed
  rate; each payload is the `time.perf_counter_ns()` of its send, and the consumer that gets it records
  the latency (same process, same clock). Reports p50 / p99 / max in milliseconds.

Every loop is bounded by a count and by a time limit; only 127.0.0.1 is targeted. Run one directly with
`python -m bench.loadgen --port P --target querator|redis cycle|handoff [...]`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

import hiredis

from bench.servers import HOST

T = TypeVar("T")
BLOCK_MS = 1000


class Conn:
    """One RESP connection: pack commands with hiredis, parse replies with a hiredis.Reader."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._parser = hiredis.Reader()

    @classmethod
    async def open(cls, port: int, host: str = HOST) -> Conn:
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("the load generator only targets the local machine")
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    def send(self, *commands: tuple[Any, ...]) -> None:
        """Queue commands for writing (pipelined when more than one); read their replies in order."""
        if len(commands) == 1:
            self._writer.write(hiredis.pack_command(commands[0]))
        else:
            self._writer.write(b"".join(hiredis.pack_command(c) for c in commands))

    async def drain(self) -> None:
        await self._writer.drain()

    async def read(self) -> Any:
        """The next reply; an error reply is returned as a `hiredis.ReplyError`, not raised."""
        parser = self._parser
        while True:
            reply = parser.gets()
            if reply is not False:
                return reply
            data = await self._reader.read(1 << 16)
            if not data:
                raise ConnectionError("server closed the connection")
            parser.feed(data)

    async def call(self, *args: Any) -> Any:
        self.send(args)
        await self.drain()
        return await self.read()

    async def pipeline(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        self.send(*commands)
        await self.drain()
        return [await self.read() for _ in commands]

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(OSError, ConnectionError):
            await self._writer.wait_closed()


class Dialect:
    """How one server spells produce / lease / complete."""

    name = ""

    async def setup(self, conn: Conn) -> None:
        raise NotImplementedError

    def produce(self, payloads: list[bytes]) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def produced(self, replies: list[Any]) -> int:
        """How many items the replies to `produce` say were stored."""
        raise NotImplementedError

    def lease(self, consumer: str, count: int, block_ms: int) -> tuple[Any, ...]:
        raise NotImplementedError

    def leased(self, reply: Any) -> list[tuple[bytes, bytes]]:
        """(id, payload) pairs from a lease reply (empty on a timeout)."""
        raise NotImplementedError

    def complete(self, ids: list[bytes]) -> tuple[Any, ...]:
        raise NotImplementedError


class QueratorDialect(Dialect):
    name = "querator"

    def __init__(self, queue: str = "bench") -> None:
        self.queue = queue

    async def setup(self, conn: Conn) -> None:
        reply = await conn.call("QCREATE", self.queue)
        if isinstance(reply, hiredis.ReplyError) and not str(reply).startswith("EXISTS"):
            raise RuntimeError(f"QCREATE {self.queue}: {reply}")

    def produce(self, payloads: list[bytes]) -> list[tuple[Any, ...]]:
        return [("QPRODUCE", self.queue, "ITEMS", *payloads)]

    def produced(self, replies: list[Any]) -> int:
        return sum(len(r) for r in replies if isinstance(r, list))

    def lease(self, consumer: str, count: int, block_ms: int) -> tuple[Any, ...]:
        return ("QLEASE", self.queue, "COUNT", count, "BLOCK", block_ms)

    def leased(self, reply: Any) -> list[tuple[bytes, bytes]]:
        if not reply:
            return []
        return [(item[0], item[1]) for item in reply]

    def complete(self, ids: list[bytes]) -> tuple[Any, ...]:
        return ("QCOMPLETE", self.queue, *ids)


class RedisStreamDialect(Dialect):
    name = "redis"

    def __init__(self, stream: str = "bench", group: str = "g") -> None:
        self.stream = stream
        self.group = group

    async def setup(self, conn: Conn) -> None:
        await conn.call("DEL", self.stream)
        reply = await conn.call("XGROUP", "CREATE", self.stream, self.group, "$", "MKSTREAM")
        if isinstance(reply, hiredis.ReplyError):
            raise RuntimeError(f"XGROUP CREATE: {reply}")

    def produce(self, payloads: list[bytes]) -> list[tuple[Any, ...]]:
        return [("XADD", self.stream, "*", "f", p) for p in payloads]

    def produced(self, replies: list[Any]) -> int:
        return sum(1 for r in replies if isinstance(r, bytes))

    def lease(self, consumer: str, count: int, block_ms: int) -> tuple[Any, ...]:
        return (
            "XREADGROUP",
            "GROUP",
            self.group,
            consumer,
            "COUNT",
            count,
            "BLOCK",
            block_ms,
            "STREAMS",
            self.stream,
            ">",
        )

    def leased(self, reply: Any) -> list[tuple[bytes, bytes]]:
        if not reply:
            return []
        out = []
        for _stream, entries in reply:
            for entry_id, fields in entries:
                out.append((entry_id, fields[1] if fields else b""))
        return out

    def complete(self, ids: list[bytes]) -> tuple[Any, ...]:
        return ("XACK", self.stream, self.group, *ids)


def dialect_for(target: str) -> Dialect:
    if target == "querator":
        return QueratorDialect()
    if target == "redis":
        return RedisStreamDialect()
    raise ValueError(f"target must be querator or redis, not {target!r}")


def _error_key(reply: Any) -> str:
    return str(reply)[:120]


Ports = int | Sequence[int]


def port_list(port: Ports) -> list[int]:
    """One port, or several: the nodes of one Querator (SPEC 9), to which clients are dealt in turn."""
    return [port] if isinstance(port, int) else list(port)


async def setup_everywhere(ports: list[int], dialect: Dialect, timeout: float = 5.0) -> None:
    """Set the queue up through the first node and wait until every other node knows it: SPEC 9 gives an
    admin change up to 1 s to hold on every node, and a produce there before that would get NOQUEUE."""
    conn = await Conn.open(ports[0])
    try:
        await dialect.setup(conn)
    finally:
        await conn.close()
    if not isinstance(dialect, QueratorDialect):
        return
    deadline = time.monotonic() + timeout
    for port in ports[1:]:
        conn = await Conn.open(port)
        try:
            while isinstance(reply := await conn.call("QLEN", dialect.queue), hiredis.ReplyError):
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"queue {dialect.queue} unknown on port {port} after {timeout}s: {reply}"
                    )
                await asyncio.sleep(0.05)
        finally:
            await conn.close()


async def complete_leased(
    conn: Conn, dialect: Dialect, got: list[tuple[Any, Any]], errors: Counter[str]
) -> bool | None:
    """Complete (QCOMPLETE / XACK) what one lease returned. None after an error reply (counted in
    `errors`), else whether the server acknowledged every id."""
    ack = await conn.call(*dialect.complete([i for i, _ in got]))
    if isinstance(ack, hiredis.ReplyError):
        errors[f"complete: {_error_key(ack)}"] += 1
        return None
    return bool(ack == len(got))


@dataclass
class CycleResult:
    items: int  # items completed (acknowledged) in time
    target_items: int
    produced: int
    elapsed: float  # seconds from the first produce to the last completion
    items_per_s: float
    timed_out: bool
    max_stall_ms: float  # longest gap between two completions once completions started
    client_cpu: float  # load generator CPU seconds / elapsed (near 1.0 means the client is the limit)
    short_completes: int = 0  # completions that acknowledged fewer ids than were sent
    errors: dict[str, int] = field(default_factory=dict)


async def cycle(
    port: Ports,
    dialect: Dialect,
    *,
    producers: int = 8,
    consumers: int = 8,
    count: int = 1,
    batch: int | None = None,
    items: int = 20_000,
    payload_size: int = 16,
    time_limit: float = 60.0,
) -> CycleResult:
    """Chained produce -> lease -> complete; returns end-to-end items/s. With several ports, producers and
    consumers are each dealt over them in turn (8 + 8 on 2 nodes: 4 + 4 on each)."""
    ports = port_list(port)
    batch = batch or count
    payload = b"x" * payload_size
    errors: Counter[str] = Counter()
    per_producer = math.ceil(items / producers)
    target = per_producer * producers
    produced = 0
    completed = 0
    short_completes = 0
    last_completion = 0.0
    max_stall = 0.0
    t_end = 0.0
    done = asyncio.Event()

    await setup_everywhere(ports, dialect)
    pconns = [await Conn.open(ports[i % len(ports)]) for i in range(producers)]
    cconns = [await Conn.open(ports[i % len(ports)]) for i in range(consumers)]
    deadline = time.monotonic() + time_limit

    async def produce(conn: Conn) -> None:
        nonlocal produced
        left = per_producer
        failures = 0
        while left > 0 and time.monotonic() < deadline and not done.is_set():
            k = min(batch, left)
            replies = await conn.pipeline(dialect.produce([payload] * k))
            ok = dialect.produced(replies)
            for r in replies:
                if isinstance(r, hiredis.ReplyError):
                    errors[f"produce: {_error_key(r)}"] += 1
            produced += ok
            left -= ok
            if ok < k:
                failures += 1
                if failures > 100:
                    errors["produce: gave up after 100 failed calls"] += 1
                    return
                await asyncio.sleep(0.01)

    async def consume(conn: Conn, name: str) -> None:
        nonlocal completed, short_completes, last_completion, max_stall, t_end
        while not done.is_set() and time.monotonic() < deadline:
            reply = await conn.call(*dialect.lease(name, count, BLOCK_MS))
            if isinstance(reply, hiredis.ReplyError):
                errors[f"lease: {_error_key(reply)}"] += 1
                await asyncio.sleep(0.01)
                continue
            got = dialect.leased(reply)
            if not got:
                continue
            acked = await complete_leased(conn, dialect, got, errors)
            if acked is None:
                continue
            if not acked:
                short_completes += 1
            now = time.perf_counter()
            if last_completion:
                max_stall = max(max_stall, now - last_completion)
            last_completion = now
            completed += len(got)
            if completed >= target and not done.is_set():
                t_end = now
                done.set()

    cpu0 = time.process_time()
    t0 = time.perf_counter()
    tasks = [asyncio.ensure_future(consume(c, f"c{i}")) for i, c in enumerate(cconns)]
    tasks += [asyncio.ensure_future(produce(c)) for c in pconns]
    try:
        # Consumers return within BLOCK_MS of the deadline; the extra margin catches a server that stalls.
        await asyncio.wait_for(asyncio.gather(*tasks), time_limit + BLOCK_MS / 1000 + 10)
    except TimeoutError:
        errors["load generator: tasks still blocked after the time limit (server stall?)"] += 1
    except (ConnectionError, OSError) as exc:
        errors[f"connection: {exc}"] += 1
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for c in pconns + cconns:
            await c.close()
    timed_out = completed < target
    end = t_end if t_end else (last_completion or time.perf_counter())
    elapsed = max(end - t0, 1e-9)
    cpu = time.process_time() - cpu0
    return CycleResult(
        items=completed,
        target_items=target,
        produced=produced,
        elapsed=elapsed,
        items_per_s=completed / elapsed,
        timed_out=timed_out,
        max_stall_ms=max_stall * 1000,
        client_cpu=cpu / elapsed,
        short_completes=short_completes,
        errors=dict(errors),
    )


@dataclass
class HandoffResult:
    sent: int
    received: int
    rate: float  # the target items/s
    achieved_rate: float  # items/s the producer actually sent at
    p50_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    # From the last send to the last receive: near the p50 when the consumers keep up; much larger when
    # they fell behind and the latencies measure a backlog rather than the handoff itself.
    drain_ms: float
    client_cpu: float
    errors: dict[str, int] = field(default_factory=dict)


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list (nan when empty)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


async def handoff(
    port: Ports,
    dialect: Dialect,
    *,
    rate: float = 1000.0,
    duration: float = 3.0,
    consumers: int = 8,
    time_limit: float = 30.0,
) -> HandoffResult:
    """Latency from produce to a blocked consumer receiving the item, at a fixed open-loop rate. With several
    ports, the producer uses the first and the consumers are dealt over the others: every item crosses from
    one node to another (SPEC 9's cross-node handoff)."""
    ports = port_list(port)
    consumer_ports = ports[1:] or ports
    total = int(rate * duration)
    errors: Counter[str] = Counter()
    latencies: list[int] = []
    last_receive = 0.0
    done = asyncio.Event()
    deadline = time.monotonic() + time_limit

    await setup_everywhere(ports, dialect)
    pconn = await Conn.open(ports[0])
    cconns = [await Conn.open(consumer_ports[i % len(consumer_ports)]) for i in range(consumers)]

    async def consume(conn: Conn, name: str) -> None:
        nonlocal last_receive
        while not done.is_set() and time.monotonic() < deadline:
            reply = await conn.call(*dialect.lease(name, 1, BLOCK_MS))
            now = time.perf_counter_ns()
            if isinstance(reply, hiredis.ReplyError):
                errors[f"lease: {_error_key(reply)}"] += 1
                await asyncio.sleep(0.01)
                continue
            got = dialect.leased(reply)
            if not got:
                continue
            for _id, payload in got:
                latencies.append(now - int(payload))
            last_receive = now / 1e9
            await complete_leased(conn, dialect, got, errors)
            if len(latencies) >= total:
                done.set()

    replies_left = total

    async def read_produce_replies() -> None:
        nonlocal replies_left
        while replies_left > 0:
            reply = await pconn.read()
            replies_left -= 1
            if isinstance(reply, hiredis.ReplyError):
                errors[f"produce: {_error_key(reply)}"] += 1

    cpu0 = time.process_time()
    ctasks = [asyncio.ensure_future(consume(c, f"c{i}")) for i, c in enumerate(cconns)]
    reader_task = asyncio.ensure_future(read_produce_replies())
    sent = 0
    t_first = t_last = 0.0
    try:
        await asyncio.sleep(0.3)  # let every consumer block in its lease first
        t0 = time.perf_counter()
        interval = 1.0 / rate
        for i in range(total):
            if time.monotonic() >= deadline:
                errors["producer: time limit reached"] += 1
                break
            delay = t0 + i * interval - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            stamp = str(time.perf_counter_ns()).encode()
            pconn.send(*dialect.produce([stamp])[:1])
            sent += 1
            if i % 16 == 0:
                await pconn.drain()
        await pconn.drain()
        t_first, t_last = t0, time.perf_counter()
        # Wait for the stragglers, bounded.
        wait_until = min(deadline, time.monotonic() + 10.0)
        while len(latencies) < sent and time.monotonic() < wait_until:
            await asyncio.sleep(0.01)
        done.set()
        await asyncio.wait_for(asyncio.gather(*ctasks), BLOCK_MS / 1000 + 10)
        await asyncio.wait_for(reader_task, 10)
    except TimeoutError:
        errors["load generator: tasks still blocked after the time limit (server stall?)"] += 1
    except (ConnectionError, OSError) as exc:
        errors[f"connection: {exc}"] += 1
    finally:
        done.set()
        for task in [*ctasks, reader_task]:
            task.cancel()
        await asyncio.gather(*ctasks, reader_task, return_exceptions=True)
        await pconn.close()
        for c in cconns:
            await c.close()
    wall = max(t_last - t_first, 1e-9)
    ms = sorted(v / 1e6 for v in latencies)
    if len(ms) < sent:
        errors[f"lost: {sent - len(ms)} of {sent} items never reached a consumer"] += 1
    return HandoffResult(
        sent=sent,
        received=len(ms),
        rate=rate,
        achieved_rate=sent / wall if sent > 1 else 0.0,
        p50_ms=percentile(ms, 0.50),
        p99_ms=percentile(ms, 0.99),
        max_ms=ms[-1] if ms else math.nan,
        mean_ms=sum(ms) / len(ms) if ms else math.nan,
        drain_ms=max(0.0, last_receive - t_last) * 1000 if ms and t_last else math.nan,
        client_cpu=(time.process_time() - cpu0) / max(wall, 1e-9),
        errors=dict(errors),
    )


@dataclass
class ProduceResult:
    items: int  # items the replies say were stored
    elapsed: float
    items_per_s: float
    client_cpu: float
    errors: dict[str, int] = field(default_factory=dict)


async def produce_batch(
    port: Ports, dialect: Dialect, *, clients: int = 50, batch: int = 100, seconds: float = 3.0
) -> ProduceResult:
    """`clients` connections (dealt over the ports in turn), each sending one produce of `batch` items and
    waiting for its reply, for `seconds`: bench.run's produce-batch (`redis-benchmark -c 50 QPRODUCE q
    ITEMS v x100`) in a shape that spans several nodes, and the same as bench/pgqueue.py's produce_batch."""
    ports = port_list(port)
    errors: Counter[str] = Counter()
    stored = 0
    await setup_everywhere(ports, dialect)
    conns = [await Conn.open(ports[i % len(ports)]) for i in range(clients)]
    commands = dialect.produce([b"v"] * batch)
    stop_at = 0.0

    async def producer(conn: Conn) -> None:
        nonlocal stored
        while time.perf_counter() < stop_at:
            replies = await conn.pipeline(commands)
            for r in replies:
                if isinstance(r, hiredis.ReplyError):
                    errors[f"produce: {_error_key(r)}"] += 1
            stored += dialect.produced(replies)

    cpu0 = time.process_time()
    t0 = time.perf_counter()
    stop_at = t0 + seconds
    try:
        await asyncio.wait_for(asyncio.gather(*(producer(c) for c in conns)), seconds + 30)
    except TimeoutError:
        errors["load generator: producers still running 30 s after the end (server stall?)"] += 1
    except (ConnectionError, OSError) as exc:
        errors[f"connection: {exc}"] += 1
    finally:
        for c in conns:
            await c.close()
    elapsed = time.perf_counter() - t0
    return ProduceResult(
        stored, elapsed, stored / elapsed, (time.process_time() - cpu0) / elapsed, dict(errors)
    )


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run on uvloop when it is installed (it is a Querator dependency), else on asyncio's loop."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.run(coro)
    runner: Callable[[Coroutine[Any, Any, T]], T] = uvloop.run
    return runner(coro)


def run_cycle(port: Ports, target: str, **kwargs: Any) -> CycleResult:
    return run_async(cycle(port, dialect_for(target), **kwargs))


def run_produce_batch(port: Ports, target: str, **kwargs: Any) -> ProduceResult:
    return run_async(produce_batch(port, dialect_for(target), **kwargs))


def run_handoff(port: Ports, target: str, **kwargs: Any) -> HandoffResult:
    return run_async(handoff(port, dialect_for(target), **kwargs))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--port",
        type=int,
        nargs="+",
        required=True,
        help="one port, or several (the clients dealt over them)",
    )
    parser.add_argument("--target", choices=["querator", "redis"], required=True)
    sub = parser.add_subparsers(dest="mode", required=True)
    c = sub.add_parser("cycle")
    c.add_argument("--producers", type=int, default=8)
    c.add_argument("--consumers", type=int, default=8)
    c.add_argument("--count", type=int, default=1)
    c.add_argument("--batch", type=int, default=None, help="items per produce round trip (default: --count)")
    c.add_argument("--items", type=int, default=20_000)
    c.add_argument("--time-limit", type=float, default=60.0)
    h = sub.add_parser("handoff")
    h.add_argument("--rate", type=float, default=1000.0)
    h.add_argument("--duration", type=float, default=3.0)
    h.add_argument("--consumers", type=int, default=8)
    h.add_argument("--time-limit", type=float, default=30.0)
    args = parser.parse_args(argv)
    ports: Ports = args.port[0] if len(args.port) == 1 else args.port
    result: Any
    if args.mode == "cycle":
        result = run_cycle(
            ports,
            args.target,
            producers=args.producers,
            consumers=args.consumers,
            count=args.count,
            batch=args.batch,
            items=args.items,
            time_limit=args.time_limit,
        )
    else:
        result = run_handoff(
            ports,
            args.target,
            rate=args.rate,
            duration=args.duration,
            consumers=args.consumers,
            time_limit=args.time_limit,
        )
    print(json.dumps(asdict(result), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
