"""A queue: its options, its partition actors, the consumers blocked waiting for items, and the choice of
partition for each produce (fewest ready, ties rotate) and lease (rotate over partitions with items)."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, Any

from querator.model import LeasedItem, QueueInfo, QueueOptions
from querator.partition import PartitionActor
from querator.records import Record

if TYPE_CHECKING:
    from querator.service import Service


class Waiter:
    """A consumer blocked in QLEASE ... BLOCK; partitions deal items into `items`."""

    __slots__ = ("count", "future", "items", "timer")

    def __init__(self, count: int, future: asyncio.Future[list[LeasedItem]]) -> None:
        self.count = count
        self.future = future
        self.items: list[LeasedItem] = []
        self.timer: asyncio.TimerHandle | None = None

    def served(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


class Queue:
    def __init__(
        self, service: Service, name: str, uid: int, options: QueueOptions, created_at: int, updated_at: int
    ) -> None:
        self.service = service
        self.name = name
        self.uid = uid
        self.options = options
        self.created_at = created_at
        self.updated_at = updated_at
        self.partitions: list[PartitionActor] = []
        self.waiters: deque[Waiter] = deque()
        self.dead_queue: Queue | None = None
        self._produce_turn = 0
        self._lease_turn = 0

    def space_name(self, index: int) -> str:
        return f"q{self.uid}.p{index}"

    def add_partitions(self, count: int, start: bool) -> None:
        for index in range(len(self.partitions), count):
            space = self.service.store.space(self.space_name(index))
            actor = PartitionActor(self, index, space)
            self.partitions.append(actor)
            if start:
                actor.start()

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
        )

    def ready(self) -> int:
        return sum(p.meta.ready for p in self.partitions)

    def produce_partition(self) -> PartitionActor:
        """The partition with the fewest ready items; among equals, the next one after the last choice."""
        partitions = self.partitions
        count = len(partitions)
        if count == 1:
            return partitions[0]
        start = self._produce_turn
        best = partitions[start % count]
        best_ready = best.meta.ready + best.inbox_size()
        for offset in range(1, count):
            candidate = partitions[(start + offset) % count]
            ready = candidate.meta.ready + candidate.inbox_size()
            if ready < best_ready:
                best, best_ready = candidate, ready
        self._produce_turn = (best.index + 1) % count
        return best

    def lease_plan(self, count: int) -> list[tuple[PartitionActor, int]]:
        """Split a lease over the partitions that have ready items, starting after the last one used."""
        partitions = self.partitions
        n = len(partitions)
        plan: list[tuple[PartitionActor, int]] = []
        remaining = count
        start = self._lease_turn
        for offset in range(n):
            partition = partitions[(start + offset) % n]
            ready = partition.meta.ready
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
                if partition.has_pending():
                    plan.append((partition, remaining))
                    break
        return plan

    def accept_dead_letter(self, ws: Any, record: Record, now: int) -> None:
        target = min(self.partitions, key=lambda p: p.meta.ready)
        target.accept_external(ws, record, now)
