"""BLOCK deadlines on the injectable clock: a blocking lease ends when the manual clock passes its
deadline, never before and never by real time, so none of these tests sleeps. The waiting line's
round-robin deal is tested on its own too."""

from __future__ import annotations

import asyncio

from querator.clock import ManualClock
from querator.model import LeasedItem
from querator.waiters import WaitLine
from tests.support import run


def test_blocking_lease_ends_empty_when_the_clock_passes_its_deadline(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q")
            waiting = svc.lease("q", block_ms=1_000)
            await env.advance(999)
            assert not waiting.done()
            assert (await svc.queue_stats("q")).waiting_consumers == 1
            await env.advance(1)
            assert waiting.done()
            assert await waiting == []
            assert (await svc.queue_stats("q")).waiting_consumers == 0

    run(main())


def test_blocking_lease_waits_while_the_clock_stands_still(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q")
            waiting = svc.lease("q", block_ms=1)
            await env.settle(50)
            assert not waiting.done()  # real time passes, the service's clock does not
            await env.advance(1)
            assert await waiting == []

    run(main())


def test_each_waiter_ends_at_its_own_deadline(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q")
            short = svc.lease("q", block_ms=100)
            long = svc.lease("q", block_ms=300)
            forever = svc.lease("q", block_ms=0)
            await env.advance(100)
            assert short.done() and await short == []
            assert not long.done()
            await env.advance(200)
            assert long.done() and await long == []
            await env.advance(10**9)
            assert not forever.done()  # BLOCK 0 has no deadline
            await svc.produce("q", [b"a"])
            assert [i.payload for i in await asyncio.wait_for(forever, 2)] == [b"a"]

    run(main())


def test_served_waiter_is_not_answered_again_at_its_deadline(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await env.create(svc, "q", lease_timeout=60_000)
            waiting = svc.lease("q", count=2, block_ms=1_000)
            await env.settle()
            await svc.produce("q", [b"a"])
            (item,) = await asyncio.wait_for(waiting, 2)
            await env.advance(1_000)
            stats = await svc.queue_stats("q")
            assert (stats.leased, stats.ready, stats.waiting_consumers) == (1, 0, 0)
            assert await svc.complete("q", [item.id]) == 1

    run(main())


def test_lease_that_loses_the_race_waits_out_the_rest_of_its_block(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q")
            await svc.produce("q", [b"a"])
            first = svc.lease("q")
            second = svc.lease("q", block_ms=1_000)  # planned on "a" too, but comes after
            assert [i.payload for i in await first] == [b"a"]
            await env.advance(999)
            assert not second.done()
            await env.advance(1)
            assert await second == []

    run(main())


def test_lease_that_loses_the_race_after_its_deadline_answers_empty_at_once(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q")
            await svc.produce("q", [b"a"])
            first = svc.lease("q")
            second = svc.lease("q", block_ms=10)
            env.clock.advance(10)  # the deadline passes before the partition answers the lease
            assert [i.payload for i in await first] == [b"a"]
            assert await asyncio.wait_for(second, 2) == []
            assert (await svc.queue_stats("q")).waiting_consumers == 0

    run(main())


def _item(n: int) -> LeasedItem:
    return LeasedItem(f"1-0-{n}", b"%d" % n, 1, 0)


def test_deal_goes_round_by_round_in_arrival_order() -> None:
    async def main() -> list[list[int]]:
        line = WaitLine(ManualClock(), asyncio.get_running_loop())
        futures = [line.wait(count, None, lambda: None) for count in (2, 1, 3)]
        asked: list[int] = []

        def take(count: int) -> list[LeasedItem]:
            asked.append(count)
            return [_item(n) for n in range(4)]

        dealt = line.deal(take)
        assert asked == [6]  # what all the live waiters want, in one pass
        assert [f for f, _ in dealt] == futures
        assert len(line) == 0  # everyone who got an item left the line
        return [[int(i.payload) for i in items] for _, items in dealt]

    assert run(main()) == [[0, 3], [1], [2]]


def test_deal_skips_waiters_that_are_gone_and_keeps_those_not_served() -> None:
    async def main() -> None:
        line = WaitLine(ManualClock(), asyncio.get_running_loop())
        gone = line.wait(1, None, lambda: None)
        first = line.wait(1, None, lambda: None)
        last = line.wait(1, None, lambda: None)
        gone.cancel()
        dealt = line.deal(lambda count: [_item(n) for n in range(min(count, 1))])
        assert [(f, [i.payload for i in items]) for f, items in dealt] == [(first, [b"0"])]
        assert len(line) == 1 and line.waiting() == 1
        assert not last.done()

    run(main())


def test_deadline_timer_leaves_a_dealt_waiter_to_its_step() -> None:
    """A waiter dealt items whose reply waits for a sync is answered by that step, not by its deadline."""

    async def main() -> None:
        clock = ManualClock()
        line = WaitLine(clock, asyncio.get_running_loop())
        waiting = line.wait(1, clock.now_ms() + 5, lambda: None)
        line.deal(lambda count: [_item(0)])
        clock.advance(5)
        assert not waiting.done()

    run(main())
