"""QSTATS / QLEN counters and the configurable limits (max_batch, max_item_bytes)."""

from __future__ import annotations

import asyncio

import pytest

from querator.errors import CommandError
from querator.model import QueueOptions
from tests.support import run


def test_stats_of_new_queue_are_zero_with_one_entry_per_partition(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q", QueueOptions(partitions=3))
            s = await svc.queue_stats("q")
            assert (s.ready, s.leased, s.scheduled, s.total) == (0, 0, 0, 0)
            assert (s.produced, s.completed, s.retried, s.lease_expired, s.dead_lettered) == (0, 0, 0, 0, 0)
            assert (s.oldest_ready_age, s.waiting_consumers) == (0, 0)
            assert [(p.partition, p.ready, p.leased, p.scheduled, p.total) for p in s.partitions] == [
                (0, 0, 0, 0, 0),
                (1, 0, 0, 0, 0),
                (2, 0, 0, 0, 0),
            ]
            assert await svc.queue_length("q") == 0

    run(main())


def test_stats_count_every_state_and_counter(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("dlq")
            await svc.create_queue("q", QueueOptions(partitions=2, lease_timeout=1_000, dead_queue="dlq"))
            await svc.produce("q", [b"a", b"b", b"c", b"d"])  # partition 0
            await svc.produce("q", [b"s1", b"s2"], delay_ms=10_000)  # partition 1 (fewest ready)
            leased = await svc.lease("q", count=4)
            assert len(leased) == 4
            assert await svc.complete("q", [leased[0].id]) == 1
            assert await svc.retry("q", [leased[1].id]) == 1
            assert await svc.retry("q", [leased[2].id], dead=True) == 1
            # leased[3] stays leased; its lease then expires.
            s = await svc.queue_stats("q")
            assert (s.ready, s.leased, s.scheduled, s.total) == (1, 1, 2, 4)
            assert [(p.ready, p.leased, p.scheduled, p.total) for p in s.partitions] == [
                (1, 1, 0, 2),
                (0, 0, 2, 2),
            ]
            assert await svc.queue_length("q") == 1
            await env.advance(1_000)
            s = await svc.queue_stats("q")
            assert (s.produced, s.completed, s.retried, s.lease_expired, s.dead_lettered) == (6, 1, 2, 1, 1)
            assert (s.ready, s.leased, s.scheduled, s.total) == (2, 0, 2, 4)
            assert s.total == s.ready + s.leased + s.scheduled
            assert await svc.queue_length("q") == 2

    run(main())


def test_oldest_ready_age_follows_the_head_item(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q", QueueOptions(partitions=2))
            await svc.produce("q", [b"a"])  # partition 0 at t0
            await env.advance(300)
            await svc.produce("q", [b"b"])  # partition 1 at t0+300
            await env.advance(200)
            assert (await svc.queue_stats("q")).oldest_ready_age == 500
            (first,) = await svc.lease("q")
            assert first.payload == b"a"
            assert (await svc.queue_stats("q")).oldest_ready_age == 200
            await svc.lease("q")
            assert (await svc.queue_stats("q")).oldest_ready_age == 0

    run(main())


def test_oldest_ready_age_counts_from_requeue(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q")
            await svc.produce("q", [b"a"])
            await env.advance(1_000)
            (item,) = await svc.lease("q")
            await env.advance(50)
            await svc.retry("q", [item.id])
            await env.advance(25)
            assert (await svc.queue_stats("q")).oldest_ready_age == 25

    run(main())


def test_stats_waiting_consumers_counts_blocked_leases(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q")
            waiters = [svc.lease("q", block_ms=0) for _ in range(3)]
            await env.settle()
            assert (await svc.queue_stats("q")).waiting_consumers == 3
            waiters[0].cancel()
            await env.settle()
            assert (await svc.queue_stats("q")).waiting_consumers == 2
            await svc.produce("q", [b"a"])
            assert [i.payload for i in await asyncio.wait_for(waiters[1], 2)] == [b"a"]
            assert (await svc.queue_stats("q")).waiting_consumers == 1
            await svc.produce("q", [b"b"])
            await asyncio.wait_for(waiters[2], 2)
            assert (await svc.queue_stats("q")).waiting_consumers == 0

    run(main())


def test_dead_queue_stats_count_arrivals_as_ready(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("dlq")
            await svc.create_queue("q", QueueOptions(dead_queue="dlq"))
            await svc.produce("q", [b"a", b"b"])
            got = await svc.lease("q", count=2)
            await svc.retry("q", [i.id for i in got], dead=True)
            d = await svc.queue_stats("dlq")
            assert (d.ready, d.total, d.dead_lettered) == (2, 2, 0)
            assert await svc.queue_length("dlq") == 2

    run(main())


# -- limits -------------------------------------------------------------------------------------------------


def test_more_payloads_than_max_batch_is_rejected_and_nothing_stored(env) -> None:
    async def main() -> None:
        async with env.service(max_batch=3) as svc:
            await svc.create_queue("q")
            with pytest.raises(CommandError, match="too many items; at most 3"):
                await svc.produce("q", [b"a", b"b", b"c", b"d"])
            s = await svc.queue_stats("q")
            assert (s.total, s.produced) == (0, 0)
            assert len(await svc.produce("q", [b"a", b"b", b"c"])) == 3

    run(main())


def test_default_max_batch_is_1000_items(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q")
            with pytest.raises(CommandError, match="at most 1000"):
                await svc.produce("q", [b"x"] * 1001)
            assert len(await svc.produce("q", [b"x"] * 1000)) == 1000

    run(main())


@pytest.mark.parametrize("operation", ["complete", "retry", "extend", "remove"])
def test_more_ids_than_max_batch_is_rejected_and_nothing_applied(env, operation) -> None:
    async def main() -> None:
        async with env.service(max_batch=3) as svc:
            await svc.create_queue("q")
            await svc.produce("q", [b"a", b"b", b"c"])
            await svc.produce("q", [b"d"])
            leased = await svc.lease("q", count=4)
            ids = [i.id for i in leased]
            with pytest.raises(CommandError, match="too many ids; at most 3"):
                await getattr(svc, operation)("q", ids)
            items = await env.all_items(svc)
            assert [(i.id, i.state, i.lease_deadline) for i in items] == [
                (i.id, "leased", i.lease_deadline) for i in leased
            ]
            s = await svc.queue_stats("q")
            assert (s.completed, s.retried, s.leased) == (0, 0, 4)
            assert await getattr(svc, operation)("q", ids[:3]) == 3

    run(main())


def test_payload_over_max_item_bytes_is_rejected_and_nothing_of_the_call_stored(env) -> None:
    async def main() -> None:
        async with env.service(max_item_bytes=10) as svc:
            await svc.create_queue("q")
            with pytest.raises(CommandError, match="max-item-bytes is 10"):
                await svc.produce("q", [b"small", b"x" * 11, b"also"])
            s = await svc.queue_stats("q")
            assert (s.total, s.produced) == (0, 0)
            assert await env.all_items(svc) == []
            assert len(await svc.produce("q", [b"x" * 10, b""])) == 2

    run(main())


def test_default_max_item_bytes_is_one_mib(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q")
            with pytest.raises(CommandError, match="item payload too large"):
                await svc.produce("q", [b"x" * (1024 * 1024 + 1)])
            await svc.produce("q", [b"x" * (1024 * 1024)])
            (item,) = await svc.lease("q")
            assert len(item.payload) == 1024 * 1024

    run(main())
