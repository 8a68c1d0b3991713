"""Calls made one after the other apply in that order, even when awaited later (docs/adr/0005): a
pipelining client (QPRODUCE then QLEASE in one write) must see what a Redis user expects."""

from __future__ import annotations

import pytest

from querator.errors import ShutdownError
from querator.model import QueueOptions
from tests.support import run


def test_pipelined_produces_apply_in_call_order(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q")
            first = svc.produce("q", [b"a", b"b"])
            second = svc.produce("q", [b"c"])
            third = svc.produce("q", [b"d"])
            ids = [*(await third), *(await first), *(await second)]
            assert len(set(ids)) == 4
            got = await svc.lease("q", count=4)
            assert [i.payload for i in got] == [b"a", b"b", b"c", b"d"]

    run(main())


def test_pipelined_extend_then_complete_both_apply(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q")
            await svc.produce("q", [b"a"])
            (item,) = await svc.lease("q")
            extended = svc.extend("q", [item.id], lease_for_ms=5)
            completed = svc.complete("q", [item.id])
            again = svc.complete("q", [item.id])
            assert (await again, await completed, await extended) == (0, 1, 1)
            assert (await svc.queue_stats("q")).total == 0

    run(main())


def test_pipelined_complete_then_retry_only_first_counts(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q")
            await svc.produce("q", [b"a"])
            (item,) = await svc.lease("q")
            completed = svc.complete("q", [item.id])
            retried = svc.retry("q", [item.id])
            assert (await completed, await retried) == (1, 0)
            assert (await svc.queue_stats("q")).total == 0

    run(main())


def test_lease_called_right_after_produce_sees_its_items(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q")
            produced = svc.produce("q", [b"a"])
            leased = svc.lease("q")
            assert len(await produced) == 1
            got = await leased
            assert [i.payload for i in got] == [b"a"]

    run(main())


def test_lease_called_right_after_retry_sees_the_requeued_item(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q")
            await svc.produce("q", [b"a"])
            (item,) = await svc.lease("q")
            retried = svc.retry("q", [item.id])
            leased = svc.lease("q")
            assert await retried == 1
            got = await leased
            assert [(i.payload, i.attempts) for i in got] == [(b"a", 2)]

    run(main())


def test_length_and_stats_called_right_after_produce_count_its_items(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q")
            produced = svc.produce("q", [b"a", b"b"])
            length = svc.queue_length("q")
            stats = svc.queue_stats("q")
            await produced
            assert await length == 2
            s = await stats
            assert (s.ready, s.produced) == (2, 2)

    run(main())


def test_close_fails_blocked_consumers_and_later_calls_with_shutdown(env) -> None:
    async def main() -> None:
        svc = env.service()
        await svc.start()
        await svc.create_queue("q", QueueOptions(partitions=2))
        waiting = svc.lease("q", block_ms=0)
        await env.settle()
        await svc.close()
        with pytest.raises(ShutdownError, match="server is shutting down"):
            await waiting
        with pytest.raises(ShutdownError):
            await svc.produce("q", [b"a"])
        with pytest.raises(ShutdownError):
            await svc.create_queue("other")

    run(main())


def test_items_called_right_after_produce_lists_them(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q", QueueOptions(partitions=2))
            first = svc.produce("q", [b"a"])
            second = svc.produce("q", [b"b"], delay_ms=100)
            listed = svc.items("q")
            ids = [*(await first), *(await second)]
            assert [(i.id, i.payload, i.state) for i in await listed] == [
                (ids[0], b"a", "ready"),
                (ids[1], b"b", "scheduled"),
            ]

    run(main())


def test_stats_called_right_after_remove_and_lease_reflect_them(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q")
            (old,) = await svc.produce("q", [b"old"])
            await env.advance(500)
            await svc.produce("q", [b"mid"])
            await env.advance(200)
            await svc.produce("q", [b"new"])
            await env.advance(100)
            removed = svc.remove("q", [old])
            after_remove = svc.queue_stats("q")
            leased = svc.lease("q")
            after_lease = svc.queue_stats("q")
            assert await removed == 1
            s = await after_remove
            assert (s.ready, s.total, s.oldest_ready_age) == (2, 2, 300)
            assert [i.payload for i in await leased] == [b"mid"]
            s = await after_lease
            assert (s.ready, s.leased, s.oldest_ready_age) == (1, 1, 100)

    run(main())


def test_one_step_lease_skips_items_removed_before_it_and_takes_stored_then_new(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q")
            ids = await svc.produce("q", [b"a", b"b", b"c", b"d"])
            # One step: remove a stored item, produce two more, lease across both.
            removed = svc.remove("q", [ids[1]])
            produced = svc.produce("q", [b"e", b"f"])
            leased = svc.lease("q", count=4)
            assert await removed == 1
            await produced
            assert [i.payload for i in await leased] == [b"a", b"c", b"d", b"e"]
            stats = await svc.queue_stats("q")
            assert (stats.ready, stats.leased) == (1, 4)
        if env.backend == "memory":
            return
        async with env.service() as svc:  # what was written is what the replies said
            stats = await svc.queue_stats("q")
            assert (stats.ready, stats.leased) == (1, 4)
            assert [i.payload for i in await svc.lease("q", count=10)] == [b"f"]

    run(main())
