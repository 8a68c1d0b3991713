"""Restart on RocksDB: close the Service and open a new one on the same data directory.

The `rocks_env` fixture skips the memory backend, which keeps nothing across a close. The clock is shared
by the two services, so moving it between them is time passing while the server is down.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from querator.model import QueueOptions, QueueUpdate
from querator.service import Service
from tests.support import run


def _snapshot(items) -> list[tuple]:
    return [
        (
            i.id,
            i.state,
            i.attempts,
            i.created_at,
            i.enqueue_at,
            i.lease_deadline,
            i.expire_deadline,
            i.kind,
            i.reference,
            i.encoding,
            i.payload,
        )
        for i in items
    ]


def test_restart_keeps_queues_options_and_info(rocks_env) -> None:
    env = rocks_env

    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("dlq")
            await svc.create_queue(
                "q",
                QueueOptions(
                    partitions=3,
                    lease_timeout=2_000,
                    expire_timeout=90_000,
                    max_attempts=5,
                    dead_queue="dlq",
                    reference="ref",
                ),
            )
            await env.advance(10)
            await svc.update_queue("q", QueueUpdate(partitions=4))
            before = {name: await svc.queue_info(name) for name in await svc.list_queues()}
        async with env.service() as svc:
            assert await svc.list_queues() == ["dlq", "q"]
            after = {name: await svc.queue_info(name) for name in await svc.list_queues()}
            assert after == before
            assert after["q"].partitions == 4
            # The dead-queue link is live again: the dead queue cannot be deleted.
            with pytest.raises(Exception, match="'q'"):
                await svc.delete_queue("dlq")

    run(main())


def test_restart_keeps_items_leases_attempts_deadlines_and_schedules(rocks_env) -> None:
    env = rocks_env

    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q", QueueOptions(partitions=2, lease_timeout=5_000))
            await svc.produce("q", [b"a", b"b", b"c"], kind=b"k", reference=b"r", encoding=b"e")
            await svc.produce("q", [b"sched"], delay_ms=3_000)
            await svc.produce("q", [b"d"])
            leased = await svc.lease("q", count=2)
            await svc.retry("q", [leased[0].id])
            (again,) = await svc.lease("q")
            before = _snapshot(await env.all_items(svc))
            stats_before = await svc.queue_stats("q")
        async with env.service() as svc:
            assert _snapshot(await env.all_items(svc)) == before
            s = await svc.queue_stats("q")
            assert (s.ready, s.leased, s.scheduled) == (stats_before.ready, stats_before.leased, 1)
            assert [(p.ready, p.leased, p.scheduled) for p in s.partitions] == [
                (p.ready, p.leased, p.scheduled) for p in stats_before.partitions
            ]
            # The leases are still live: their ids complete them.
            assert await svc.complete("q", [leased[1].id, again.id]) == 2
            # The schedule still fires at its due time, not before.
            await env.advance(2_999)
            assert [i.state for i in await env.all_items(svc) if i.payload == b"sched"] == ["scheduled"]
            await env.advance(1)
            assert [i.state for i in await env.all_items(svc) if i.payload == b"sched"] == ["ready"]

    run(main())


def test_restart_keeps_items_of_partitions_added_by_update(rocks_env) -> None:
    env = rocks_env

    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q")
            await svc.produce("q", [b"a"])
            await svc.update_queue("q", QueueUpdate(partitions=3))
            await svc.produce("q", [b"b"])
            await svc.produce("q", [b"c"])
            before = await env.partition_of(svc)
            assert sorted(before.values()) == [0, 1, 2]
        async with env.service() as svc:
            assert await env.partition_of(svc) == before
            got = await svc.lease("q", count=3)
            assert sorted(i.payload for i in got) == [b"a", b"b", b"c"]

    run(main())


def test_restart_keeps_fifo_order_of_remaining_items(rocks_env) -> None:
    env = rocks_env

    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q")
            await svc.produce("q", [f"{i}".encode() for i in range(10)])
            got = await svc.lease("q", count=3)
            await svc.complete("q", [i.id for i in got])
        async with env.service() as svc:
            got = await svc.lease("q", count=10)
            assert [i.payload for i in got] == [f"{i}".encode() for i in range(3, 10)]

    run(main())


def test_restart_keeps_counters(rocks_env) -> None:
    env = rocks_env

    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q", QueueOptions(lease_timeout=1_000, max_attempts=2))
            await svc.produce("q", [b"a", b"b", b"c", b"d"])
            a, b, c, d = await svc.lease("q", count=4)
            assert d.payload == b"d"
            await svc.complete("q", [a.id])
            await svc.retry("q", [b.id])
            await svc.retry("q", [c.id], dead=True)
            await env.advance(1_000)  # d's lease expires
            before = await svc.queue_stats("q")
            assert (before.produced, before.completed, before.retried) == (4, 1, 2)
            assert (before.lease_expired, before.dead_lettered) == (1, 1)
        async with env.service() as svc:
            after = await svc.queue_stats("q")
            counters = ("produced", "completed", "retried", "lease_expired", "dead_lettered", "ready")
            assert [getattr(after, n) for n in counters] == [getattr(before, n) for n in counters]

    run(main())


def test_lease_that_expired_while_closed_ends_at_once_after_reopen(rocks_env) -> None:
    env = rocks_env

    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q", QueueOptions(lease_timeout=1_000))
            await svc.produce("q", [b"a", b"b"])
            (a,) = await svc.lease("q")
        env.clock.advance(5_000)  # the server is down while the deadline passes
        async with env.service() as svc:
            await env.settle()
            items = await env.all_items(svc)
            assert [(i.payload, i.state) for i in items] == [(b"b", "ready"), (b"a", "ready")]
            assert items[1].id != a.id
            assert items[1].attempts == 1
            assert await svc.complete("q", [a.id]) == 0
            assert (await svc.queue_stats("q")).lease_expired == 1

    run(main())


def test_schedule_due_while_closed_becomes_ready_at_once_after_reopen(rocks_env) -> None:
    env = rocks_env

    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q")
            await svc.produce("q", [b"later"], delay_ms=1_000)
        env.clock.advance(2_000)
        async with env.service() as svc:
            await env.settle()
            assert [i.payload for i in await svc.lease("q")] == [b"later"]

    run(main())


def test_expiry_due_while_closed_dead_letters_at_once_after_reopen(rocks_env) -> None:
    env = rocks_env

    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("dlq")
            await svc.create_queue(
                "q", QueueOptions(lease_timeout=1_000, expire_timeout=3_000, dead_queue="dlq")
            )
            await svc.produce("q", [b"old"])
        env.clock.advance(3_000)
        async with env.service() as svc:
            await env.settle()
            assert await env.all_items(svc) == []
            assert [i.payload for i in await env.all_items(svc, "dlq")] == [b"old"]
            assert (await svc.queue_stats("q")).dead_lettered == 1

    run(main())


def test_dead_letter_survives_restart_exactly_once(rocks_env) -> None:
    env = rocks_env

    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("dlq")
            await svc.create_queue("q", QueueOptions(dead_queue="dlq"))
            await svc.produce("q", [b"a"])
            (item,) = await svc.lease("q")
            assert await svc.retry("q", [item.id], dead=True) == 1
        async with env.service() as svc:
            assert await env.all_items(svc) == []
            assert [(i.payload, i.attempts) for i in await env.all_items(svc, "dlq")] == [(b"a", 0)]
            assert (await svc.queue_stats("dlq")).ready == 1

    run(main())


def test_ids_issued_after_restart_never_collide_with_earlier_ones(rocks_env) -> None:
    env = rocks_env

    async def main() -> None:
        issued: set[str] = set()
        async with env.service() as svc:
            await svc.create_queue("q", QueueOptions(partitions=2))
            issued.update(await svc.produce("q", [b"a", b"b"]))
            issued.update(await svc.produce("q", [b"c"]))
            got = await svc.lease("q", count=3)
            # Complete everything: no key of the queue is left to derive the next id from.
            assert await svc.complete("q", [i.id for i in got]) == 3
        async with env.service() as svc:
            fresh = await svc.produce("q", [b"d", b"e"])
            fresh += await svc.produce("q", [b"f"])
            assert not set(fresh) & issued
            issued.update(fresh)
            got = await svc.lease("q", count=3)
            assert await svc.retry("q", [got[0].id]) == 1
            requeued = {i.id for i in await env.all_items(svc) if i.state == "ready"}
            assert len(requeued) == 1
            assert not requeued & issued
            issued.update(requeued)
        async with env.service() as svc:
            assert {i.id for i in await env.all_items(svc)} <= issued
            fresh = await svc.produce("q", [b"g"])
            fresh += await svc.produce("q", [b"h"])
            assert not set(fresh) & issued

    run(main())


def test_old_ids_do_not_complete_items_of_a_recreated_queue(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q")
            await svc.produce("q", [b"old"])
            (old,) = await svc.lease("q")
            await svc.delete_queue("q")
            await svc.create_queue("q")
            await svc.produce("q", [b"new"])
            (new,) = await svc.lease("q")
            assert new.id != old.id
            assert await svc.complete("q", [old.id]) == 0
            assert await svc.extend("q", [old.id]) == 0
            assert await svc.retry("q", [old.id]) == 0
            assert await svc.remove("q", [old.id]) == 0
            assert [(i.id, i.state) for i in await env.all_items(svc)] == [(new.id, "leased")]
            assert await svc.complete("q", [new.id]) == 1

    run(main())


def test_old_ids_do_not_complete_items_of_a_queue_recreated_across_restart(rocks_env) -> None:
    env = rocks_env

    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q")
            await svc.produce("q", [b"old"])
            (old,) = await svc.lease("q")
            await svc.delete_queue("q")
        async with env.service() as svc:
            assert await svc.list_queues() == []
            await svc.create_queue("q")
            await svc.produce("q", [b"new"])
            (new,) = await svc.lease("q")
        async with env.service() as svc:
            assert await svc.complete("q", [old.id]) == 0
            assert [i.id for i in await env.all_items(svc)] == [new.id]
            assert await svc.complete("q", [new.id]) == 1

    run(main())


def test_deleted_queue_stays_deleted_after_restart(rocks_env) -> None:
    env = rocks_env

    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("gone")
            await svc.create_queue("kept")
            await svc.produce("gone", [b"x"])
            await svc.produce("kept", [b"y"])
            await svc.delete_queue("gone")
        async with env.service() as svc:
            assert await svc.list_queues() == ["kept"]
            await svc.create_queue("gone")
            assert (await svc.queue_stats("gone")).total == 0
            assert [i.payload for i in await env.all_items(svc, "kept")] == [b"y"]

    run(main())


_CLOSE_RACE = textwrap.dedent(
    """
    import asyncio, sys
    from querator.clock import ManualClock
    from querator.config import Config
    from querator.service import Service

    async def main():
        # Close after every number of event-loop turns while one fsync is in flight, so one of the closes
        # lands in each window: before the fsync, during it, and after it but before its callbacks ran.
        for turns in range(40):
            svc = Service(Config(backend="rocksdb", data=f"{sys.argv[1]}/{turns}"), clock=ManualClock())
            await svc.start()
            await svc.create_queue("q")
            svc.delete_queue("q")  # a metadata write: one fsync in flight
            for _ in range(turns):
                await asyncio.sleep(0)
            await svc.close()
        print("closed")

    asyncio.run(main())
    """
)


def test_close_returns_when_an_fsync_just_finished(rocks_env, tmp_path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _CLOSE_RACE, str(tmp_path / "race")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail("Service.close() did not return within 30 s for 40 closes (a hang in _GroupSync.drain)")
    assert proc.returncode == 0, err.decode()
    assert out.decode().split() == ["closed"]


def test_reopen_while_closed_service_is_still_referenced(rocks_env) -> None:
    env = rocks_env

    async def main() -> None:
        first = Service(env.config(), clock=env.clock)  # a plain Service, closed but still referenced
        await first.start()
        await first.create_queue("q")
        await first.produce("q", [b"a"])
        await env.settle()
        await first.close()
        second = Service(env.config(), clock=env.clock)
        await second.start()
        try:
            assert await second.list_queues() == ["q"]
            assert (await second.queue_stats("q")).ready == 1
        finally:
            await second.close()
        assert first.queues  # the closed service is still referenced up to here

    run(main())
