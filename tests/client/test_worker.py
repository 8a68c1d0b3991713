"""`Worker` and `AsyncWorker` against a real server: every sentence of SPEC section 10 about the worker
that holds on a server without SPEC section 7 (those that need REASON are in test_client_features.py)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from querator.client import AsyncWorker, Client, Item, NoQueue, Worker
from querator.client.backoff import backoff_ms, reason_of
from tests.client.conftest import running, wait_until

ROOT = Path(__file__).resolve().parents[2]


def test_backoff_is_exponential_capped_and_jittered() -> None:
    for attempts in range(1, 30):
        ceiling = min(300_000, 1000 * 2 ** (attempts - 1))
        assert backoff_ms(attempts, 1000, 300_000, rand=lambda: 0.0) == ceiling // 2
        assert backoff_ms(attempts, 1000, 300_000, rand=lambda: 1.0) == ceiling
    assert backoff_ms(1000, 1000, 300_000, rand=lambda: 1.0) == 300_000


def test_reason_is_the_exception_text_bounded() -> None:
    assert reason_of(ValueError("bad input")) == "bad input"
    assert reason_of(KeyError()) == "KeyError"
    assert len(reason_of(ValueError("é" * 5000)).encode()) <= 4096


def test_each_of_500_items_is_processed_exactly_once_at_concurrency_8(
    admin: Client, url: str, new_queue: Callable[..., str], protocol: int
) -> None:
    name = new_queue(partitions=2)
    payloads = [f"item-{i}".encode() for i in range(500)]
    for start_at in range(0, 500, 100):
        admin.produce(name, payloads[start_at : start_at + 100])
    seen: Counter[bytes] = Counter()
    lock = threading.Lock()
    busy = 0
    peak = 0

    def handler(item: Item) -> None:
        nonlocal busy, peak
        with lock:
            busy += 1
            peak = max(peak, busy)
        time.sleep(0.001)
        with lock:
            busy -= 1
            seen[item.payload] += 1

    worker = Worker(url, name, handler, concurrency=8, redis_options={"protocol": protocol})
    with running(worker):
        wait_until(lambda: admin.stats(name).completed == 500, timeout=60)
    assert seen == Counter(payloads)
    assert 1 < peak <= 8
    stats = admin.stats(name)
    assert (stats.total, stats.retried, stats.lease_expired) == (0, 0, 0)


def test_a_handler_slower_than_the_lease_keeps_its_item(
    admin: Client, url: str, new_queue: Callable[..., str]
) -> None:
    name = new_queue(lease_timeout=1000)
    admin.produce(name, [b"slow-1", b"slow-2"])
    calls: Counter[bytes] = Counter()

    def handler(item: Item) -> None:
        calls[item.payload] += 1
        time.sleep(2.5)  # two and a half leases: only extensions keep it

    worker = Worker(url, name, handler, concurrency=2)
    with running(worker):
        wait_until(lambda: admin.stats(name).completed == 2, timeout=20)
    stats = admin.stats(name)
    assert stats.lease_expired == 0
    assert calls == Counter({b"slow-1": 1, b"slow-2": 1})


def test_it_never_holds_more_than_it_can_start_within_one_lease(
    admin: Client, url: str, new_queue: Callable[..., str]
) -> None:
    # Handlers take longer than the lease, so no leased item may wait for a slot: each starts at once.
    name = new_queue(lease_timeout=1000)
    admin.produce(name, [b"x"] * 8)
    lease_left_at_start: list[float] = []

    def on_start(item: Item) -> None:
        lease_left_at_start.append(item.lease_deadline - time.time() * 1000)

    worker = Worker(url, name, lambda item: time.sleep(1.2), concurrency=2, batch=10, on_start=on_start)
    with running(worker):
        wait_until(lambda: admin.stats(name).completed == 8, timeout=20)
    assert len(lease_left_at_start) == 8
    assert min(lease_left_at_start) > 700  # started within 300 ms of its lease, never after a wait
    assert admin.stats(name).lease_expired == 0


def test_graceful_stop_hands_back_unstarted_items_at_once(
    admin: Client, url: str, new_queue: Callable[..., str]
) -> None:
    name = new_queue(lease_timeout=60_000)
    admin.produce(name, [f"{i}".encode() for i in range(20)])
    # One slot and fast-enough handlers: the worker prefetches up to `batch` items behind the running one.
    worker = Worker(url, name, lambda item: time.sleep(0.3), concurrency=1, batch=5)
    with running(worker):
        wait_until(lambda: admin.stats(name).leased == 6, timeout=10)
        stopped_at = time.monotonic()
    assert time.monotonic() - stopped_at < 2  # far less than the 60 s lease
    stats = admin.stats(name)
    assert stats.leased == 0
    assert stats.ready == 20 - stats.completed
    assert stats.retried == 5  # the unstarted items went back by QRETRY, not by lease expiry
    assert stats.lease_expired == 0


def test_running_handlers_past_the_grace_period_give_their_items_back(
    admin: Client, url: str, new_queue: Callable[..., str]
) -> None:
    name = new_queue(lease_timeout=60_000)
    admin.produce(name, [b"stuck"])
    started = threading.Event()

    async def handler(item: Item) -> None:
        started.set()
        await asyncio.sleep(30)

    worker = Worker(url, name, handler, grace_ms=200)
    with running(worker):
        assert started.wait(10)
    stats = admin.stats(name)
    assert (stats.leased, stats.ready, stats.completed) == (0, 1, 0)


def test_a_plain_handler_past_the_grace_period_does_not_hold_up_the_stop(
    admin: Client, url: str, new_queue: Callable[..., str]
) -> None:
    name = new_queue(lease_timeout=60_000)
    admin.produce(name, [b"stuck"])
    started = threading.Event()

    def handler(item: Item) -> None:
        started.set()
        time.sleep(3)  # a thread cannot be interrupted: the worker returns without it

    # A short BLOCK: the stop waits for the lease in flight, and this test times the grace period only.
    with running(Worker(url, name, handler, grace_ms=200, block_ms=200)):
        assert started.wait(10)
        stopped_at = time.monotonic()
    assert time.monotonic() - stopped_at < 2
    stats = admin.stats(name)
    assert (stats.leased, stats.ready, stats.completed) == (0, 1, 0)


def test_stop_lets_running_handlers_finish_within_the_grace_period(
    admin: Client, url: str, new_queue: Callable[..., str]
) -> None:
    name = new_queue()
    admin.produce(name, [b"a", b"b"])
    started = threading.Barrier(3)

    def handler(item: Item) -> None:
        started.wait(10)
        time.sleep(0.5)

    worker = Worker(url, name, handler, concurrency=2)
    with running(worker):
        started.wait(10)
    assert admin.stats(name).completed == 2


def test_async_worker_runs_async_handlers(url: str, admin: Client, new_queue: Callable[..., str]) -> None:
    name = new_queue()
    admin.produce(name, [f"{i}".encode() for i in range(100)])
    seen: list[bytes] = []

    async def main() -> None:
        worker: AsyncWorker

        async def handler(item: Item) -> None:
            await asyncio.sleep(0.001)
            seen.append(item.payload)
            if len(seen) == 100:
                worker.stop()

        worker = AsyncWorker(url, name, handler, concurrency=4, handle_signals=False)
        await asyncio.wait_for(worker.run(), 30)

    asyncio.run(main())
    assert sorted(seen) == sorted(f"{i}".encode() for i in range(100))
    assert admin.stats(name).completed == 100


def test_async_worker_runs_plain_handlers_in_threads(
    url: str, admin: Client, new_queue: Callable[..., str]
) -> None:
    name = new_queue()
    admin.produce(name, [b"a", b"b", b"c"])
    threads: set[str] = set()

    async def main() -> None:
        worker = AsyncWorker(
            url, name, lambda item: threads.add(threading.current_thread().name), handle_signals=False
        )
        task = asyncio.create_task(worker.run())
        while admin.stats(name).completed < 3:
            await asyncio.sleep(0.02)
        worker.stop()
        await asyncio.wait_for(task, 10)

    asyncio.run(main())
    assert threads and all(t.startswith("querator-worker") for t in threads)


def test_hooks_see_start_and_success(url: str, admin: Client, new_queue: Callable[..., str]) -> None:
    name = new_queue()
    admin.produce(name, [b"a", b"b"])
    events: list[tuple[str, bytes]] = []

    def on_success(item: Item, seconds: float) -> None:
        assert seconds >= 0
        events.append(("success", item.payload))

    worker = Worker(
        url,
        name,
        lambda item: None,
        on_start=lambda item: events.append(("start", item.payload)),
        on_success=on_success,
    )
    with running(worker):
        wait_until(lambda: admin.stats(name).completed == 2)
    assert sorted(events) == [("start", b"a"), ("start", b"b"), ("success", b"a"), ("success", b"b")]


def test_a_failing_hook_does_not_lose_the_item(
    url: str, admin: Client, new_queue: Callable[..., str]
) -> None:
    name = new_queue()
    admin.produce(name, [b"a"])

    def broken(item: Item) -> None:
        raise RuntimeError("metrics down")

    worker = Worker(url, name, lambda item: None, on_start=broken)
    with running(worker):
        wait_until(lambda: admin.stats(name).completed == 1)


def test_a_missing_queue_fails_at_once(url: str) -> None:
    with pytest.raises(NoQueue):
        Worker(url, "no-such-queue", lambda item: None).run()


def test_stop_before_run_returns_at_once(url: str, new_queue: Callable[..., str]) -> None:
    worker = Worker(url, new_queue(), lambda item: None)
    worker.stop()
    started = time.monotonic()
    worker.run()
    assert time.monotonic() - started < 1


_SIGNALLED = """
import sys, time
from querator.client import Worker
def handler(item):
    print("started", flush=True)
    time.sleep(1.0)
Worker(sys.argv[1], sys.argv[2], handler, concurrency=1).run()
print("stopped", flush=True)
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_the_worker_gracefully(
    url: str, admin: Client, new_queue: Callable[..., str], sig: signal.Signals
) -> None:
    name = new_queue()
    admin.produce(name, [b"a", b"b", b"c"])
    proc = subprocess.Popen(
        [sys.executable, "-c", _SIGNALLED, url, name],
        stdout=subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"started\n"
    proc.send_signal(sig)
    assert proc.wait(10) == 0
    assert proc.stdout.read() == b"stopped\n"
    stats = admin.stats(name)
    # The running handler finished; nothing is left leased.
    assert (stats.completed, stats.leased) == (1, 0)
