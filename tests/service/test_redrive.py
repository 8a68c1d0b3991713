"""QREDRIVE: dead items back to the queue each came from, or to a TO target (SPEC section 7, Redrive).

Only ready items move, oldest first (dead-queue order within each partition), each to the tail of its
target as a fresh produce would arrive: new id, attempts 0, age from the redrive, no provenance, counted in
the target's `produced`, in the partition a produce would choose. LIMIT (default 1000, 1-100000) counts
moved items only. Without TO, items whose source queue no longer exists (by name) and items never
dead-lettered stay where they are and are not counted; with TO every ready item moves.

Interpretations where the SPEC leaves a choice (the implementation follows them):
- "Exists by name": a source queue deleted and created again under the same name takes its items back.
- A redrive into a paused queue is accepted, as a produce is (the items wait there, ready).
"""

from __future__ import annotations

import pytest

from querator.errors import CommandError, NoQueueError
from querator.model import QueueOptions
from tests.service.features import NO_PROVENANCE, dead_letter, exact, provenance
from tests.support import run

LIMIT_RANGE = "LIMIT must be between 1 and 100000"


async def _queues(svc, dead_partitions: int = 1, **options) -> None:
    await svc.create_queue("dlq", QueueOptions(partitions=dead_partitions))
    await svc.create_queue("q", QueueOptions(dead_queue="dlq", **options))


async def _payloads(svc, queue: str) -> list[bytes]:
    return [i.payload for i in await svc.items(queue, limit=1000)]


def test_redrive_moves_dead_items_to_the_tail_of_their_source_queue(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await _queues(svc)
            await dead_letter(svc, "q", [b"a", b"b", b"c"])
            await svc.produce("q", [b"waiting"])
            assert await svc.redrive("dlq") == 3
            assert await _payloads(svc, "q") == [b"waiting", b"a", b"b", b"c"]
            assert await svc.items("dlq") == []
            got = await svc.lease("q", count=4)
            assert [i.payload for i in got] == [b"waiting", b"a", b"b", b"c"]

    run(main())


def test_redriven_item_arrives_as_a_fresh_produce(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await _queues(svc, lease_timeout=1_000, expire_timeout=60_000)
            await svc.produce("q", [b"body"], kind=b"k", reference=b"r", encoding=b"e")
            (leased,) = await svc.lease("q")
            await svc.retry("q", [leased.id], dead=True, reason=b"poison")
            (dead,) = await svc.items("dlq")
            produced_before = (await svc.queue_stats("q")).produced
            await env.advance(30_000)
            assert await svc.redrive("dlq") == 1
            (item,) = await svc.items("q")
            assert item.id not in (leased.id, dead.id)
            assert (item.state, item.attempts) == ("ready", 0)
            assert (item.created_at, item.enqueue_at) == (env.now(), env.now())
            assert item.expire_deadline == env.now() + 60_000  # its age counts from the redrive
            assert (item.payload, item.kind, item.reference, item.encoding) == (b"body", b"k", b"r", b"e")
            assert provenance(item) == NO_PROVENANCE
            assert (await svc.queue_stats("q")).produced == produced_before + 1
            (again,) = await svc.lease("q")
            assert (again.id, again.attempts) == (item.id, 1)

    run(main())


def test_redriven_item_goes_to_the_partition_a_produce_would_choose(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await _queues(svc, partitions=2)
            await dead_letter(svc, "q", [b"dead"])
            await svc.produce("q", [b"x", b"y", b"z"])
            where = await env.partition_of(svc)
            assert len(set(where.values())) == 1
            emptier = 1 - next(iter(where.values()))
            assert await svc.redrive("dlq") == 1
            redriven = next(i for i in await svc.items("q") if i.payload == b"dead")
            assert (await env.partition_of(svc))[redriven.id] == emptier

    run(main())


def test_each_item_goes_back_to_the_queue_it_came_from(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("dlq")
            await svc.create_queue("orders", QueueOptions(dead_queue="dlq"))
            await svc.create_queue("mails", QueueOptions(dead_queue="dlq"))
            await dead_letter(svc, "orders", [b"o1"])
            await dead_letter(svc, "mails", [b"m1"])
            await dead_letter(svc, "orders", [b"o2"])
            assert await svc.redrive("dlq") == 3
            assert await _payloads(svc, "orders") == [b"o1", b"o2"]
            assert await _payloads(svc, "mails") == [b"m1"]
            assert (await svc.queue_stats("mails")).produced == 2

    run(main())


def test_limit_takes_the_oldest_and_counts_moved_items(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await _queues(svc)
            await dead_letter(svc, "q", [b"1", b"2", b"3", b"4", b"5"])
            assert await svc.redrive("dlq", limit=2) == 2
            assert await _payloads(svc, "q") == [b"1", b"2"]
            assert await _payloads(svc, "dlq") == [b"3", b"4", b"5"]
            assert await svc.redrive("dlq", limit=2) == 2
            assert await svc.redrive("dlq", limit=2) == 1
            assert await svc.redrive("dlq", limit=2) == 0
            assert await _payloads(svc, "q") == [b"1", b"2", b"3", b"4", b"5"]

    run(main())


def test_default_limit_is_1000(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("dlq")
            await svc.create_queue("target")
            await svc.produce("dlq", [b"%d" % n for n in range(1000)])
            await svc.produce("dlq", [b"last"])
            assert await svc.redrive("dlq", to="target") == 1000
            assert await _payloads(svc, "dlq") == [b"last"]
            assert (await svc.queue_stats("target")).ready == 1000

    run(main())


def test_limit_range(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await _queues(svc)
            await dead_letter(svc, "q", [b"a"])
            for bad in (0, -1, 100_001):
                with pytest.raises(CommandError, match=exact(LIMIT_RANGE)):
                    await svc.redrive("dlq", limit=bad)
            assert await _payloads(svc, "dlq") == [b"a"]
            assert await svc.redrive("dlq", limit=100_000) == 1

    run(main())


def test_items_whose_source_queue_is_gone_stay_and_are_not_counted(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("dlq")
            await svc.create_queue("gone", QueueOptions(dead_queue="dlq"))
            await svc.create_queue("kept", QueueOptions(dead_queue="dlq"))
            (gone_id,) = await dead_letter(svc, "gone", [b"g"], reason=b"why")
            await dead_letter(svc, "kept", [b"k1", b"k2"])
            await svc.delete_queue("gone")
            # LIMIT counts moved items only: the item of "gone" at the head does not use it up.
            assert await svc.redrive("dlq", limit=1) == 1
            assert await _payloads(svc, "kept") == [b"k1"]
            assert await svc.redrive("dlq") == 1
            (stays,) = await svc.items("dlq")
            assert (stays.payload, stays.state) == (b"g", "ready")
            assert provenance(stays) == (b"why", "gone", gone_id, "retry-dead")
            assert await svc.redrive("dlq") == 0

    run(main())


def test_source_queue_created_again_by_name_takes_its_items_back(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await _queues(svc)
            await dead_letter(svc, "q", [b"a"])
            await svc.delete_queue("q")
            assert await svc.redrive("dlq") == 0
            await svc.create_queue("q")
            assert await svc.redrive("dlq") == 1
            assert await _payloads(svc, "q") == [b"a"]

    run(main())


def test_items_never_dead_lettered_stay_without_to(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await _queues(svc)
            await svc.produce("dlq", [b"direct-1"])
            await dead_letter(svc, "q", [b"dead"])
            await svc.produce("dlq", [b"direct-2"])
            assert await svc.redrive("dlq", limit=1) == 1
            assert await _payloads(svc, "q") == [b"dead"]
            assert await _payloads(svc, "dlq") == [b"direct-1", b"direct-2"]
            assert await svc.redrive("dlq") == 0

    run(main())


def test_with_to_every_ready_item_moves_in_dead_queue_order(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("dlq")
            await svc.create_queue("gone", QueueOptions(dead_queue="dlq"))
            await svc.create_queue("q", QueueOptions(dead_queue="dlq"))
            await svc.create_queue("target")
            await dead_letter(svc, "gone", [b"from-gone"])
            await svc.delete_queue("gone")
            await svc.produce("dlq", [b"direct"])
            await dead_letter(svc, "q", [b"from-q"])
            await svc.produce("target", [b"already"])
            assert await svc.redrive("dlq", to="target") == 3
            assert await _payloads(svc, "target") == [b"already", b"from-gone", b"direct", b"from-q"]
            assert all(provenance(i) == NO_PROVENANCE for i in await svc.items("target"))
            assert await svc.items("dlq") == [] and await svc.items("q") == []
            assert (await svc.queue_stats("target")).produced == 4

    run(main())


def test_only_ready_items_move(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("dlq")
            await svc.create_queue("target")
            await svc.produce("dlq", [b"leased", b"scheduled", b"ready"])
            leased, scheduled = await svc.lease("dlq", count=2)
            await svc.retry("dlq", [scheduled.id], delay_ms=10_000)
            assert await svc.redrive("dlq", to="target") == 1
            assert await _payloads(svc, "target") == [b"ready"]
            states = {i.payload: i.state for i in await svc.items("dlq")}
            assert states == {b"leased": "leased", b"scheduled": "scheduled"}
            assert await svc.complete("dlq", [leased.id]) == 1

    run(main())


def test_items_are_taken_in_dead_queue_order_within_each_partition(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("dlq", QueueOptions(partitions=2))
            await svc.create_queue("target")
            for n in range(8):
                await svc.produce("dlq", [b"%d" % n])
            order = {p: [i.payload for i in await svc.items("dlq", partition=p)] for p in (0, 1)}
            assert all(len(payloads) == 4 for payloads in order.values())
            assert await svc.redrive("dlq", to="target", limit=5) == 5
            moved = await _payloads(svc, "target")
            assert len(moved) == 5
            left = {i.payload for i in await svc.items("dlq")}
            assert len(left) == 3 and not left & set(moved)
            for payloads in order.values():
                taken = [m for m in moved if m in payloads]
                assert taken == payloads[: len(taken)]  # a head of the partition, in its order

    run(main())


def test_redrive_to_a_missing_queue_moves_nothing(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await _queues(svc)
            await dead_letter(svc, "q", [b"a"])
            with pytest.raises(NoQueueError):
                await svc.redrive("dlq", to="nope")
            with pytest.raises(NoQueueError):
                await svc.redrive("nope")
            assert await _payloads(svc, "dlq") == [b"a"]

    run(main())


def test_redrive_of_an_empty_queue_is_zero(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await _queues(svc)
            assert await svc.redrive("dlq") == 0
            assert await svc.redrive("q") == 0

    run(main())


def test_redriven_item_that_dies_again_gets_fresh_provenance(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await _queues(svc, lease_timeout=1_000, max_attempts=1)
            await dead_letter(svc, "q", [b"a"], reason=b"first death")
            await svc.redrive("dlq")
            (leased,) = await svc.lease("q")
            assert leased.attempts == 1
            await env.advance(1_000)
            assert provenance((await svc.items("dlq"))[0]) == (b"", "q", leased.id, "max-attempts")

    run(main())


def test_redrive_into_a_paused_queue_is_accepted(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await _queues(svc)
            await dead_letter(svc, "q", [b"a"])
            await svc.pause("q")
            assert await svc.redrive("dlq") == 1
            assert await svc.lease("q") == []
            await svc.resume("q")
            assert [i.payload for i in await svc.lease("q")] == [b"a"]

    run(main())


def test_redrive_survives_restart_exactly_once(rocks_env) -> None:
    env = rocks_env

    async def main() -> None:
        async with env.service() as svc:
            await _queues(svc)
            await dead_letter(svc, "q", [b"a", b"b", b"c"])
            assert await svc.redrive("dlq", limit=2) == 2
        async with env.service() as svc:
            assert await _payloads(svc, "q") == [b"a", b"b"]
            assert await _payloads(svc, "dlq") == [b"c"]
            assert (await svc.queue_stats("q")).produced == 5

    run(main())
