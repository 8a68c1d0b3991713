"""What `querator.client`'s worker costs over the raw lease loop of `bench.loadgen`, at the same concurrency.

Each round runs, alternately, the same end-to-end cycle (`--producers` connections sending `QPRODUCE q ITEMS
...` of `--batch` items until `--items` are produced, while consumers lease and complete them):
* `raw`: `bench.loadgen.cycle` itself: `--concurrency` connections, each `QLEASE q COUNT 1 BLOCK 1000` +
  `QCOMPLETE`, so that many items are in flight;
* `async`: `AsyncWorker(concurrency=N)` with an async no-op handler, on the same event loop (uvloop);
* `sync`: `Worker(concurrency=N)` with a plain no-op handler (run in its thread pool, on its own loop).
items/s is items completed over the time from the first produce to the last completion (the worker modes
poll QSTATS every 10 ms for it). Overhead = 1 - worker items/s / raw items/s on the medians; the goal is
at most 25 %.

    .venv/bin/python -m bench.worker_overhead [--items 20000] [--rounds 3] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import threading
import time
from collections.abc import Awaitable, Callable

from bench.loadgen import Conn, QueratorDialect, cycle, run_async
from bench.servers import QueratorServer, call
from querator.client import AsyncWorker, Item, Worker

POLL_S = 0.01


async def produce(port: int, queue: str, producers: int, batch: int, items: int) -> None:
    """`producers` connections, each sending its share of `items` in QPRODUCE calls of `batch` items."""

    async def one(share: int) -> None:
        conn = await Conn.open(port)
        try:
            for start in range(0, share, batch):
                await conn.call("QPRODUCE", queue, "ITEMS", *[b"x" * 16] * min(batch, share - start))
        finally:
            await conn.close()

    share = items // producers
    await asyncio.gather(*(one(share) for _ in range(producers)))


async def wait_completed(port: int, queue: str, items: int, limit: float = 120.0) -> None:
    conn = await Conn.open(port)
    deadline = time.monotonic() + limit
    try:
        while True:
            stats = await conn.call("QSTATS", queue)
            if stats[stats.index(b"completed") + 1] >= items:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{queue}: not every item completed within {limit} s")
            await asyncio.sleep(POLL_S)
    finally:
        await conn.close()


async def _noop(item: Item) -> None:
    return None


async def worker_cycle(port: int, args: argparse.Namespace, queue: str, sync: bool) -> float:
    """items/s of producers + a worker on a fresh queue, timed like loadgen's cycle."""
    call(port, "QCREATE", queue)
    url = f"redis://127.0.0.1:{port}"
    options = {"concurrency": args.concurrency, "block_ms": 1000, "handle_signals": False}
    stop: Callable[[], None]
    waiting: Awaitable[object]
    if sync:
        worker = Worker(url, queue, lambda item: None, **options)
        thread = threading.Thread(target=worker.run)
        thread.start()
        stop, waiting = worker.stop, asyncio.to_thread(thread.join)
    else:
        async_worker = AsyncWorker(url, queue, _noop, **options)
        stop, waiting = async_worker.stop, asyncio.create_task(async_worker.run())
    await asyncio.sleep(0.2)  # the worker is up and blocked in its first lease, as loadgen's consumers are
    started = time.perf_counter()
    await asyncio.gather(
        produce(port, queue, args.producers, args.batch, args.items), wait_completed(port, queue, args.items)
    )
    elapsed = time.perf_counter() - started
    stop()
    await waiting
    return args.items / elapsed


async def raw_cycle(port: int, args: argparse.Namespace) -> float:
    result = await cycle(
        port,
        QueratorDialect(),
        producers=args.producers,
        consumers=args.concurrency,
        count=1,
        batch=args.batch,
        items=args.items,
    )
    if result.errors or result.timed_out:
        raise RuntimeError(f"raw cycle failed: {result.errors}")
    return result.items_per_s


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.worker_overhead", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--producers", type=int, default=8)
    parser.add_argument("--batch", type=int, default=100, help="items per QPRODUCE")
    parser.add_argument("--backend", choices=["memory", "rocksdb"], default="memory")
    args = parser.parse_args(argv)
    results: dict[str, list[float]] = {"raw": [], "async": [], "sync": []}
    with QueratorServer(backend=args.backend, durability="fsync") as server:
        for round_ in range(args.rounds):
            for mode in results:  # alternating, so drift on a shared machine hits every mode alike
                if mode == "raw":
                    rate = run_async(raw_cycle(server.port, args))
                else:
                    rate = run_async(worker_cycle(server.port, args, f"{mode}-{round_}", sync=mode == "sync"))
                results[mode].append(rate)
                print(f"round {round_ + 1} {mode:5s} {rate:9,.0f} items/s", flush=True)
    raw = statistics.median(results["raw"])
    print(
        f"\nconcurrency {args.concurrency}, {args.producers} producers x QPRODUCE of {args.batch}, "
        f"{args.items} items x {args.rounds} rounds, {args.backend} backend"
    )
    print(f"{'mode':6s} {'median items/s':>15s} {'range':>21s} {'overhead':>9s}")
    for mode, rates in results.items():
        median = statistics.median(rates)
        print(f"{mode:6s} {median:15,.0f} {min(rates):10,.0f}-{max(rates):<10,.0f} {1 - median / raw:9.1%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
