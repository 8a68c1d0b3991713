"""FIFO order within a partition, the produce partition choice, and lease rotation over partitions."""

from __future__ import annotations

from querator.model import QueueOptions
from tests.support import run


def test_single_partition_is_strict_fifo_for_one_consumer(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q")
            payloads = [f"item-{i}".encode() for i in range(20)]
            await svc.produce("q", payloads[:7])
            await svc.produce("q", payloads[7:8])
            await svc.produce("q", payloads[8:])
            got = []
            for count in (1, 3, 5, 11):
                got.extend(i.payload for i in await svc.lease("q", count=count))
            assert got == payloads
            assert await svc.lease("q") == []

    run(main())


def test_produce_returns_ids_in_order_and_lease_hands_them_in_that_order(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q")
            ids = await svc.produce("q", [b"a", b"b", b"c"])
            assert len(ids) == 3
            assert len(set(ids)) == 3
            assert all(isinstance(i, str) and i.isascii() and " " not in i and len(i) <= 64 for i in ids)
            leased = await svc.lease("q", count=3)
            assert [i.payload for i in leased] == [b"a", b"b", b"c"]
            assert [i.id for i in leased] == ids

    run(main())


def test_produce_with_kind_reference_encoding_keeps_them(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q")
            await svc.produce("q", [b"\x00\xffbin"], kind=b"k", reference=b"r", encoding=b"e")
            await svc.produce("q", [b"plain"])
            first, second = await svc.lease("q", count=2)
            assert (first.payload, first.kind, first.reference, first.encoding) == (
                b"\x00\xffbin",
                b"k",
                b"r",
                b"e",
            )
            assert (second.kind, second.reference, second.encoding) == (b"", b"", b"")

    run(main())


def test_requeued_item_goes_behind_items_already_ready(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q")
            await svc.produce("q", [b"a", b"b", b"c"])
            (a,) = await svc.lease("q")
            assert await svc.retry("q", [a.id]) == 1
            await svc.produce("q", [b"d"])
            got = [i.payload for i in await svc.lease("q", count=10)]
            assert got == [b"b", b"c", b"a", b"d"]

    run(main())


def test_one_produce_goes_to_one_partition(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q", QueueOptions(partitions=4))
            ids = await svc.produce("q", [b"a", b"b", b"c", b"d", b"e"])
            where = await env.partition_of(svc)
            assert len({where[i] for i in ids}) == 1
            stats = await svc.queue_stats("q")
            assert sorted(p.ready for p in stats.partitions) == [0, 0, 0, 5]

    run(main())


def test_produce_goes_to_partition_with_fewest_ready_ties_rotate(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q", QueueOptions(partitions=3))
            # All empty: ties rotate 0, 1, 2.
            first = await svc.produce("q", [b"a0", b"a1", b"a2"])
            second = await svc.produce("q", [b"b"])
            third = await svc.produce("q", [b"c"])
            where = await env.partition_of(svc)
            assert [where[first[0]], where[second[0]], where[third[0]]] == [0, 1, 2]
            # Ready now 3, 1, 1: the next goes to a partition with 1 ready, not partition 0.
            fourth = await svc.produce("q", [b"d"])
            where = await env.partition_of(svc)
            assert where[fourth[0]] in (1, 2)
            # Ready now 3, 2, 1 (or 3, 1, 2): the next goes to the one left with 1.
            fifth = await svc.produce("q", [b"e"])
            where = await env.partition_of(svc)
            assert {where[fourth[0]], where[fifth[0]]} == {1, 2}
            stats = await svc.queue_stats("q")
            assert [p.ready for p in stats.partitions] == [3, 2, 2]

    run(main())


def test_produce_ties_rotate_when_all_partitions_equal(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q", QueueOptions(partitions=3))
            ids = [(await svc.produce("q", [f"{i}".encode()]))[0] for i in range(6)]
            where = await env.partition_of(svc)
            assert [where[i] for i in ids] == [0, 1, 2, 0, 1, 2]

    run(main())


def test_produce_counts_only_ready_items_not_leased(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q", QueueOptions(partitions=2))
            a = await svc.produce("q", [b"a1", b"a2"])  # partition 0
            b = await svc.produce("q", [b"b1"])  # partition 1
            where = await env.partition_of(svc)
            assert (where[a[0]], where[b[0]]) == (0, 1)
            # Lease both items of partition 0: it now has 0 ready, partition 1 has 1.
            leased = await svc.lease("q", count=3)
            assert len(leased) == 3
            await svc.produce("q", [b"x"])
            await svc.produce("q", [b"y"])
            stats = await svc.queue_stats("q")
            assert [p.ready for p in stats.partitions] == [1, 1]
            assert [p.leased for p in stats.partitions] == [2, 1]

    run(main())


def test_consecutive_leases_rotate_over_partitions_with_ready_items(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q", QueueOptions(partitions=3))
            for i in range(3):
                await svc.produce("q", [f"p{i}-1".encode(), f"p{i}-2".encode()])
            where = await env.partition_of(svc)
            seen = []
            for _ in range(6):
                (item,) = await svc.lease("q")
                seen.append(where[item.id])
            assert seen == [0, 1, 2, 0, 1, 2]

    run(main())


def test_lease_rotation_skips_empty_partitions_so_one_consumer_sees_all(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q", QueueOptions(partitions=4))
            # Partition 0 gets many items, partition 2 one; partitions 1 and 3 stay empty.
            await svc.produce("q", [f"big-{i}".encode() for i in range(10)])  # p0
            await svc.produce("q", [b"x"])  # p1
            await svc.produce("q", [b"y"])  # p2
            await svc.produce("q", [b"z"])  # p3
            ids = await env.partition_of(svc)
            one_each = [i for i, p in ids.items() if p != 0]
            assert await svc.remove("q", [i for i in one_each if ids[i] in (1, 3)]) == 2
            payloads = []
            for _ in range(4):
                (item,) = await svc.lease("q")
                payloads.append(item.payload)
            # Rotation skips the empty partitions 1 and 3: partition 2's single item comes second.
            assert payloads == [b"big-0", b"y", b"big-1", b"big-2"]

    run(main())


def test_one_lease_reply_may_hold_items_of_several_partitions(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q", QueueOptions(partitions=3))
            for p in range(3):
                await svc.produce("q", [f"p{p}".encode()])
            leased = await svc.lease("q", count=10)
            assert sorted(i.payload for i in leased) == [b"p0", b"p1", b"p2"]
            where = await env.partition_of(svc)
            assert sorted(where[i.id] for i in leased) == [0, 1, 2]
            assert all(i.attempts == 1 for i in leased)

    run(main())


def test_fifo_holds_within_each_partition(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q", QueueOptions(partitions=2))
            await svc.produce("q", [b"a1", b"a2", b"a3"])  # p0
            await svc.produce("q", [b"b1", b"b2", b"b3"])  # p1
            got = [i.payload for i in await svc.lease("q", count=1)]
            for _ in range(5):
                got.extend(i.payload for i in await svc.lease("q", count=1))
            assert [p for p in got if p.startswith(b"a")] == [b"a1", b"a2", b"a3"]
            assert [p for p in got if p.startswith(b"b")] == [b"b1", b"b2", b"b3"]

    run(main())
