"""Expire timeout (item age) and scheduling with QPRODUCE DELAY / AT. Time moves only by ManualClock."""

from __future__ import annotations

import pytest

from querator.errors import CommandError
from querator.model import QueueOptions, QueueUpdate
from tests.support import run

# -- expire timeout ---------------------------------------------------------------------------------------


async def _with_dead_queue(svc, *, expire: int = 5_000, lease: int = 1_000, dead_expire: int = 0) -> None:
    await svc.create_queue("dlq", QueueOptions(lease_timeout=lease, expire_timeout=dead_expire))
    await svc.create_queue("q", QueueOptions(lease_timeout=lease, expire_timeout=expire, dead_queue="dlq"))


def test_expired_ready_item_goes_to_dead_queue(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await _with_dead_queue(svc)
            t0 = env.now()
            await svc.produce("q", [b"a"], kind=b"k", reference=b"r", encoding=b"e")
            (stored,) = await env.all_items(svc)
            assert stored.expire_deadline == t0 + 5_000
            await env.advance(4_999)
            assert [i.state for i in await env.all_items(svc)] == ["ready"]
            assert await env.all_items(svc, "dlq") == []
            await env.advance(1)
            assert await env.all_items(svc) == []
            (dead,) = await env.all_items(svc, "dlq")
            assert (dead.payload, dead.kind, dead.reference, dead.encoding, dead.attempts) == (
                b"a",
                b"k",
                b"r",
                b"e",
                0,
            )
            stats = await svc.queue_stats("q")
            assert (stats.dead_lettered, stats.total, stats.lease_expired) == (1, 0, 0)

    run(main())


def test_expired_item_is_never_leased(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await _with_dead_queue(svc)
            await svc.produce("q", [b"old"])
            await env.advance(3_000)
            await svc.produce("q", [b"new"])
            env.clock.advance(2_000)  # no settle: the lease itself must not hand out the expired item
            got = await svc.lease("q", count=2)
            assert b"old" not in [i.payload for i in got]
            await env.settle()
            assert [i.payload for i in await env.all_items(svc, "dlq")] == [b"old"]

    run(main())


def test_expired_scheduled_item_goes_to_dead_queue(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await _with_dead_queue(svc)
            await svc.produce("q", [b"later"], delay_ms=60_000)
            assert (await svc.queue_stats("q")).scheduled == 1
            await env.advance(5_000)
            stats = await svc.queue_stats("q")
            assert (stats.scheduled, stats.total, stats.dead_lettered) == (0, 0, 1)
            assert [i.payload for i in await env.all_items(svc, "dlq")] == [b"later"]
            await env.advance(60_000)  # the old due time passes: nothing comes back
            assert (await svc.queue_stats("q")).total == 0
            assert len(await env.all_items(svc, "dlq")) == 1

    run(main())


def test_expired_leased_item_stays_leased_until_lease_ends(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await _with_dead_queue(svc)
            await svc.produce("q", [b"a"])
            await env.advance(4_500)
            (item,) = await svc.lease("q")  # deadline at age 5500
            await env.advance(600)  # age 5100: past the expire timeout, but leased
            (stored,) = await env.all_items(svc)
            assert (stored.id, stored.state) == (item.id, "leased")
            assert await env.all_items(svc, "dlq") == []
            await env.advance(400)  # the lease ends: expired, so dead-lettered instead of requeued
            assert await env.all_items(svc) == []
            assert [i.payload for i in await env.all_items(svc, "dlq")] == [b"a"]
            stats = await svc.queue_stats("q")
            assert (stats.lease_expired, stats.dead_lettered) == (1, 1)

    run(main())


def test_expired_leased_item_can_still_be_completed(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await _with_dead_queue(svc)
            await svc.produce("q", [b"a"])
            await env.advance(4_500)
            (item,) = await svc.lease("q")
            await env.advance(700)
            assert await svc.complete("q", [item.id]) == 1
            await env.advance(5_000)
            assert await env.all_items(svc, "dlq") == []
            assert (await svc.queue_stats("q")).dead_lettered == 0

    run(main())


def test_expired_leased_item_retried_goes_to_dead_queue(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await _with_dead_queue(svc)
            await svc.produce("q", [b"a"])
            await env.advance(4_500)
            (item,) = await svc.lease("q")
            await env.advance(600)
            assert await svc.retry("q", [item.id]) == 1
            assert await env.all_items(svc) == []
            assert [i.payload for i in await env.all_items(svc, "dlq")] == [b"a"]
            stats = await svc.queue_stats("q")
            assert (stats.retried, stats.dead_lettered) == (1, 1)

    run(main())


def test_expiry_age_counts_from_first_produce_across_requeues(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await _with_dead_queue(svc)
            t0 = env.now()
            await svc.produce("q", [b"a"])
            await svc.lease("q")
            await env.advance(1_000)  # lease ends, requeued at t0+1000
            (stored,) = await env.all_items(svc)
            assert (stored.state, stored.created_at, stored.expire_deadline) == ("ready", t0, t0 + 5_000)
            await env.advance(4_000)  # age 5000 from the first produce
            assert await env.all_items(svc) == []
            assert len(await env.all_items(svc, "dlq")) == 1

    run(main())


def test_age_starts_again_in_the_dead_queue(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await _with_dead_queue(svc, expire=2_000, dead_expire=5_000)
            await svc.produce("q", [b"a"])
            await env.advance(2_000)
            (dead,) = await env.all_items(svc, "dlq")
            assert dead.created_at == env.now()
            assert dead.expire_deadline == env.now() + 5_000
            await env.advance(4_999)  # 6999 since the first produce, 4999 in the dead queue
            assert len(await env.all_items(svc, "dlq")) == 1
            await env.advance(1)  # expires in the dead queue, which has no dead queue: deleted
            assert await env.all_items(svc, "dlq") == []
            assert (await svc.queue_stats("dlq")).dead_lettered == 1

    run(main())


def test_expired_item_without_dead_queue_is_deleted_and_counted(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q", QueueOptions(lease_timeout=1_000, expire_timeout=1_000))
            await svc.produce("q", [b"a", b"b"])
            await env.advance(500)
            await svc.produce("q", [b"c"])
            await env.advance(500)
            assert [i.payload for i in await env.all_items(svc)] == [b"c"]
            stats = await svc.queue_stats("q")
            assert (stats.dead_lettered, stats.ready) == (2, 1)

    run(main())


def test_expire_timeout_zero_means_never(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q")
            await svc.produce("q", [b"a"])
            await env.advance(10 * 365 * 86_400_000)
            (stored,) = await env.all_items(svc)
            assert (stored.state, stored.expire_deadline) == ("ready", 0)

    run(main())


def test_expire_timeout_set_by_update_applies_to_existing_items(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q", QueueOptions(lease_timeout=1_000))
            await svc.produce("q", [b"old"])
            await svc.produce("q", [b"sched"], delay_ms=100_000)
            await env.advance(1_000)
            await svc.update_queue("q", QueueUpdate(expire_timeout=5_000))
            await env.advance(3_999)
            assert len(await env.all_items(svc)) == 2
            await env.advance(1)
            assert await env.all_items(svc) == []
            assert (await svc.queue_stats("q")).dead_lettered == 2

    run(main())


def test_expire_timeout_removed_by_update_stops_expiry(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q", QueueOptions(lease_timeout=1_000, expire_timeout=2_000))
            await svc.produce("q", [b"a"])
            await svc.update_queue("q", QueueUpdate(expire_timeout=0))
            await env.advance(10_000)
            assert [i.payload for i in await env.all_items(svc)] == [b"a"]
            assert (await svc.queue_stats("q")).dead_lettered == 0

    run(main())


# -- scheduling with produce DELAY / AT ---------------------------------------------------------------------


def test_produce_with_delay_is_scheduled_not_leasable_then_ready(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q")
            (pid,) = await svc.produce("q", [b"a"], delay_ms=1_000)
            (stored,) = await env.all_items(svc)
            assert (stored.id, stored.state, stored.attempts) == (pid, "scheduled", 0)
            assert stored.enqueue_at == env.now() + 1_000
            stats = await svc.queue_stats("q")
            assert (stats.ready, stats.scheduled, stats.total, stats.produced) == (0, 1, 1, 1)
            assert await svc.queue_length("q") == 0
            assert await svc.lease("q") == []
            await env.advance(999)
            assert await svc.lease("q") == []
            await env.advance(1)
            (ready,) = await env.all_items(svc)
            assert ready.state == "ready"
            assert ready.id != pid  # went to the tail: a new id
            assert ready.enqueue_at == env.now()
            assert await svc.queue_length("q") == 1
            (item,) = await svc.lease("q")
            assert (item.payload, item.attempts, item.id) == (b"a", 1, ready.id)

    run(main())


def test_produce_at_ms_is_scheduled_until_that_time(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q")
            at = env.now() + 5_000
            await svc.produce("q", [b"x", b"y"], at_ms=at)
            items = await env.all_items(svc)
            assert [(i.state, i.enqueue_at) for i in items] == [("scheduled", at)] * 2
            await env.advance(4_999)
            assert await svc.lease("q") == []
            await env.advance(1)
            assert [i.payload for i in await svc.lease("q", count=5)] == [b"x", b"y"]

    run(main())


@pytest.mark.parametrize("kwargs", [{"delay_ms": 0}, {"at_ms": 0}, {"at_ms": 1}])
def test_produce_due_now_or_in_the_past_is_ready_at_once(env, kwargs) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q")
            await svc.produce("q", [b"a"], **kwargs)
            stats = await svc.queue_stats("q")
            assert (stats.ready, stats.scheduled) == (1, 0)
            assert len(await svc.lease("q")) == 1

    run(main())


def test_produce_at_current_time_is_ready_at_once(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q")
            await svc.produce("q", [b"a"], at_ms=env.now())
            assert (await svc.queue_stats("q")).ready == 1

    run(main())


def test_scheduled_items_become_ready_in_order_of_due_time(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q")
            await svc.produce("q", [b"a"], delay_ms=300)
            await svc.produce("q", [b"b"], delay_ms=100)
            await svc.produce("q", [b"c"], at_ms=env.now() + 200)
            await svc.produce("q", [b"d"], delay_ms=200)
            assert (await svc.queue_stats("q")).scheduled == 4
            await env.advance(1_000)  # all due in one step: still in due order
            got = [i.payload for i in await svc.lease("q", count=10)]
            assert got == [b"b", b"c", b"d", b"a"]

    run(main())


def test_due_item_goes_behind_items_already_ready(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q")
            await svc.produce("q", [b"sched"], delay_ms=100)
            await svc.produce("q", [b"ready"])
            await env.advance(100)
            await svc.produce("q", [b"after"])
            got = [i.payload for i in await svc.lease("q", count=10)]
            assert got == [b"ready", b"sched", b"after"]

    run(main())


def test_scheduled_items_in_several_partitions_all_become_ready(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q", QueueOptions(partitions=3))
            for i in range(3):
                await svc.produce("q", [f"{i}".encode()], delay_ms=100 * (i + 1))
            stats = await svc.queue_stats("q")
            assert [p.scheduled for p in stats.partitions] == [1, 1, 1]
            await env.advance(300)
            stats = await svc.queue_stats("q")
            assert (stats.ready, stats.scheduled) == (3, 0)

    run(main())


def test_produce_schedule_option_errors_store_nothing(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q")
            with pytest.raises(CommandError, match="DELAY must be at least 0"):
                await svc.produce("q", [b"a"], delay_ms=-1)
            with pytest.raises(CommandError, match="AT must be at least 0"):
                await svc.produce("q", [b"a"], at_ms=-5)
            with pytest.raises(CommandError, match="DELAY and AT are mutually exclusive"):
                await svc.produce("q", [b"a"], delay_ms=5, at_ms=env.now() + 5)
            with pytest.raises(CommandError, match="ITEMS needs at least one payload"):
                await svc.produce("q", [])
            stats = await svc.queue_stats("q")
            assert (stats.total, stats.produced) == (0, 0)

    run(main())
