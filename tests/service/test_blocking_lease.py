"""QLEASE ... BLOCK: waiting, waking, fair dealing among waiters, and consumers that go away.

Two tests measure a BLOCK timeout in real time (on the real clock, at most 100 ms each); every other
BLOCK deadline is driven by the manual clock, and everything else by produces.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from querator.model import QueueOptions
from tests.support import run


def test_blocking_lease_returns_empty_after_timeout(env) -> None:
    async def main() -> None:
        async with env.real_time_service() as svc:
            await svc.create_queue("q")
            started = time.monotonic()
            got = await asyncio.wait_for(svc.lease("q", block_ms=100), 5)
            elapsed = time.monotonic() - started
            assert got == []
            assert 0.09 <= elapsed < 2
            assert (await svc.queue_stats("q")).waiting_consumers == 0

    run(main())


def test_lease_without_block_never_waits(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q")
            future = svc.lease("q")
            if env.backend == "postgres":
                # It asks the database (another node may have produced), which takes real time; it still
                # does not join the waiting line, and the manual clock never moves here.
                assert await asyncio.wait_for(future, 10) == []
            else:
                await env.settle(2)
                assert future.done()
                assert await future == []
            assert (await svc.queue_stats("q")).waiting_consumers == 0

    run(main())


def test_blocking_lease_with_ready_items_returns_at_once(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q")
            await svc.produce("q", [b"a", b"b"])
            started = time.monotonic()
            got = await asyncio.wait_for(svc.lease("q", count=5, block_ms=200), 5)
            assert [i.payload for i in got] == [b"a", b"b"]
            assert time.monotonic() - started < 0.15

    run(main())


def test_produce_wakes_blocked_consumer(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q", QueueOptions(lease_timeout=4_000))
            waiting = svc.lease("q", block_ms=0)  # BLOCK 0: without limit
            await env.settle()
            assert not waiting.done()
            assert (await svc.queue_stats("q")).waiting_consumers == 1
            await svc.produce("q", [b"a"], kind=b"k")
            (item,) = await asyncio.wait_for(waiting, 2)
            assert (item.payload, item.kind, item.attempts) == (b"a", b"k", 1)
            assert item.lease_deadline == env.now() + 4_000
            stats = await svc.queue_stats("q")
            assert (stats.waiting_consumers, stats.ready, stats.leased) == (0, 0, 1)
            assert await svc.complete("q", [item.id]) == 1

    run(main())


def test_blocked_consumer_returns_as_soon_as_it_has_one_item(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q")
            waiting = svc.lease("q", count=5, block_ms=200)
            await env.settle()
            started = time.monotonic()
            await svc.produce("q", [b"a"])
            got = await asyncio.wait_for(waiting, 2)
            assert [i.payload for i in got] == [b"a"]
            assert time.monotonic() - started < 0.15

    run(main())


def test_scheduled_item_becoming_due_wakes_blocked_consumer(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q")
            await svc.produce("q", [b"later"], delay_ms=5_000)
            waiting = svc.lease("q", block_ms=0)
            await env.advance(4_999)
            assert not waiting.done()
            await env.advance(1)
            got = await asyncio.wait_for(waiting, 2)
            assert [i.payload for i in got] == [b"later"]

    run(main())


def test_expired_lease_wakes_blocked_consumer(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q", QueueOptions(lease_timeout=1_000))
            await svc.produce("q", [b"a"])
            (first,) = await svc.lease("q")
            waiting = svc.lease("q", block_ms=0)
            await env.advance(1_000)
            (again,) = await asyncio.wait_for(waiting, 2)
            assert (again.payload, again.attempts) == (b"a", 2)
            assert again.id != first.id

    run(main())


def _payloads(items) -> list[bytes]:
    return [i.payload for i in items]


def test_waiters_are_dealt_one_item_at_a_time_in_arrival_order(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q")
            w1 = svc.lease("q", count=2, block_ms=0)
            w2 = svc.lease("q", count=2, block_ms=0)
            w3 = svc.lease("q", count=2, block_ms=0)
            await env.settle()
            assert (await svc.queue_stats("q")).waiting_consumers == 3
            await svc.produce("q", [b"1", b"2", b"3", b"4"])
            got = await asyncio.wait_for(asyncio.gather(w1, w2, w3), 2)
            # Round 1 gives 1, 2, 3 to the three waiters in arrival order; round 2 gives 4 to the first.
            assert [_payloads(g) for g in got] == [[b"1", b"4"], [b"2"], [b"3"]]
            assert all(i.attempts == 1 for g in got for i in g)

    run(main())


def test_waiters_dealt_round_after_round_until_each_has_its_count(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q")
            waiters = [svc.lease("q", count=2, block_ms=0) for _ in range(3)]
            await env.settle()
            await svc.produce("q", [f"{i}".encode() for i in range(1, 8)])
            got = await asyncio.wait_for(asyncio.gather(*waiters), 2)
            assert [_payloads(g) for g in got] == [[b"1", b"4"], [b"2", b"5"], [b"3", b"6"]]
            assert [i.payload for i in await env.all_items(svc) if i.state == "ready"] == [b"7"]
            assert (await svc.queue_stats("q")).waiting_consumers == 0

    run(main())


def test_waiters_with_different_counts_share_fairly(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q")
            small = svc.lease("q", count=1, block_ms=0)
            big = svc.lease("q", count=3, block_ms=0)
            await env.settle()
            await svc.produce("q", [b"a", b"b", b"c"])
            got_small, got_big = await asyncio.wait_for(asyncio.gather(small, big), 2)
            assert _payloads(got_small) == [b"a"]
            assert _payloads(got_big) == [b"b", b"c"]

    run(main())


def test_later_items_go_to_waiters_still_waiting(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q")
            w1 = svc.lease("q", count=2, block_ms=0)
            w2 = svc.lease("q", count=2, block_ms=0)
            await env.settle()
            await svc.produce("q", [b"a"])
            assert _payloads(await asyncio.wait_for(w1, 2)) == [b"a"]
            assert not w2.done()
            await svc.produce("q", [b"b"])
            assert _payloads(await asyncio.wait_for(w2, 2)) == [b"b"]

    run(main())


def test_cancelled_waiter_is_never_given_items(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q")
            gone = svc.lease("q", count=2, block_ms=0)
            stays = svc.lease("q", count=1, block_ms=0)
            await env.settle()
            gone.cancel()
            await env.settle()
            await svc.produce("q", [b"a", b"b"])
            assert _payloads(await asyncio.wait_for(stays, 2)) == [b"a"]
            assert gone.cancelled()
            stats = await svc.queue_stats("q")
            assert (stats.ready, stats.leased, stats.waiting_consumers) == (1, 1, 0)
            (b,) = await svc.lease("q")
            assert (b.payload, b.attempts) == (b"b", 1)

    run(main())


def test_cancelled_waiter_task_leaves_items_available(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q", QueueOptions(partitions=2))

            async def consumer():
                return await svc.lease("q", count=3, block_ms=0)

            task = asyncio.create_task(consumer())
            await env.settle()
            assert (await svc.queue_stats("q")).waiting_consumers == 1
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await env.settle()
            assert (await svc.queue_stats("q")).waiting_consumers == 0
            await svc.produce("q", [b"a", b"b"])
            await env.settle()
            stats = await svc.queue_stats("q")
            assert (stats.ready, stats.leased) == (2, 0)
            got = await svc.lease("q", count=5)
            assert [(i.payload, i.attempts) for i in got] == [(b"a", 1), (b"b", 1)]

    run(main())


def test_waiter_cancelled_after_items_were_dealt_gives_them_back(env) -> None:
    """A consumer that goes away between the deal and the (fsync'd) reply must not keep the items.

    Only RocksDB with fsync has that window: the memory backend answers within the dealing step."""
    if env.backend == "memory":
        pytest.skip("the memory backend answers in the dealing step: there is no window to cancel in")

    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q")
            waiting = svc.lease("q", count=1, block_ms=0)
            await env.settle()
            svc.produce("q", [b"a"])
            for _ in range(10_000):
                await asyncio.sleep(0)
                if waiting.done() or (await svc.queue_stats("q")).leased:
                    break
            if waiting.done():
                pytest.skip("the fsync finished before the test could cancel")
            waiting.cancel()
            for _ in range(200):
                await asyncio.sleep(0.001)
                if (await svc.queue_stats("q")).ready:
                    break
            stats = await svc.queue_stats("q")
            assert (stats.ready, stats.leased) == (1, 0)
            (item,) = await svc.lease("q")
            assert (item.payload, item.attempts) == (b"a", 1)

    run(main())


def test_blocking_lease_cancelled_before_its_reply_gives_ready_items_back(env) -> None:
    """The connection cancels every pending reply when a client disconnects; a QLEASE ... BLOCK that
    took ready items but had not answered yet must not keep them (as the waiter path does)."""
    if env.backend == "memory":
        pytest.skip("the memory backend answers in the leasing step: there is no window to cancel in")

    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q")
            await svc.produce("q", [b"a"])
            leasing = svc.lease("q", block_ms=200)
            for _ in range(10_000):
                await asyncio.sleep(0)
                if leasing.done() or (await svc.queue_stats("q")).leased:
                    break
            if leasing.done():
                pytest.skip("the fsync finished before the test could cancel")
            leasing.cancel()
            for _ in range(200):
                await asyncio.sleep(0.001)
                if (await svc.queue_stats("q")).ready:
                    break
            stats = await svc.queue_stats("q")
            assert (stats.ready, stats.leased) == (1, 0)
            (item,) = await svc.lease("q")
            assert (item.payload, item.attempts) == (b"a", 1)

    run(main())


def test_blocking_lease_that_loses_the_race_waits_for_next_item(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q")
            await svc.produce("q", [b"a"])
            first = svc.lease("q")  # plans to take "a"
            second = svc.lease("q", block_ms=0)  # planned on "a" too, but comes after
            assert _payloads(await first) == [b"a"]
            await env.settle()
            assert not second.done()
            await svc.produce("q", [b"b"])
            assert _payloads(await asyncio.wait_for(second, 2)) == [b"b"]

    run(main())


def test_blocking_lease_that_loses_the_race_times_out_empty(env) -> None:
    async def main() -> None:
        async with env.real_time_service() as svc:
            await svc.create_queue("q")
            await svc.produce("q", [b"a"])
            first = svc.lease("q")
            second = svc.lease("q", block_ms=100)
            assert _payloads(await first) == [b"a"]
            assert await asyncio.wait_for(second, 2) == []
            assert (await svc.queue_stats("q")).waiting_consumers == 0

    run(main())


def test_blocked_consumer_on_partitioned_queue_gets_item_from_any_partition(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q", QueueOptions(partitions=3))
            await svc.produce("q", [b"x"])  # partition 0
            (x,) = await svc.lease("q")
            waiting = svc.lease("q", block_ms=0)
            await env.settle()
            await svc.produce("q", [b"y"])  # partition 1
            assert _payloads(await asyncio.wait_for(waiting, 2)) == [b"y"]
            assert await svc.complete("q", [x.id]) == 1

    run(main())
