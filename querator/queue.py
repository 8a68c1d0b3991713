"""A queue: its options, its partitions, its line of blocked consumers, and how one request is spread
over the partitions: a produce goes to the one with the fewest ready items (ties rotate), a lease rotates
over those that have items, ids go to the partition they name. It is the only writer of its own
partitions: another queue's items arrive through `accept_moved`, never by reaching in. It also keeps
its deduplication keys (`dedup.py`) and sweeps them when their window ends, through its first partition."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import TypeVar

from querator.clock import Timer
from querator.dedup import DedupKeys
from querator.engine import (
    Clear,
    Engine,
    EngineContext,
    Lease,
    Nudge,
    Operation,
    Partition,
    PartitionSnapshot,
    Read,
    ReadStats,
    Redrive,
    RedriveTarget,
    ReindexExpiry,
    SweepDedup,
)
from querator.errors import QueratorError
from querator.futures import combine, done, one_or_combined
from querator.model import (
    LeasedItem,
    QueueInfo,
    QueueOptions,
    QueueStats,
)
from querator.waiters import WaitLine

Items = list[LeasedItem]
T = TypeVar("T")
R = TypeVar("R")


class Queue:
    def __init__(
        self,
        engine: EngineContext,
        kind: Engine,
        name: str,
        uid: int,
        options: QueueOptions,
        created_at: int,
        updated_at: int,
        paused: bool = False,
    ) -> None:
        self._engine = engine
        self._kind = kind
        self.name = name
        self.uid = uid
        self.options = options
        self.created_at = created_at
        self.updated_at = updated_at
        self.paused = paused
        # None when the engine keeps and sweeps deduplication keys itself (SQL).
        self.dedup: DedupKeys | None = kind.dedup_keys(uid)
        self._sweep_timer: Timer | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.partitions: list[Partition] = []
        self.waiters = WaitLine(engine.clock, engine.loop)
        self.dead_queue: Queue | None = None
        self._produce_turn = 0
        self._lease_turn = 0

    def add_partitions(self, count: int, start: bool) -> None:
        for index in range(len(self.partitions), count):
            partition = self._kind.partition(self, index)
            self.partitions.append(partition)
            if start:
                partition.start()

    def info(self) -> QueueInfo:
        o = self.options
        return QueueInfo(
            self.name,
            o.partitions,
            o.lease_timeout,
            o.expire_timeout,
            o.max_attempts,
            o.dead_queue,
            o.reference,
            self.created_at,
            self.updated_at,
            self.paused,
            o.dedup_window,
        )

    def ready(self) -> int:
        return sum(p.ready for p in self.partitions)

    # -- dead letters -----------------------------------------------------------------------------------

    def dead_letter_partition(self) -> Partition | None:
        """Where this queue's dead letters go: the dead queue's partition with the fewest ready items."""
        dead = self.dead_queue
        if dead is None:
            return None
        return min(dead.partitions, key=lambda p: p.ready)

    def redrive(self, limit: int, target: RedriveTarget) -> asyncio.Future[int]:
        """Move up to `limit` ready items to where `target` sends each: partition 0 first, each oldest
        first, in rounds of at most `_REDRIVE_ROUND` items so no step grows without bound. Each round is
        one atomic write of the moves it makes, so every item arrives exactly once even across a crash."""
        loop = self._engine.loop
        result: asyncio.Future[int] = loop.create_future()

        async def rounds() -> None:
            moved = 0
            try:
                for partition in list(self.partitions):
                    while moved < limit:
                        want = min(_REDRIVE_ROUND, limit - moved)
                        got = await partition.submit(Redrive(want, target))
                        moved += got
                        if got < want:
                            break
            except QueratorError as exc:
                if not result.done():
                    result.set_exception(exc)
                return
            if not result.done():
                result.set_result(moved)

        task = loop.create_task(rounds())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return result

    # -- pause and resume -------------------------------------------------------------------------------

    def resume(self) -> None:
        self.paused = False
        if len(self.waiters):
            self._nudge()  # blocked consumers waited through the pause: deal them what is ready now

    # -- deduplication keys -----------------------------------------------------------------------------

    def arm_sweep(self) -> None:
        """Make sure the sweep runs when the oldest remembered key's window ends (if any is remembered)."""
        if self._sweep_timer is not None or self.dedup is None:
            return
        oldest = self.dedup.oldest_use()
        if oldest is not None:
            when = oldest + self.options.dedup_window
            self._sweep_timer = self._engine.clock.call_at(self._engine.loop, when, self._sweep)

    def sweep_armed(self) -> bool:
        """True when no sweep needs arming: one is armed, or the engine sweeps by itself."""
        return self._sweep_timer is not None or self.dedup is None

    def arm_sweep_after(self, _: asyncio.Future[list[str]]) -> None:
        self.arm_sweep()

    def rearm_sweep(self) -> None:
        """The window changed: the oldest key's end moved."""
        self.stop_sweep()
        self.arm_sweep()

    def stop_sweep(self) -> None:
        if self._sweep_timer is not None:
            self._sweep_timer.cancel()
            self._sweep_timer = None

    def _sweep(self) -> None:
        self._sweep_timer = None
        try:
            swept = self.partitions[0].submit(SweepDedup())
        except QueratorError:
            return  # stopping, or storage failed: a restart arms the sweep again
        swept.add_done_callback(lambda _: self.arm_sweep())

    # -- spreading requests over partitions -------------------------------------------------------------

    def produce_partition(self) -> Partition:
        """The partition with the fewest ready items; among equals, the next one after the last choice."""
        partitions = self.partitions
        count = len(partitions)
        if count == 1:
            return partitions[0]
        start = self._produce_turn
        best = partitions[start % count]
        best_ready = best.ready + best.pending()
        for offset in range(1, count):
            candidate = partitions[(start + offset) % count]
            ready = candidate.ready + candidate.pending()
            if ready < best_ready:
                best, best_ready = candidate, ready
        self._produce_turn = (best.index + 1) % count
        return best

    def lease_plan(self, count: int) -> list[tuple[Partition, int]]:
        """Split a lease over the partitions that have ready items, starting after the last one used."""
        partitions = self.partitions
        n = len(partitions)
        plan: list[tuple[Partition, int]] = []
        remaining = count
        start = self._lease_turn
        for offset in range(n):
            partition = partitions[(start + offset) % n]
            ready = partition.ready
            if ready <= 0:
                continue
            take = min(ready, remaining)
            if not plan:
                self._lease_turn = (partition.index + 1) % n
            plan.append((partition, take))
            remaining -= take
            if not remaining:
                break
        if remaining and not plan:
            # Items may be on their way: a produce handed to a partition but not applied yet. Ask that
            # partition too, so a lease pipelined after a produce on the same connection sees its items.
            for partition in partitions:
                if partition.pending():
                    plan.append((partition, remaining))
                    break
            else:
                if self._engine.shared:  # counts are estimates: another node may have produced
                    partition = partitions[start % n]
                    self._lease_turn = (partition.index + 1) % n
                    plan.append((partition, remaining))
        return plan

    def lease(self, count: int, block_ms: int | None) -> asyncio.Future[Items]:
        """Lease up to `count` items; with `block_ms`, wait in line that long (0: without limit)."""
        plan = [] if self.paused else self.lease_plan(count)
        loop = self._engine.loop
        if not plan:
            if block_ms is None:
                return done(loop, [])
            return self.waiters.wait(count, self.waiters.deadline(block_ms), self._nudge)
        futures = [p.submit(Lease(n)) for p, n in plan]
        # One partition (the common case): its own future, without an extra hop.
        leased = futures[0] if len(futures) == 1 else combine(futures, _concat)
        if block_ms is None:
            return leased
        return self.waiters.wait_after(leased, count, self.waiters.deadline(block_ms), self._nudge)

    def _nudge(self) -> None:
        """Make the partitions holding ready items run a step, which deals them to the waiting line."""
        shared = self._engine.shared
        for partition in self.partitions:
            if partition.ready or shared:
                partition.submit(Nudge())

    def by_ids(
        self, groups: dict[int, list[int]], make: Callable[[list[int]], Operation[int]]
    ) -> asyncio.Future[int]:
        """One operation per partition named by the ids (`groups`: partition -> seqs); the sum of answers."""
        futures = [self.partitions[p].submit(make(seqs)) for p, seqs in groups.items()]
        if not futures:
            return done(self._engine.loop, 0)
        return futures[0] if len(futures) == 1 else combine(futures, sum)

    def clear(self, include_leased: bool) -> asyncio.Future[int]:
        return one_or_combined([p.submit(Clear(include_leased)) for p in self.partitions], sum)

    def reindex_expiry(self, enabled: bool) -> list[asyncio.Future[int]]:
        return [p.submit(ReindexExpiry(enabled)) for p in self.partitions]

    def length(self) -> asyncio.Future[int]:
        """Items ready to lease now (QLEN)."""
        return self.read(self.partitions, _read_stats, _total_ready)

    def stats(self) -> asyncio.Future[QueueStats]:
        """QSTATS: every partition's counts and counters, read at the same point of each one's requests."""
        return self.read(self.partitions, _read_stats, self._stats)

    def _stats(self, snapshots: list[PartitionSnapshot]) -> QueueStats:
        parts = [s[0] for s in snapshots]
        counters = [s[1] for s in snapshots]
        now = self._engine.clock.now_ms()
        oldest = [s[2] for s in snapshots if s[2] is not None]
        return QueueStats(
            ready=sum(s.ready for s in parts),
            leased=sum(s.leased for s in parts),
            scheduled=sum(s.scheduled for s in parts),
            produced=sum(c.produced for c in counters),
            completed=sum(c.completed for c in counters),
            retried=sum(c.retried for c in counters),
            lease_expired=sum(c.lease_expired for c in counters),
            dead_lettered=sum(c.dead_lettered for c in counters),
            deduplicated=sum(c.deduplicated for c in counters),
            oldest_ready_age=max(0, now - min(oldest)) if oldest else 0,
            waiting_consumers=self.waiters.waiting(),
            partitions=parts,
            leased_total=sum(c.leased for c in counters),
            dead_lettered_by_reason={
                "max-attempts": sum(c.dead_max_attempts for c in counters),
                "expired": sum(c.dead_expired for c in counters),
                "retry-dead": sum(c.dead_retry for c in counters),
            },
        )

    def read(
        self,
        partitions: Sequence[Partition],
        op: Callable[[Partition], Read[T]],
        combine_all: Callable[[list[T]], R],
    ) -> asyncio.Future[R]:
        """Read each partition after the requests already handed to it, so a read sees every earlier write
        of the same caller (a pipelined QPRODUCE then QLEN counts the produced items)."""
        parts = [p.read(op(p)) for p in partitions]
        if all(part.done() and part.exception() is None for part in parts):  # idle partitions answer at once
            return done(self._engine.loop, combine_all([part.result() for part in parts]))
        return combine(parts, combine_all)


def _read_stats(_: Partition) -> ReadStats:
    return ReadStats()


def _total_ready(snapshots: list[PartitionSnapshot]) -> int:
    return sum(s[0].ready for s in snapshots)


# Items one redrive step moves at most.
_REDRIVE_ROUND = 1000


def _concat(results: list[Items]) -> Items:
    return [item for items in results for item in items]
