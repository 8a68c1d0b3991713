"""QPRODUCE DEDUP and the queue's DEDUP-WINDOW (SPEC section 7, Deduplication; Counters and options).

A duplicate call (its key already used on this queue within the window) stores nothing, returns the
first call's ids and counts once in `deduplicated`. Keys are remembered from their first use for the
window, whatever happens to the items, across restarts and partition growth; then they are forgotten and
take no memory or storage. The clock is a ManualClock: windows pass by `env.advance`, never by sleeping.

Interpretations where the SPEC leaves a choice (the implementation follows them):
- A key used at t is remembered while now < t + window: at exactly t + window it is forgotten (as a lease
  ends, or an item expires, at exactly its deadline). A duplicate does not renew the window.
- The key alone decides: a duplicate with other payloads, another count or other options still returns the
  first call's ids (all of them) and stores nothing.
- Keys are bytes, compared exactly (case and every byte count).
- A queue deleted and created again is a new queue: it remembers no key of the old one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import sys

import pytest

from querator.errors import CommandError, NoQueueError
from querator.model import QueueOptions, QueueUpdate
from querator.service import Service
from tests.service.conftest import Env
from tests.service.features import (
    eventually,
    eventually_async,
    exact,
    key_count,
    remembered_keys,
    stable_key_count,
)
from tests.support import run

WINDOW = 300_000  # the default, SPEC section 7
WINDOW_RANGE = "DEDUP-WINDOW must be between 0 and 86400000"


async def _snapshot(svc, queue: str = "q") -> tuple:
    """Everything a duplicate call must leave as it was, but `deduplicated`."""
    stats = await svc.queue_stats(queue)
    items = await svc.items(queue, limit=1000)
    return dataclasses.replace(stats, deduplicated=0), items, await svc.queue_info(queue)


# -- the duplicate call -------------------------------------------------------------------------------------


def test_dedup_repeat_returns_first_ids_and_stores_nothing(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q")
            first = await svc.produce("q", [b"a", b"b"], dedup=b"order-1")
            assert len(first) == 2
            before = await _snapshot(svc)
            assert (before[0].produced, before[0].total) == (2, 2)
            assert await svc.produce("q", [b"a", b"b"], dedup=b"order-1") == first
            assert await _snapshot(svc) == before
            assert (await svc.queue_stats("q")).deduplicated == 1

    run(main())


def test_dedup_key_alone_decides_whatever_the_payloads_and_options(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q")
            first = await svc.produce("q", [b"a", b"b", b"c"], dedup=b"k")
            before = await _snapshot(svc)
            assert await svc.produce("q", [b"other"], dedup=b"k") == first
            again = await svc.produce("q", [b"x", b"y"], dedup=b"k", delay_ms=5_000, kind=b"kind")
            assert again == first
            assert await _snapshot(svc) == before
            assert (await svc.queue_stats("q")).deduplicated == 2

    run(main())


def test_deduplicated_counts_calls_not_items(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q")
            await svc.produce("q", [b"a", b"b", b"c"], dedup=b"k")
            for _ in range(3):
                await svc.produce("q", [b"a", b"b", b"c"], dedup=b"k")
            stats = await svc.queue_stats("q")
            assert (stats.deduplicated, stats.produced, stats.total) == (3, 3, 3)

    run(main())


def test_first_call_with_a_key_is_an_ordinary_produce(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q")
            ids = await svc.produce("q", [b"a"], dedup=b"k1", kind=b"k", reference=b"r", encoding=b"e")
            ids += await svc.produce("q", [b"b"], dedup=b"k2")
            ids += await svc.produce("q", [b"c"])
            assert len(set(ids)) == 3
            got = await svc.lease("q", count=3)
            assert [(i.id, i.payload) for i in got] == list(zip(ids, [b"a", b"b", b"c"], strict=True))
            assert (got[0].kind, got[0].reference, got[0].encoding) == (b"k", b"r", b"e")
            stats = await svc.queue_stats("q")
            assert (stats.produced, stats.deduplicated) == (3, 0)

    run(main())


def test_dedup_keys_are_compared_byte_for_byte(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q")
            keys = [b"key", b"KEY", b"key ", b"\x00key", b"\xffkey"]
            ids = [await svc.produce("q", [b"p"], dedup=k) for k in keys]
            assert len({tuple(i) for i in ids}) == len(keys)
            assert [await svc.produce("q", [b"p"], dedup=k) for k in keys] == ids
            stats = await svc.queue_stats("q")
            assert (stats.total, stats.deduplicated) == (5, 5)

    run(main())


def test_duplicate_of_a_scheduled_produce_returns_its_ids_and_schedules_nothing_more(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q")
            first = await svc.produce("q", [b"later"], dedup=b"k", delay_ms=10_000)
            assert await svc.produce("q", [b"later"], dedup=b"k", delay_ms=10_000) == first
            assert await svc.produce("q", [b"now"], dedup=b"k") == first
            stats = await svc.queue_stats("q")
            assert (stats.scheduled, stats.ready, stats.total) == (1, 0, 1)

    run(main())


def test_concurrent_calls_with_one_key_store_once_whatever_partition_each_would_choose(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q", QueueOptions(partitions=4))
            # Handed off together (as a pipelining client does): without deduplication the produces would
            # go to four different partitions, since each partition has no ready item.
            calls = [svc.produce("q", [b"p%d" % n], dedup=b"same") for n in range(4)]
            results = await asyncio.gather(*calls)
            assert len(results[0]) == 1
            assert results == [results[0]] * 4
            stats = await svc.queue_stats("q")
            assert (stats.total, stats.produced, stats.deduplicated) == (1, 1, 3)
            (item,) = await svc.items("q")
            assert item.id == results[0][0]

    run(main())


# -- what the key is remembered through ---------------------------------------------------------------------


async def _lease(svc) -> None:
    await svc.lease("q")


async def _complete(svc) -> None:
    (item,) = await svc.lease("q")
    assert await svc.complete("q", [item.id]) == 1


async def _retry(svc) -> None:
    (item,) = await svc.lease("q")
    assert await svc.retry("q", [item.id]) == 1


async def _expire_lease(svc) -> None:
    await svc.lease("q")
    svc.clock.advance(1_000)  # the queue's lease timeout


async def _dead_letter(svc) -> None:
    (item,) = await svc.lease("q")
    assert await svc.retry("q", [item.id], dead=True) == 1


async def _remove(svc) -> None:
    (item,) = await svc.items("q")
    assert await svc.remove("q", [item.id]) == 1


async def _clear(svc) -> None:
    assert await svc.clear("q") == 1


@pytest.mark.parametrize(
    "action",
    [_lease, _complete, _retry, _expire_lease, _dead_letter, _remove, _clear],
    ids=lambda a: a.__name__.strip("_"),
)
def test_key_is_remembered_whatever_happens_to_the_items(env, action) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("dlq")
            await svc.create_queue("q", QueueOptions(lease_timeout=1_000, dead_queue="dlq"))
            first = await svc.produce("q", [b"a"], dedup=b"k")
            await action(svc)
            await env.settle()
            before = await _snapshot(svc)
            dead_before = await svc.queue_stats("dlq")
            assert await svc.produce("q", [b"a"], dedup=b"k") == first
            assert await _snapshot(svc) == before
            assert await svc.queue_stats("dlq") == dead_before
            assert (await svc.queue_stats("q")).deduplicated == 1

    run(main())


def test_key_is_remembered_after_the_items_reach_the_dead_queue_by_max_attempts(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("dlq")
            await svc.create_queue("q", QueueOptions(lease_timeout=100, max_attempts=1, dead_queue="dlq"))
            first = await svc.produce("q", [b"a"], dedup=b"k")
            await svc.lease("q")
            await env.advance(100)
            assert len(await env.all_items(svc, "dlq")) == 1
            assert await svc.produce("q", [b"a"], dedup=b"k") == first
            assert (await svc.queue_stats("q")).total == 0

    run(main())


def test_key_is_remembered_across_partition_growth(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q")
            first = await svc.produce("q", [b"a"], dedup=b"k")
            await svc.update_queue("q", QueueUpdate(partitions=4))
            # Partition 0 now has the most ready items: a new produce would go elsewhere.
            await svc.produce("q", [b"b", b"c"])
            before = await _snapshot(svc)
            assert await svc.produce("q", [b"a"], dedup=b"k") == first
            assert await _snapshot(svc) == before
            # A key first used after the growth is remembered in whatever partition its items went to.
            later = [await svc.produce("q", [b"n%d" % n], dedup=b"n%d" % n) for n in range(4)]
            assert [await svc.produce("q", [b"x"], dedup=b"n%d" % n) for n in range(4)] == later
            stats = await svc.queue_stats("q")
            assert (stats.total, stats.deduplicated) == (7, 5)

    run(main())


def test_key_is_scoped_to_one_queue(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q1")
            await svc.create_queue("q2")
            in_q1 = await svc.produce("q1", [b"a"], dedup=b"k")
            in_q2 = await svc.produce("q2", [b"a"], dedup=b"k")
            assert in_q1 != in_q2
            assert (await svc.queue_stats("q2")).deduplicated == 0
            assert await svc.produce("q1", [b"a"], dedup=b"k") == in_q1
            assert await svc.produce("q2", [b"a"], dedup=b"k") == in_q2
            for name in ("q1", "q2"):
                stats = await svc.queue_stats(name)
                assert (stats.total, stats.deduplicated) == (1, 1)

    run(main())


def test_queue_deleted_and_created_again_remembers_no_key(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q")
            old = await svc.produce("q", [b"a"], dedup=b"k")
            await svc.delete_queue("q")
            await svc.create_queue("q")
            new = await svc.produce("q", [b"a"], dedup=b"k")
            assert new != old
            stats = await svc.queue_stats("q")
            assert (stats.total, stats.deduplicated) == (1, 0)

    run(main())


def test_duplicate_of_a_missing_queue_is_noqueue(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            with pytest.raises(NoQueueError):
                await svc.produce("nope", [b"a"], dedup=b"k")

    run(main())


# -- the window ---------------------------------------------------------------------------------------------


def test_default_dedup_window_is_five_minutes(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q")
            assert QueueOptions().dedup_window == WINDOW
            assert (await svc.queue_info("q")).dedup_window == WINDOW
            first = await svc.produce("q", [b"a"], dedup=b"k")
            await env.advance(WINDOW - 1)
            assert await svc.produce("q", [b"a"], dedup=b"k") == first
            await env.advance(1)
            second = await svc.produce("q", [b"a"], dedup=b"k")
            assert second != first
            stats = await svc.queue_stats("q")
            assert (stats.total, stats.produced, stats.deduplicated) == (2, 2, 1)

    run(main())


def test_window_counts_from_first_use_and_a_duplicate_does_not_renew_it(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await env.create(svc, "q", dedup_window=1_000)
            first = await svc.produce("q", [b"a"], dedup=b"k")
            await env.advance(900)
            assert await svc.produce("q", [b"a"], dedup=b"k") == first
            await env.advance(100)  # 1000 after the first use, 100 after the duplicate
            second = await svc.produce("q", [b"a"], dedup=b"k")
            assert second != first
            # The new call is the key's first use now: its window starts again from here.
            await env.advance(999)
            assert await svc.produce("q", [b"a"], dedup=b"k") == second
            stats = await svc.queue_stats("q")
            assert (stats.total, stats.deduplicated) == (2, 2)

    run(main())


def test_window_zero_turns_deduplication_off_and_dedup_is_accepted(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await env.create(svc, "q", dedup_window=0)
            assert (await svc.queue_info("q")).dedup_window == 0
            first = await svc.produce("q", [b"a"], dedup=b"k")
            second = await svc.produce("q", [b"a"], dedup=b"k")
            assert len(first) == len(second) == 1
            assert first != second
            stats = await svc.queue_stats("q")
            assert (stats.total, stats.produced, stats.deduplicated) == (2, 2, 0)

    run(main())


def test_dedup_window_range(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            for bad in (-1, 86_400_001):
                with pytest.raises(CommandError, match=exact(WINDOW_RANGE)):
                    await env.create(svc, "q", dedup_window=bad)
            assert await svc.list_queues() == []
            await env.create(svc, "longest", dedup_window=86_400_000)
            assert (await svc.queue_info("longest")).dedup_window == 86_400_000
            await svc.create_queue("q")
            before = await svc.queue_info("q")
            for bad in (-1, 86_400_001):
                with pytest.raises(CommandError, match=exact(WINDOW_RANGE)):
                    await svc.update_queue("q", QueueUpdate(dedup_window=bad))
            assert await svc.queue_info("q") == before

    run(main())


def test_update_changes_only_the_dedup_window_when_given(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await env.create(svc, "q", dedup_window=5_000)
            await svc.update_queue("q", QueueUpdate(max_attempts=3))
            assert (await svc.queue_info("q")).dedup_window == 5_000
            await svc.update_queue("q", QueueUpdate(dedup_window=0))
            info = await svc.queue_info("q")
            assert (info.dedup_window, info.max_attempts) == (0, 3)

    run(main())


def test_shorter_window_applies_to_keys_already_remembered(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q")
            first = await svc.produce("q", [b"a"], dedup=b"old")
            await env.advance(100_000)
            young = await svc.produce("q", [b"b"], dedup=b"young")
            await env.advance(10_000)
            await svc.update_queue("q", QueueUpdate(dedup_window=50_000))
            # "old" was used 110 s ago: outside the new window, so forgotten; "young" 10 s ago: kept.
            assert await svc.produce("q", [b"b"], dedup=b"young") == young
            again = await svc.produce("q", [b"a"], dedup=b"old")
            assert again != first
            await env.advance(40_000)  # "young" is 50 s old now
            assert await svc.produce("q", [b"b"], dedup=b"young") != young

    run(main())


def test_longer_window_applies_to_keys_already_remembered(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await env.create(svc, "q", dedup_window=1_000)
            first = await svc.produce("q", [b"a"], dedup=b"k")
            await env.advance(500)
            await svc.update_queue("q", QueueUpdate(dedup_window=10_000))
            await env.advance(5_000)  # past the old window, inside the new one
            assert await svc.produce("q", [b"a"], dedup=b"k") == first
            await env.advance(4_499)
            assert await svc.produce("q", [b"a"], dedup=b"k") == first
            await env.advance(1)  # 10 000 after the first use
            assert await svc.produce("q", [b"a"], dedup=b"k") != first

    run(main())


def test_window_set_to_zero_stops_deduplicating_remembered_keys(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q")
            first = await svc.produce("q", [b"a"], dedup=b"k")
            await svc.update_queue("q", QueueUpdate(dedup_window=0))
            assert await svc.produce("q", [b"a"], dedup=b"k") != first
            stats = await svc.queue_stats("q")
            assert (stats.total, stats.deduplicated) == (2, 0)

    run(main())


# -- key length ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("window", [WINDOW, 0])
def test_dedup_key_length_is_checked_whatever_the_window(env, window) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await env.create(svc, "q", dedup_window=window)
            for bad in (b"", b"k" * 257):
                with pytest.raises(CommandError, match="DEDUP"):
                    await svc.produce("q", [b"a"], dedup=bad)
            stats = await svc.queue_stats("q")
            assert (stats.total, stats.produced, stats.deduplicated) == (0, 0, 0)
            assert len(await svc.produce("q", [b"a"], dedup=b"k" * 256)) == 1
            assert len(await svc.produce("q", [b"a"], dedup=b"k")) == 1

    run(main())


# -- restarts -----------------------------------------------------------------------------------------------


def test_key_and_counter_survive_restart(rocks_env) -> None:
    env = rocks_env

    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q", QueueOptions(partitions=2))
            first = await svc.produce("q", [b"a", b"b"], dedup=b"k")
            assert await svc.produce("q", [b"a", b"b"], dedup=b"k") == first
        async with env.service() as svc:
            assert (await svc.queue_stats("q")).deduplicated == 1
            assert await svc.produce("q", [b"a", b"b"], dedup=b"k") == first
            stats = await svc.queue_stats("q")
            assert (stats.total, stats.produced, stats.deduplicated) == (2, 2, 2)
        async with env.service() as svc:
            assert (await svc.queue_stats("q")).deduplicated == 2

    run(main())


def test_dedup_window_option_survives_restart(rocks_env) -> None:
    env = rocks_env

    async def main() -> None:
        async with env.service() as svc:
            await env.create(svc, "q", dedup_window=7_000)
            await env.create(svc, "off", dedup_window=0)
        async with env.service() as svc:
            assert (await svc.queue_info("q")).dedup_window == 7_000
            assert (await svc.queue_info("off")).dedup_window == 0

    run(main())


def test_window_keeps_running_while_the_service_is_closed(rocks_env) -> None:
    env = rocks_env

    async def main() -> None:
        async with env.service() as svc:
            await env.create(svc, "q", dedup_window=10_000)
            first = await svc.produce("q", [b"a"], dedup=b"early")
            env.clock.advance(5_000)
            late = await svc.produce("q", [b"b"], dedup=b"late")
        env.clock.advance(5_000)  # down while "early" reaches the end of its window
        async with env.service() as svc:
            await env.settle()
            assert await svc.produce("q", [b"b"], dedup=b"late") == late
            assert await svc.produce("q", [b"a"], dedup=b"early") != first
            stats = await svc.queue_stats("q")
            assert (stats.total, stats.deduplicated) == (3, 1)

    run(main())


# -- forgetting ---------------------------------------------------------------------------------------------


async def _none_remembered(env: Env, svc: Service) -> bool:
    return await remembered_keys(env, svc) == 0


def test_keys_of_an_expired_window_take_no_storage_or_memory(env) -> None:
    """100 000 keys (5 000 on postgres) under a 1 s window; once it has passed, the store holds exactly the
    keys it held before (counted over every key space with the store's own scan) and the interpreter holds
    about as many memory blocks as before (`sys.getallocatedblocks`: 100 000 remembered keys would be
    100 000+)."""

    async def main() -> None:
        async with env.service() as svc:
            await env.create(svc, "q", dedup_window=1_000)
            # Warm up: whatever fixed keys a queue with a duplicate call writes (counters) exist from here.
            await svc.produce("q", [b"w"], dedup=b"warm-up")
            await svc.produce("q", [b"w"], dedup=b"warm-up")
            await svc.clear("q")
            await env.advance(1_000)
            await env.advance(1_000)
            keys_before = await stable_key_count(svc) if env.backend != "postgres" else 0
            stats_before = await svc.queue_stats("q")
            gc.collect()
            blocks_before = sys.getallocatedblocks()

            # On postgres each key is a row written through the database: fewer keys, the same check.
            chunks = 5 if env.backend == "postgres" else 100
            for chunk in range(chunks):
                await asyncio.gather(
                    *(svc.produce("q", [b"x"], dedup=b"key-%d" % (chunk * 1000 + n)) for n in range(1000))
                )
            assert await svc.clear("q") == chunks * 1000
            if env.backend == "rocksdb":  # durable keys are in the store while remembered
                assert key_count(svc) >= keys_before + chunks * 1000
            if env.backend == "postgres":  # the rows of querator_dedup
                assert await remembered_keys(env, svc) == chunks * 1000
            await env.advance(1_000)  # the window has passed for every key
            await env.advance(1_000)  # and the 1 s the SPEC allows for timed work (section 4)
            if env.backend == "postgres":
                await eventually_async(
                    lambda: _none_remembered(env, svc), "keys of the expired window dropped", 60
                )
            else:
                await eventually(lambda: key_count(svc) <= keys_before, "keys of the expired window dropped")
            gc.collect()
            assert sys.getallocatedblocks() - blocks_before < 10_000

            stats = await svc.queue_stats("q")
            assert stats.produced == stats_before.produced + chunks * 1000
            assert dataclasses.replace(stats, produced=stats_before.produced) == stats_before
            # Forgotten, not merely hidden: the key stores a new item again.
            assert len(await svc.produce("q", [b"x"], dedup=b"key-5")) == 1
            assert (await svc.queue_stats("q")).total == 1

    run(main())
