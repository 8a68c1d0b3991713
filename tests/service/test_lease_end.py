"""How a lease ends without completion: expiry, QRETRY (now, DELAY, AT, DEAD), max attempts."""

from __future__ import annotations

import asyncio

import pytest

from querator.errors import CommandError
from querator.model import QueueOptions, QueueUpdate
from tests.support import run

# -- lease expiry -----------------------------------------------------------------------------------------


def test_lease_expiry_requeues_at_tail_with_new_id(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q", QueueOptions(lease_timeout=1_000))
            await svc.produce("q", [b"a", b"b"])
            (a,) = await svc.lease("q")
            await env.advance(999)
            states = [(i.payload, i.state) for i in await env.all_items(svc)]
            assert states == [(b"a", "leased"), (b"b", "ready")]
            await env.advance(1)
            items = await env.all_items(svc)
            assert [(i.payload, i.state) for i in items] == [(b"b", "ready"), (b"a", "ready")]
            requeued = items[1]
            assert requeued.id != a.id
            assert requeued.attempts == 1
            assert requeued.lease_deadline == 0
            assert requeued.enqueue_at == env.now()
            got = await svc.lease("q", count=2)
            assert [(i.payload, i.attempts) for i in got] == [(b"b", 1), (b"a", 2)]
            assert got[1].id == requeued.id
            stats = await svc.queue_stats("q")
            assert stats.lease_expired == 1
            assert stats.retried == 0

    run(main())


def test_lease_expiry_keeps_attempts_across_several_requeues(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q", QueueOptions(lease_timeout=100))
            await svc.produce("q", [b"a"], kind=b"k", reference=b"r", encoding=b"e")
            ids = set()
            for attempt in range(1, 5):
                (item,) = await svc.lease("q")
                assert item.attempts == attempt
                assert (item.kind, item.reference, item.encoding) == (b"k", b"r", b"e")
                ids.add(item.id)
                await env.advance(100)
            assert len(ids) == 4
            assert (await svc.queue_stats("q")).lease_expired == 4

    run(main())


def test_lease_does_not_expire_without_clock_moving(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q", QueueOptions(lease_timeout=1))
            await svc.produce("q", [b"a"])
            (item,) = await svc.lease("q")
            await env.settle()
            (stored,) = await env.all_items(svc)
            assert (stored.id, stored.state) == (item.id, "leased")
            await env.advance(1)
            (stored,) = await env.all_items(svc)
            assert stored.state == "ready"

    run(main())


# -- retry ------------------------------------------------------------------------------------------------


def test_retry_now_puts_item_at_tail_with_new_id_and_counts(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q")
            await svc.produce("q", [b"a", b"b"])
            (a,) = await svc.lease("q")
            assert await svc.retry("q", [a.id, a.id]) == 1
            items = await env.all_items(svc)
            assert [(i.payload, i.state, i.attempts) for i in items] == [
                (b"b", "ready", 0),
                (b"a", "ready", 1),
            ]
            assert items[1].id != a.id
            stats = await svc.queue_stats("q")
            assert (stats.retried, stats.ready, stats.leased, stats.dead_lettered) == (1, 2, 0, 0)

    run(main())


def test_retry_not_leased_id_counts_zero(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q")
            (pid,) = await svc.produce("q", [b"a"])
            assert await svc.retry("q", [pid]) == 0
            assert await svc.retry("q", [pid], dead=True) == 0
            (stored,) = await env.all_items(svc)
            assert (stored.id, stored.state) == (pid, "ready")
            assert (await svc.queue_stats("q")).retried == 0

    run(main())


def test_retry_with_delay_is_scheduled_invisible_then_ready_at_due_time(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q")
            await svc.produce("q", [b"a"])
            (a,) = await svc.lease("q")
            assert await svc.retry("q", [a.id], delay_ms=500) == 1
            (stored,) = await env.all_items(svc)
            assert stored.state == "scheduled"
            assert stored.enqueue_at == env.now() + 500
            assert stored.attempts == 1
            stats = await svc.queue_stats("q")
            assert (stats.ready, stats.leased, stats.scheduled, stats.total) == (0, 0, 1, 1)
            assert await svc.queue_length("q") == 0
            assert await svc.lease("q") == []
            await env.advance(499)
            assert await svc.lease("q") == []
            assert (await env.all_items(svc))[0].state == "scheduled"
            await env.advance(1)
            (ready,) = await env.all_items(svc)
            assert ready.state == "ready"
            assert ready.id not in (a.id, stored.id)
            (again,) = await svc.lease("q")
            assert (again.payload, again.attempts) == (b"a", 2)

    run(main())


def test_retry_delays_become_ready_in_order_of_due_time(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q")
            await svc.produce("q", [b"a", b"b", b"c"])
            a, b, c = await svc.lease("q", count=3)
            assert await svc.retry("q", [a.id], delay_ms=300) == 1
            assert await svc.retry("q", [b.id], delay_ms=100) == 1
            assert await svc.retry("q", [c.id], delay_ms=200) == 1
            await env.advance(150)
            assert [i.payload for i in await svc.lease("q", count=3)] == [b"b"]
            await env.advance(1_000)
            assert [i.payload for i in await svc.lease("q", count=3)] == [b"c", b"a"]

    run(main())


def test_retry_at_ms_schedules_until_that_time(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q")
            await svc.produce("q", [b"a"])
            (a,) = await svc.lease("q")
            at = env.now() + 2_000
            assert await svc.retry("q", [a.id], at_ms=at) == 1
            (stored,) = await env.all_items(svc)
            assert (stored.state, stored.enqueue_at) == ("scheduled", at)
            await env.advance(1_999)
            assert await svc.lease("q") == []
            await env.advance(1)
            assert [i.payload for i in await svc.lease("q")] == [b"a"]

    run(main())


def test_retry_at_ms_in_the_past_is_ready_at_once(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q")
            await svc.produce("q", [b"a"])
            (a,) = await svc.lease("q")
            assert await svc.retry("q", [a.id], at_ms=env.now() - 10) == 1
            (stored,) = await env.all_items(svc)
            assert stored.state == "ready"

    run(main())


def test_retry_option_errors_apply_nothing(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q")
            await svc.produce("q", [b"a"])
            (a,) = await svc.lease("q")
            with pytest.raises(CommandError, match="DELAY must be at least 0"):
                await svc.retry("q", [a.id], delay_ms=-1)
            with pytest.raises(CommandError, match="AT must be at least 0"):
                await svc.retry("q", [a.id], at_ms=-1)
            with pytest.raises(CommandError, match="mutually exclusive"):
                await svc.retry("q", [a.id], delay_ms=1, at_ms=env.now() + 5)
            with pytest.raises(CommandError, match="mutually exclusive"):
                await svc.retry("q", [a.id], delay_ms=1, dead=True)
            with pytest.raises(CommandError, match="mutually exclusive"):
                await svc.retry("q", [a.id], at_ms=1, dead=True)
            (stored,) = await env.all_items(svc)
            assert (stored.id, stored.state) == (a.id, "leased")
            assert (await svc.queue_stats("q")).retried == 0

    run(main())


def test_retry_dead_moves_item_to_dead_queue_with_fields_kept(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("dlq")
            await svc.create_queue("q", QueueOptions(dead_queue="dlq"))
            await svc.produce("q", [b"payload"], kind=b"k", reference=b"r", encoding=b"e")
            (item,) = await svc.lease("q")
            await env.advance(50)
            assert await svc.retry("q", [item.id], dead=True) == 1
            assert (await svc.queue_stats("q")).total == 0
            (dead,) = await env.all_items(svc, "dlq")
            assert dead.state == "ready"
            assert (dead.payload, dead.kind, dead.reference, dead.encoding) == (b"payload", b"k", b"r", b"e")
            assert dead.attempts == 0
            assert dead.created_at == env.now()
            stats = await svc.queue_stats("q")
            assert (stats.retried, stats.dead_lettered) == (1, 1)
            assert (await svc.queue_stats("dlq")).ready == 1
            (again,) = await svc.lease("dlq")
            assert (again.payload, again.attempts) == (b"payload", 1)

    run(main())


def test_retry_dead_without_dead_queue_deletes_and_counts(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q")
            await svc.produce("q", [b"a", b"b"])
            a, b = await svc.lease("q", count=2)
            assert await svc.retry("q", [a.id, b.id], dead=True) == 2
            stats = await svc.queue_stats("q")
            assert (stats.total, stats.retried, stats.dead_lettered) == (0, 2, 2)
            assert await env.all_items(svc) == []

    run(main())


def test_retry_of_item_at_max_attempts_dead_letters_at_once_even_with_delay(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("dlq")
            await svc.create_queue("q", QueueOptions(max_attempts=2, dead_queue="dlq"))
            await svc.produce("q", [b"a"])
            (first,) = await svc.lease("q")
            assert await svc.retry("q", [first.id], delay_ms=1_000) == 1  # attempts 1 < 2: scheduled
            assert (await svc.queue_stats("q")).scheduled == 1
            await env.advance(1_000)
            (second,) = await svc.lease("q")
            assert second.attempts == 2
            assert await svc.retry("q", [second.id], delay_ms=60_000) == 1
            stats = await svc.queue_stats("q")
            assert (stats.total, stats.scheduled, stats.retried, stats.dead_lettered) == (0, 0, 2, 1)
            (dead,) = await env.all_items(svc, "dlq")
            assert (dead.payload, dead.attempts, dead.state) == (b"a", 0, "ready")
            await env.advance(60_000)
            assert (await svc.queue_stats("q")).total == 0
            assert len(await env.all_items(svc, "dlq")) == 1

    run(main())


def test_retry_of_item_at_max_attempts_without_dead_queue_deletes_it(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q", QueueOptions(max_attempts=1))
            await svc.produce("q", [b"a"])
            (item,) = await svc.lease("q")
            assert await svc.retry("q", [item.id]) == 1
            stats = await svc.queue_stats("q")
            assert (stats.total, stats.retried, stats.dead_lettered) == (0, 1, 1)

    run(main())


# -- max attempts -------------------------------------------------------------------------------------------


def test_lease_expiring_at_max_attempts_goes_to_dead_queue_exactly_once(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("dlq")
            await svc.create_queue("q", QueueOptions(lease_timeout=1_000, max_attempts=2, dead_queue="dlq"))
            await svc.produce("q", [b"\x00body"], kind=b"kind", reference=b"ref", encoding=b"enc")
            (first,) = await svc.lease("q")
            await env.advance(1_000)
            assert (await svc.queue_stats("q")).ready == 1  # attempt 1 < 2: back in the queue
            assert await env.all_items(svc, "dlq") == []
            (second,) = await svc.lease("q")
            assert (first.attempts, second.attempts) == (1, 2)
            assert second.id != first.id
            await env.advance(1_000)
            assert await env.all_items(svc) == []
            (dead,) = await env.all_items(svc, "dlq")
            assert (dead.payload, dead.kind, dead.reference, dead.encoding) == (
                b"\x00body",
                b"kind",
                b"ref",
                b"enc",
            )
            assert dead.attempts == 0
            assert dead.state == "ready"
            stats = await svc.queue_stats("q")
            assert (stats.lease_expired, stats.dead_lettered, stats.total) == (2, 1, 0)
            for _ in range(3):
                await env.advance(1_000)
            assert len(await env.all_items(svc, "dlq")) == 1
            assert (await svc.queue_stats("q")).dead_lettered == 1
            (from_dead,) = await svc.lease("dlq")
            assert (from_dead.payload, from_dead.attempts) == (b"\x00body", 1)

    run(main())


def test_max_attempts_without_dead_queue_deletes_item(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q", QueueOptions(lease_timeout=100, max_attempts=1))
            await svc.produce("q", [b"a", b"b"])
            (item,) = await svc.lease("q")
            assert item.payload == b"a"
            await env.advance(100)
            items = await env.all_items(svc)
            assert [i.payload for i in items] == [b"b"]
            stats = await svc.queue_stats("q")
            assert (stats.lease_expired, stats.dead_lettered, stats.total) == (1, 1, 1)

    run(main())


def test_max_attempts_zero_is_unlimited(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q", QueueOptions(lease_timeout=10))
            await svc.produce("q", [b"a"])
            for _ in range(12):
                assert len(await svc.lease("q")) == 1
                await env.advance(10)
            (stored,) = await env.all_items(svc)
            assert stored.attempts == 12
            assert (await svc.queue_stats("q")).dead_lettered == 0

    run(main())


def test_dead_letters_spread_into_a_partitioned_dead_queue(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("dlq", QueueOptions(partitions=2))
            await svc.create_queue("q", QueueOptions(dead_queue="dlq"))
            await svc.produce("q", [b"a", b"b", b"c", b"d"])
            leased = await svc.lease("q", count=4)
            assert await svc.retry("q", [i.id for i in leased], dead=True) == 4
            stats = await svc.queue_stats("dlq")
            assert stats.ready == 4
            got = await svc.lease("dlq", count=4)
            assert sorted(i.payload for i in got) == [b"a", b"b", b"c", b"d"]

    run(main())


def test_dead_queue_consumer_blocked_waiting_gets_dead_lettered_item(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("dlq")
            await svc.create_queue("q", QueueOptions(dead_queue="dlq"))
            waiting = svc.lease("dlq", block_ms=0)
            await env.settle()
            await svc.produce("q", [b"a"])
            (item,) = await svc.lease("q")
            assert await svc.retry("q", [item.id], dead=True) == 1
            got = await asyncio.wait_for(waiting, 2)
            assert [(i.payload, i.attempts) for i in got] == [(b"a", 1)]

    run(main())


# -- options changed by update apply to what happens next ---------------------------------------------------


def test_updated_lease_timeout_applies_to_new_leases_not_existing_ones(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q", QueueOptions(lease_timeout=1_000))
            await svc.produce("q", [b"a", b"b"])
            (a,) = await svc.lease("q")
            await svc.update_queue("q", QueueUpdate(lease_timeout=5_000))
            (b,) = await svc.lease("q")
            assert a.lease_deadline == env.now() + 1_000
            assert b.lease_deadline == env.now() + 5_000
            await env.advance(1_000)
            states = {i.payload: i.state for i in await env.all_items(svc)}
            assert states == {b"a": "ready", b"b": "leased"}
            assert await svc.extend("q", [b.id]) == 1
            (stored,) = [i for i in await env.all_items(svc) if i.payload == b"b"]
            assert stored.lease_deadline == env.now() + 5_000

    run(main())


def test_lowered_max_attempts_dead_letters_at_next_lease_end(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q", QueueOptions(lease_timeout=100))
            await svc.produce("q", [b"a"])
            for _ in range(3):
                await svc.lease("q")
                await env.advance(100)
            await svc.update_queue("q", QueueUpdate(max_attempts=2))
            (item,) = await svc.lease("q")
            assert item.attempts == 4
            await env.advance(100)
            assert await env.all_items(svc) == []
            assert (await svc.queue_stats("q")).dead_lettered == 1

    run(main())


def test_dead_queue_added_by_update_receives_later_dead_letters(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q", QueueOptions(lease_timeout=100, max_attempts=1))
            await svc.create_queue("dlq")
            await svc.produce("q", [b"a"])
            await svc.update_queue("q", QueueUpdate(dead_queue="dlq"))
            await svc.lease("q")
            await env.advance(100)
            assert [i.payload for i in await env.all_items(svc, "dlq")] == [b"a"]

    run(main())
