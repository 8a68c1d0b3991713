"""QGET queue id (SPEC section 7): the one item as QITEMS shows it, or None when no item has that id now.
An id names an item at one place in its queue, so an id that the item has left (completed, requeued,
dead-lettered) names nothing; a malformed id is an error, as for every command that takes ids."""

from __future__ import annotations

import pytest

from querator.errors import CommandError, NoQueueError
from querator.model import QueueOptions
from tests.service.features import exact
from tests.support import run


async def _listed(svc, queue: str, item_id: str):
    (item,) = [i for i in await svc.items(queue, limit=1000) if i.id == item_id]
    return item


def test_qget_of_each_state_is_the_qitems_entry(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q", QueueOptions(expire_timeout=600_000))
            await svc.produce("q", [b"leased", b"ready"], kind=b"k", reference=b"r", encoding=b"e")
            (scheduled_id,) = await svc.produce("q", [b"scheduled"], delay_ms=5_000)
            (leased,) = await svc.lease("q")
            (ready,) = [i for i in await svc.items("q") if i.state == "ready"]
            for item_id, state in ((leased.id, "leased"), (ready.id, "ready"), (scheduled_id, "scheduled")):
                got = await svc.get("q", item_id)
                assert got == await _listed(svc, "q", item_id)
                assert (got.id, got.state) == (item_id, state)
            got = await svc.get("q", leased.id)
            assert (got.payload, got.attempts, got.lease_deadline) == (b"leased", 1, leased.lease_deadline)
            assert (got.kind, got.reference, got.encoding) == (b"k", b"r", b"e")
            assert (got.reason, got.source_queue, got.source_id, got.dead_reason) == (b"", "", "", "")

    run(main())


def test_qget_of_a_dead_item_shows_its_provenance(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("dlq")
            await svc.create_queue("q", QueueOptions(dead_queue="dlq"))
            await svc.produce("q", [b"a"])
            (leased,) = await svc.lease("q")
            await svc.retry("q", [leased.id], dead=True, reason=b"bad")
            (dead,) = await svc.items("dlq")
            got = await svc.get("dlq", dead.id)
            assert got == dead
            assert (got.reason, got.source_queue, got.source_id, got.dead_reason) == (
                b"bad",
                "q",
                leased.id,
                "retry-dead",
            )
            assert await svc.get("q", leased.id) is None

    run(main())


def test_qget_is_none_once_the_item_has_left_that_id(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q", QueueOptions(lease_timeout=1_000))
            done_id, expiring_id, removed_id = await svc.produce("q", [b"done", b"expiring", b"removed"])
            done, expiring = await svc.lease("q", count=2)
            assert (done.id, expiring.id) == (done_id, expiring_id)
            await svc.complete("q", [done.id])
            await svc.remove("q", [removed_id])
            await env.advance(1_000)
            assert await svc.get("q", done_id) is None
            assert await svc.get("q", removed_id) is None
            assert await svc.get("q", expiring_id) is None
            (requeued,) = await svc.items("q")
            got = await svc.get("q", requeued.id)
            assert (got.payload, got.state, got.attempts) == (b"expiring", "ready", 1)

    run(main())


def test_qget_of_a_well_formed_id_that_names_nothing_is_none(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q", QueueOptions(partitions=2))
            (item_id,) = await svc.produce("q", [b"a"])
            uid, partition, seq = item_id.split("-")
            assert await svc.get("q", f"{uid}-{partition}-{int(seq) + 1000}") is None
            assert await svc.get("q", f"{int(uid) + 1000}-{partition}-{seq}") is None
            await svc.create_queue("other")
            (other_id,) = await svc.produce("other", [b"b"])
            assert await svc.get("q", other_id) is None

    run(main())


def test_qget_of_an_id_of_an_earlier_queue_of_the_same_name_is_none(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q")
            (old,) = await svc.produce("q", [b"old"])
            await svc.delete_queue("q")
            await svc.create_queue("q")
            await svc.produce("q", [b"new"])
            assert await svc.get("q", old) is None

    run(main())


@pytest.mark.parametrize("bad", ["abc", "", "1-0", "1-0-1-2", "1-2-1", "1--1", "-1-0-1", "1-0-x", " 1-0-1"])
def test_qget_of_a_malformed_id_is_an_error(env, bad) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q", QueueOptions(partitions=2))  # partition 2 is out of range
            with pytest.raises(CommandError, match=exact(f"invalid id '{bad}'")):
                await svc.get("q", bad)

    run(main())


def test_qget_of_a_missing_queue_is_noqueue(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            with pytest.raises(NoQueueError):
                await svc.get("nope", "1-0-1")

    run(main())


def test_qget_finds_items_in_every_partition(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q", QueueOptions(partitions=3))
            ids = [(await svc.produce("q", [b"%d" % n]))[0] for n in range(3)]
            assert sorted((await env.partition_of(svc)).values()) == [0, 1, 2]
            for n, item_id in enumerate(ids):
                assert (await svc.get("q", item_id)).payload == b"%d" % n

    run(main())


def test_qget_after_restart(rocks_env) -> None:
    env = rocks_env

    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q")
            (item_id,) = await svc.produce("q", [b"a"], kind=b"k")
            before = await svc.get("q", item_id)
        async with env.service() as svc:
            assert await svc.get("q", item_id) == before

    run(main())
