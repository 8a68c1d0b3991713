"""QITEMS listing (order, states, AFTER, PARTITION, LIMIT), QREMOVE and QCLEAR."""

from __future__ import annotations

import pytest

from querator.errors import CommandError
from querator.model import QueueOptions
from tests.support import run


async def _three_states(svc) -> tuple[str, str, str]:
    """One leased, one ready, one scheduled item in a one-partition queue, in that storage order."""
    await svc.create_queue("q", QueueOptions(lease_timeout=9_000, expire_timeout=20_000))
    leased_id, ready_id = await svc.produce("q", [b"L", b"R"], kind=b"k", reference=b"r", encoding=b"e")
    (sched_id,) = await svc.produce("q", [b"S"], delay_ms=700)
    (leased,) = await svc.lease("q")
    assert leased.id == leased_id
    return leased_id, ready_id, sched_id


def test_items_lists_storage_order_with_states_and_fields(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            t0 = env.now()
            leased_id, ready_id, sched_id = await _three_states(svc)
            items = await svc.items("q")
            assert [(i.id, i.state, i.payload) for i in items] == [
                (leased_id, "leased", b"L"),
                (ready_id, "ready", b"R"),
                (sched_id, "scheduled", b"S"),
            ]
            leased, ready, sched = items
            assert (leased.attempts, leased.lease_deadline) == (1, t0 + 9_000)
            assert (ready.attempts, ready.lease_deadline, ready.enqueue_at) == (0, 0, t0)
            assert sched.enqueue_at == t0 + 700
            assert all(i.created_at == t0 for i in items)
            assert all(i.expire_deadline == t0 + 20_000 for i in items)
            assert (ready.kind, ready.reference, ready.encoding) == (b"k", b"r", b"e")
            assert (sched.kind, sched.reference, sched.encoding) == (b"", b"", b"")

    run(main())


def test_items_after_continues_after_that_id_and_limit_pages(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q")
            ids = await svc.produce("q", [f"{i}".encode() for i in range(7)])
            await svc.lease("q", count=2)
            page = await svc.items("q", limit=3)
            assert [i.id for i in page] == ids[:3]
            collected = [i.id for i in page]
            while page:
                page = await svc.items("q", after=collected[-1], limit=3)
                collected.extend(i.id for i in page)
            assert collected == ids
            assert await svc.items("q", after=ids[-1]) == []
            # `after` an id that no longer exists still continues from its place.
            assert await svc.complete("q", [ids[0]]) == 1
            assert [i.id for i in await svc.items("q", after=ids[0], limit=2)] == ids[1:3]

    run(main())


def test_items_default_limit_is_100(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q")
            await svc.produce("q", [b"x"] * 150)
            assert len(await svc.items("q")) == 100
            assert len(await svc.items("q", limit=1000)) == 150

    run(main())


def test_items_lists_partition_zero_first_and_filters_by_partition(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q", QueueOptions(partitions=3))
            p0 = await svc.produce("q", [b"a0", b"a1"])
            p1 = await svc.produce("q", [b"b0"])
            p2 = await svc.produce("q", [b"c0", b"c1", b"c2"])
            assert [i.id for i in await svc.items("q")] == [*p0, *p1, *p2]
            assert [i.id for i in await svc.items("q", partition=2)] == p2
            assert [i.id for i in await svc.items("q", partition=1)] == p1
            # `after` across partitions continues into the next partition.
            assert [i.id for i in await svc.items("q", after=p0[-1], limit=2)] == [p1[0], p2[0]]
            assert [i.id for i in await svc.items("q", partition=2, after=p2[0])] == p2[1:]
            assert [i.id for i in await svc.items("q", partition=2, limit=2)] == p2[:2]

    run(main())


def test_items_argument_errors(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q", QueueOptions(partitions=2))
            with pytest.raises(CommandError, match="LIMIT must be between 1 and 1000"):
                await svc.items("q", limit=0)
            with pytest.raises(CommandError, match="LIMIT must be between 1 and 1000"):
                await svc.items("q", limit=1001)
            with pytest.raises(CommandError, match="PARTITION must be between 0 and 1"):
                await svc.items("q", partition=2)
            with pytest.raises(CommandError, match="PARTITION must be between 0 and 1"):
                await svc.items("q", partition=-1)
            with pytest.raises(CommandError, match="invalid id 'nope'"):
                await svc.items("q", after="nope")
            with pytest.raises(CommandError, match="invalid id '1-2-1'"):
                await svc.items("q", after="1-2-1")

    run(main())


def test_remove_deletes_items_in_any_state_and_counts(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            leased_id, ready_id, sched_id = await _three_states(svc)
            (extra,) = await svc.produce("q", [b"keep"])
            assert await svc.remove("q", [leased_id, ready_id, sched_id, ready_id, "1-0-99999"]) == 3
            assert [i.id for i in await env.all_items(svc)] == [extra]
            stats = await svc.queue_stats("q")
            assert (stats.ready, stats.leased, stats.scheduled, stats.total) == (1, 0, 0, 1)
            assert await svc.complete("q", [leased_id]) == 0
            await env.advance(10_000)  # neither the lease nor the schedule comes back
            assert [i.id for i in await env.all_items(svc)] == [extra]
            assert (await svc.queue_stats("q")).lease_expired == 0

    run(main())


def test_remove_malformed_id_fails_and_removes_nothing(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q")
            (pid,) = await svc.produce("q", [b"a"])
            with pytest.raises(CommandError, match="invalid id 'x'"):
                await svc.remove("q", [pid, "x"])
            assert [i.id for i in await env.all_items(svc)] == [pid]

    run(main())


def test_clear_removes_ready_and_scheduled_but_not_leased(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            leased_id, _, _ = await _three_states(svc)
            await svc.produce("q", [b"r2", b"r3"])
            assert await svc.clear("q") == 4
            items = await env.all_items(svc)
            assert [(i.id, i.state) for i in items] == [(leased_id, "leased")]
            stats = await svc.queue_stats("q")
            assert (stats.ready, stats.leased, stats.scheduled) == (0, 1, 0)
            assert await svc.complete("q", [leased_id]) == 1
            await env.advance(1_000)  # the cleared schedule never comes back
            assert await env.all_items(svc) == []

    run(main())


def test_clear_all_includes_leased(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            leased_id, _, _ = await _three_states(svc)
            assert await svc.clear("q", include_leased=True) == 3
            assert await env.all_items(svc) == []
            stats = await svc.queue_stats("q")
            assert (stats.total, stats.leased) == (0, 0)
            assert await svc.complete("q", [leased_id]) == 0
            await env.advance(10_000)
            assert await env.all_items(svc) == []
            assert (await svc.queue_stats("q")).lease_expired == 0

    run(main())


def test_clear_covers_every_partition(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q", QueueOptions(partitions=3))
            for i in range(3):
                await svc.produce("q", [f"{i}".encode(), b"x"])
            assert await svc.clear("q") == 6
            assert await svc.clear("q") == 0
            assert (await svc.queue_stats("q")).total == 0

    run(main())


def test_clear_applies_after_produce_called_before_it(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q")
            produced = svc.produce("q", [b"a", b"b"])
            cleared = svc.clear("q")
            assert len(await produced) == 2
            assert await cleared == 2
            assert (await svc.queue_stats("q")).total == 0

    run(main())
