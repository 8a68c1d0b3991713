"""Lease, complete and extend: states, attempts, deadlines, id validation and stale ids."""

from __future__ import annotations

import pytest

from querator.errors import CommandError
from querator.model import QueueOptions
from tests.support import run


def test_lease_marks_leased_adds_attempt_and_sets_deadline(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q", QueueOptions(lease_timeout=7_000))
            (pid,) = await svc.produce("q", [b"a"])
            await env.advance(500)
            (item,) = await svc.lease("q")
            assert item.id == pid
            assert item.payload == b"a"
            assert item.attempts == 1
            assert item.lease_deadline == env.now() + 7_000
            (stored,) = await env.all_items(svc)
            assert stored.state == "leased"
            assert stored.attempts == 1
            assert stored.lease_deadline == env.now() + 7_000
            assert await svc.queue_length("q") == 0
            stats = await svc.queue_stats("q")
            assert (stats.ready, stats.leased, stats.total) == (0, 1, 1)

    run(main())


def test_lease_count_defaults_to_one_and_takes_at_most_count(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q")
            await svc.produce("q", [b"a", b"b", b"c"])
            assert len(await svc.lease("q")) == 1
            assert len(await svc.lease("q", count=5)) == 2
            assert await svc.lease("q", count=5) == []

    run(main())


@pytest.mark.parametrize("count", [0, -1, 1001])
def test_lease_count_out_of_range(env, count) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q")
            await svc.produce("q", [b"a"])
            with pytest.raises(CommandError) as err:
                await svc.lease("q", count=count)
            assert str(err.value) == "COUNT must be between 1 and 1000"
            assert await svc.queue_length("q") == 1

    run(main())


def test_lease_count_1000_is_accepted(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q")
            await svc.produce("q", [b"x"] * 3)
            assert len(await svc.lease("q", count=1000)) == 3

    run(main())


def test_lease_negative_block_is_rejected(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q")
            with pytest.raises(CommandError, match="BLOCK must be at least 0"):
                await svc.lease("q", block_ms=-1)

    run(main())


def test_complete_deletes_items_and_returns_count(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q")
            await svc.produce("q", [b"a", b"b", b"c"])
            leased = await svc.lease("q", count=2)
            assert await svc.complete("q", [i.id for i in leased]) == 2
            items = await env.all_items(svc)
            assert [(i.payload, i.state) for i in items] == [(b"c", "ready")]
            stats = await svc.queue_stats("q")
            assert (stats.completed, stats.leased, stats.total) == (2, 0, 1)
            # Completing again counts nothing.
            assert await svc.complete("q", [i.id for i in leased]) == 0
            assert (await svc.queue_stats("q")).completed == 2

    run(main())


def test_complete_repeated_id_counts_once(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q")
            await svc.produce("q", [b"a", b"b"])
            a, b = await svc.lease("q", count=2)
            assert await svc.complete("q", [a.id, a.id, b.id, a.id]) == 2
            assert (await svc.queue_stats("q")).completed == 2

    run(main())


@pytest.mark.parametrize("bad", ["abc", "", "1-0", "1-0-1-2", "1-x-1", "1--1", " 1-0-1", "1-0-1 ", "-1-0-1"])
def test_complete_malformed_id_fails_whole_call_and_applies_nothing(env, bad) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q")
            await svc.produce("q", [b"a"])
            (item,) = await svc.lease("q")
            with pytest.raises(CommandError) as err:
                await svc.complete("q", [item.id, bad])
            assert str(err.value) == f"invalid id '{bad}'"
            (stored,) = await env.all_items(svc)
            assert stored.state == "leased"
            assert (await svc.queue_stats("q")).completed == 0
            assert await svc.complete("q", [item.id]) == 1

    run(main())


def test_id_with_partition_out_of_range_is_malformed(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q", QueueOptions(partitions=2))
            await svc.produce("q", [b"a"])
            (item,) = await svc.lease("q")
            uid, _, seq = item.id.split("-")
            bad = f"{uid}-2-{seq}"
            for call in (svc.complete, svc.retry, svc.extend, svc.remove):
                with pytest.raises(CommandError) as err:
                    await call("q", [item.id, bad])
                assert str(err.value) == f"invalid id '{bad}'"
            (stored,) = await env.all_items(svc)
            assert stored.state == "leased"
            assert stored.lease_deadline == item.lease_deadline
            stats = await svc.queue_stats("q")
            assert (stats.completed, stats.retried, stats.total) == (0, 0, 1)

    run(main())


def test_id_over_64_bytes_is_malformed(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q")
            bad = "1-0-" + "1" * 61
            assert len(bad) == 65
            with pytest.raises(CommandError, match="invalid id"):
                await svc.complete("q", [bad])

    run(main())


def test_complete_well_formed_not_leased_id_is_not_counted(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q")
            ready_id, leased_id = await svc.produce("q", [b"ready", b"leased"])
            (first,) = await svc.lease("q")
            assert first.id == ready_id
            assert await svc.retry("q", [first.id]) == 1  # ready_id now names nothing
            (second,) = await svc.lease("q")
            assert second.id == leased_id
            uid = leased_id.split("-")[0]
            others = [ready_id, f"{uid}-0-999999", f"{int(uid) + 100}-0-1"]
            assert await svc.complete("q", [*others, second.id]) == 1
            stats = await svc.queue_stats("q")
            assert (stats.completed, stats.ready, stats.leased) == (1, 1, 0)

    run(main())


def test_complete_of_ready_item_id_does_not_delete_it(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q")
            (pid,) = await svc.produce("q", [b"a"])
            assert await svc.complete("q", [pid]) == 0
            (stored,) = await env.all_items(svc)
            assert (stored.id, stored.state) == (pid, "ready")

    run(main())


def test_stale_id_from_before_lease_expiry_never_completes_later_delivery(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q", QueueOptions(lease_timeout=1_000))
            await svc.produce("q", [b"a"])
            (first,) = await svc.lease("q")
            await env.advance(1_000)
            (second,) = await svc.lease("q")
            assert second.payload == b"a"
            assert second.id != first.id
            assert second.attempts == 2
            assert await svc.complete("q", [first.id]) == 0
            (stored,) = await env.all_items(svc)
            assert (stored.id, stored.state) == (second.id, "leased")
            assert await svc.extend("q", [first.id]) == 0
            assert await svc.retry("q", [first.id]) == 0
            assert await svc.complete("q", [second.id]) == 1

    run(main())


def test_stale_id_from_before_retry_never_completes_later_delivery(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q")
            await svc.produce("q", [b"a"])
            (first,) = await svc.lease("q")
            assert await svc.retry("q", [first.id]) == 1
            (second,) = await svc.lease("q")
            assert second.id != first.id
            assert await svc.complete("q", [first.id]) == 0
            assert await svc.complete("q", [second.id]) == 1

    run(main())


def test_ids_are_never_reused_within_a_queue(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q", QueueOptions(partitions=2, lease_timeout=1_000))
            issued: set[str] = set()
            for _ in range(3):
                new = await svc.produce("q", [b"a", b"b", b"c"])
                assert not set(new) & issued
                issued.update(new)
                leased = await svc.lease("q", count=10)
                assert {i.id for i in leased} <= issued
                assert await svc.complete("q", [leased[0].id]) == 1
                assert await svc.retry("q", [leased[1].id]) == 1
                await env.advance(1_000)  # the other leases expire
                requeued = [i.id for i in await env.all_items(svc)]
                assert all(i.state == "ready" for i in await env.all_items(svc))
                assert not set(requeued) & issued
                issued.update(requeued)

    run(main())


def test_extend_sets_new_deadline_now_plus_ms(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q", QueueOptions(lease_timeout=1_000))
            await svc.produce("q", [b"a"])
            (item,) = await svc.lease("q")
            await env.advance(800)
            assert await svc.extend("q", [item.id], lease_for_ms=5_000) == 1
            (stored,) = await env.all_items(svc)
            assert stored.lease_deadline == env.now() + 5_000
            # The old deadline passes: the lease holds.
            await env.advance(1_000)
            (stored,) = await env.all_items(svc)
            assert (stored.id, stored.state) == (item.id, "leased")
            assert (await svc.queue_stats("q")).lease_expired == 0
            # The new one passes: it ends.
            await env.advance(4_000)
            (stored,) = await env.all_items(svc)
            assert stored.state == "ready"
            assert stored.id != item.id
            assert (await svc.queue_stats("q")).lease_expired == 1

    run(main())


def test_extend_defaults_to_queue_lease_timeout(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q", QueueOptions(lease_timeout=3_000))
            await svc.produce("q", [b"a"])
            (item,) = await svc.lease("q")
            await env.advance(2_000)
            assert await svc.extend("q", [item.id]) == 1
            (stored,) = await env.all_items(svc)
            assert stored.lease_deadline == env.now() + 3_000
            assert stored.attempts == 1
            assert await svc.complete("q", [item.id]) == 1

    run(main())


def test_extend_not_leased_id_counts_zero_and_repeated_id_once(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q")
            ready_id, _ = await svc.produce("q", [b"a", b"b"])
            assert await svc.extend("q", [ready_id]) == 0
            (stored, _) = await env.all_items(svc)
            assert (stored.state, stored.lease_deadline) == ("ready", 0)
            (item,) = await svc.lease("q")
            assert await svc.extend("q", [item.id, item.id], lease_for_ms=10) == 1
            assert await svc.complete("q", [item.id]) == 1
            assert await svc.extend("q", [item.id]) == 0

    run(main())


def test_extend_negative_for_is_rejected(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q")
            await svc.produce("q", [b"a"])
            (item,) = await svc.lease("q")
            with pytest.raises(CommandError, match="FOR"):
                await svc.extend("q", [item.id], lease_for_ms=-1)
            (stored,) = await env.all_items(svc)
            assert stored.lease_deadline == item.lease_deadline

    run(main())


def test_extend_for_zero_ends_lease_at_once(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q")
            await svc.produce("q", [b"a"])
            (item,) = await svc.lease("q")
            assert await svc.extend("q", [item.id], lease_for_ms=0) == 1
            await env.advance(0)
            (again,) = await svc.lease("q")
            assert again.id != item.id
            assert again.attempts == 2

    run(main())


def test_complete_after_deadline_passed_counts_zero_even_before_timers_ran(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q", QueueOptions(lease_timeout=1_000))
            await svc.produce("q", [b"a"])
            (item,) = await svc.lease("q")
            env.clock.advance(1_000)  # no settle: the complete may reach the partition first
            assert await svc.complete("q", [item.id]) == 0
            (stored,) = await env.all_items(svc)
            assert stored.state == "ready"
            assert stored.id != item.id

    run(main())


def test_extend_after_deadline_passed_does_not_revive_the_lease(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q", QueueOptions(lease_timeout=1_000))
            await svc.produce("q", [b"a"])
            (item,) = await svc.lease("q")
            env.clock.advance(1_500)
            assert await svc.extend("q", [item.id], lease_for_ms=10_000) == 0
            (stored,) = await env.all_items(svc)
            assert (stored.state, stored.attempts) == ("ready", 1)

    run(main())


def test_extend_for_above_limit_is_rejected(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q")
            await svc.produce("q", [b"a"])
            (item,) = await svc.lease("q")
            with pytest.raises(CommandError) as err:
                await svc.extend("q", [item.id], lease_for_ms=604_800_001)
            assert str(err.value) == "FOR must be between 0 and 604800000"
            assert await svc.extend("q", [item.id], lease_for_ms=604_800_000) == 1

    run(main())


def test_complete_ids_of_several_partitions_in_one_call(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q", QueueOptions(partitions=3))
            for p in range(3):
                await svc.produce("q", [f"p{p}".encode(), b"x"])
            leased = await svc.lease("q", count=6)
            where = await env.partition_of(svc)
            assert {where[i.id] for i in leased} == {0, 1, 2}
            ids = [i.id for i in leased]
            assert await svc.complete("q", [*ids, ids[0]]) == 6
            s = await svc.queue_stats("q")
            assert (s.completed, s.total) == (6, 0)

    run(main())
