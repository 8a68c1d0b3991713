"""QPAUSE / QRESUME (SPEC section 7): a paused queue accepts produces and every lease-end command but hands
out nothing; a blocked QLEASE keeps waiting until the queue is resumed or its BLOCK ends. Pause survives
restarts; pausing a paused queue, or resuming a running one, is simply OK.

Interpretations where the SPEC leaves a choice (the implementation follows them):
- QEXTEND is accepted while paused (a worker busy with an item must keep its lease).
- Items keep their states while paused: ready items count as `ready` in QSTATS and QITEMS; timed work
  (lease expiry, schedules, expiry, dead-lettering) goes on; only handing out stops.
- A blocked QLEASE on a paused queue counts in `waiting-consumers`, and on resume the waiters are served
  in the order they arrived, as always.
"""

from __future__ import annotations

import asyncio

import pytest

from querator.errors import NoQueueError
from querator.model import QueueOptions
from tests.support import run


async def _paused_with(svc, payloads: list[bytes], **options) -> None:
    await svc.create_queue("q", QueueOptions(**options))
    if payloads:
        await svc.produce("q", payloads)
    await svc.pause("q")


def test_paused_queue_hands_out_nothing_and_resume_restores_fifo(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await _paused_with(svc, [b"a", b"b"])
            assert await svc.pause("q") is None
            assert await svc.lease("q") == []
            assert await svc.lease("q", count=10) == []
            stats = await svc.queue_stats("q")
            assert (stats.ready, stats.leased, stats.total) == (2, 0, 2)
            assert [i.state for i in await svc.items("q")] == ["ready", "ready"]
            assert await svc.resume("q") is None
            assert [i.payload for i in await svc.lease("q", count=10)] == [b"a", b"b"]

    run(main())


def test_qinfo_shows_paused(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q")
            assert (await svc.queue_info("q")).paused is False
            await svc.pause("q")
            assert (await svc.queue_info("q")).paused is True
            await svc.resume("q")
            assert (await svc.queue_info("q")).paused is False

    run(main())


def test_pause_and_resume_are_idempotent(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q")
            await svc.resume("q")  # never paused
            await svc.pause("q")
            await svc.pause("q")
            assert (await svc.queue_info("q")).paused is True
            await svc.resume("q")
            await svc.resume("q")
            assert (await svc.queue_info("q")).paused is False

    run(main())


def test_pause_and_resume_of_a_missing_queue_are_noqueue(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            with pytest.raises(NoQueueError):
                await svc.pause("nope")
            with pytest.raises(NoQueueError):
                await svc.resume("nope")

    run(main())


def test_paused_queue_accepts_produces(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await _paused_with(svc, [])
            ids = await svc.produce("q", [b"a", b"b"])
            ids += await svc.produce("q", [b"later"], delay_ms=1_000)
            assert len(set(ids)) == 3
            stats = await svc.queue_stats("q")
            assert (stats.ready, stats.scheduled, stats.produced) == (2, 1, 3)

    run(main())


def test_paused_queue_accepts_every_lease_end_command_and_extend(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("dlq")
            await svc.create_queue("q", QueueOptions(dead_queue="dlq"))
            await svc.produce("q", [b"done", b"again", b"later", b"dead", b"longer"])
            done, again, later, dead, longer = await svc.lease("q", count=5)
            await svc.pause("q")
            assert await svc.complete("q", [done.id]) == 1
            assert await svc.retry("q", [again.id], reason=b"r") == 1
            assert await svc.retry("q", [later.id], delay_ms=5_000) == 1
            assert await svc.retry("q", [dead.id], dead=True) == 1
            assert await svc.extend("q", [longer.id], lease_for_ms=120_000) == 1
            stats = await svc.queue_stats("q")
            assert (stats.ready, stats.scheduled, stats.leased, stats.completed, stats.retried) == (
                1,
                1,
                1,
                1,
                3,
            )
            assert [i.payload for i in await svc.items("dlq")] == [b"dead"]
            assert await svc.lease("q") == []

    run(main())


def test_items_whose_lease_ends_or_schedule_comes_due_wait_while_paused(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q", QueueOptions(lease_timeout=1_000))
            await svc.produce("q", [b"leased"])
            await svc.produce("q", [b"scheduled"], delay_ms=500)
            await svc.lease("q")
            await svc.pause("q")
            await env.advance(500)  # the schedule comes due
            await env.advance(500)  # the lease runs out
            stats = await svc.queue_stats("q")
            assert (stats.ready, stats.leased, stats.scheduled, stats.lease_expired) == (2, 0, 0, 1)
            assert await svc.lease("q", count=10) == []
            await svc.resume("q")
            assert [i.payload for i in await svc.lease("q", count=10)] == [b"scheduled", b"leased"]

    run(main())


def test_blocked_lease_keeps_waiting_while_paused_and_is_served_on_resume(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await _paused_with(svc, [b"before"])
            waiting = svc.lease("q", count=5, block_ms=0)
            await env.settle()
            await svc.produce("q", [b"during"])
            await env.advance(60_000)
            assert not waiting.done()
            assert (await svc.queue_stats("q")).waiting_consumers == 1
            await svc.resume("q")
            got = await asyncio.wait_for(waiting, 2)
            assert [i.payload for i in got] == [b"before", b"during"]
            assert (await svc.queue_stats("q")).leased == 2

    run(main())


def test_blocked_lease_on_a_paused_queue_ends_empty_when_its_block_ends(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await _paused_with(svc, [b"a"])
            waiting = svc.lease("q", block_ms=1_000)
            await env.advance(999)
            assert not waiting.done()
            await env.advance(1)
            assert await asyncio.wait_for(waiting, 2) == []
            stats = await svc.queue_stats("q")
            assert (stats.ready, stats.leased, stats.waiting_consumers) == (1, 0, 0)

    run(main())


def test_waiters_are_served_in_arrival_order_on_resume(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await _paused_with(svc, [])
            first = svc.lease("q", block_ms=0)
            await env.settle()
            second = svc.lease("q", block_ms=0)
            await env.settle()
            await svc.produce("q", [b"1", b"2"])
            await env.settle()
            assert not first.done() and not second.done()
            await svc.resume("q")
            assert [i.payload for i in await asyncio.wait_for(first, 2)] == [b"1"]
            assert [i.payload for i in await asyncio.wait_for(second, 2)] == [b"2"]

    run(main())


def test_pause_is_per_queue(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("dlq")
            await svc.create_queue("q", QueueOptions(dead_queue="dlq"))
            await svc.create_queue("other")
            await svc.produce("q", [b"a", b"b"])
            (item,) = await svc.lease("q")
            await svc.produce("other", [b"o"])
            await svc.pause("q")
            assert await svc.retry("q", [item.id], dead=True) == 1
            assert [i.payload for i in await svc.lease("other")] == [b"o"]
            assert [i.payload for i in await svc.lease("dlq")] == [b"a"]
            assert (await svc.queue_info("dlq")).paused is False

    run(main())


def test_paused_dead_queue_still_receives_dead_letters(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("dlq")
            await svc.create_queue("q", QueueOptions(lease_timeout=1_000, max_attempts=1, dead_queue="dlq"))
            await svc.pause("dlq")
            await svc.produce("q", [b"a"])
            await svc.lease("q")
            await env.advance(1_000)
            assert [i.payload for i in await svc.items("dlq")] == [b"a"]
            assert await svc.lease("dlq") == []

    run(main())


def test_pause_survives_restart(rocks_env) -> None:
    env = rocks_env

    async def main() -> None:
        async with env.service() as svc:
            await _paused_with(svc, [b"a"])
            await svc.create_queue("resumed")
            await svc.pause("resumed")
            await svc.resume("resumed")
        async with env.service() as svc:
            assert (await svc.queue_info("q")).paused is True
            assert (await svc.queue_info("resumed")).paused is False
            assert await svc.lease("q") == []
            await svc.resume("q")
        async with env.service() as svc:
            assert (await svc.queue_info("q")).paused is False
            assert [i.payload for i in await svc.lease("q")] == [b"a"]

    run(main())
