"""The engine boundary: what the Service (through its queues) asks of a partition, as typed operations,
and what a partition is handed to do its work. Everything a partition needs comes in through here (the
store, the clock, limits, the sync policy, a read-only view of its queue); nothing in an engine imports
the layers above it. ADR 9 says why the boundary is drawn here and how a SQL engine would sit beside
the key-value one."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

from querator.clock import Clock
from querator.errors import QueratorError
from querator.model import LeasedItem, PartitionCounters, PartitionStats, QueueOptions, StoredItem
from querator.waiters import WaitLine

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)

if TYPE_CHECKING:
    from querator.dedup import DedupKeys
    from querator.records import Record
    from querator.store.base import WriteSet


@dataclass(slots=True)
class EngineContext:
    """What every partition of one Service shares, whatever its engine; handed down, never reached for."""

    clock: Clock
    loop: asyncio.AbstractEventLoop
    inbox_limit: int  # requests a partition holds before it answers -TRYAGAIN (`partition-inbox`)
    wait_for_sync: bool  # replies wait for the fsync (durability "fsync" on a durable backend)
    # Told how long each step's write took, until durable (ns): the storage commit histogram of SPEC 8.
    on_commit: Callable[[int], None] | None = None
    # Other processes change the same storage (postgres): a partition's counts are estimates, so a lease
    # or a wake-up asks a partition even when its count says it holds nothing.
    shared: bool = False


class QueueView(Protocol):
    """The part of its queue a partition may read: its name and current options (they change on QUPDATE,
    so a partition reads them when it needs them instead of keeping a copy)."""

    @property
    def name(self) -> str: ...

    @property
    def options(self) -> QueueOptions: ...

    @property
    def paused(self) -> bool:
        """QPAUSE: hand out nothing (leases answer empty, blocked consumers keep waiting)."""
        ...


class QueueHandle(QueueView, Protocol):
    """What an engine may use of the queue whose partitions it builds."""

    @property
    def uid(self) -> int:
        """The queue's incarnation: part of every item id."""
        ...

    @property
    def waiters(self) -> WaitLine:
        """The queue's blocked consumers, dealt items by the partitions' steps."""
        ...

    @property
    def dedup(self) -> DedupKeys | None: ...

    def dead_letter_partition(self) -> Partition | None:
        """Where an item leaving this queue goes (max attempts, expiry, QRETRY DEAD): a partition of the
        dead queue, or None (no dead queue: the item is simply gone). The sending partition adds it there
        in its own step's write, so the move is atomic (ADR 3)."""
        ...


class Engine(Protocol):
    """Builds the partitions of queues: the key-value engine (memory, RocksDB) or the SQL one."""

    def partition(self, queue: QueueHandle, index: int) -> Partition: ...

    def dedup_keys(self, uid: int) -> DedupKeys | None:
        """The queue's deduplication keys, for an engine that keeps them outside its partitions' steps
        (the key-value engine, swept by the queue); None where the engine keeps and sweeps them itself."""
        ...


# Where a partition sends an item that leaves its queue: a partition of the receiving queue, or None.
DeadLetter = Callable[[], "Partition | None"]
# QREDRIVE: the partition a dead queue's item goes to (where a produce to its source queue, or to the TO
# queue, would go), or None to leave it.
RedriveTarget = Callable[["Record"], "Partition | None"]


class Operations(Protocol):
    """One method per operation; a partition's state machine implements them (the visitor of `apply`)."""

    def produce(self, op: Produce, now: int) -> list[str]: ...
    def lease(self, op: Lease, now: int) -> list[LeasedItem]: ...
    def complete(self, op: Complete, now: int) -> int: ...
    def retry(self, op: Retry, now: int) -> int: ...
    def release(self, op: Release, now: int) -> int: ...
    def extend(self, op: Extend, now: int) -> int: ...
    def remove(self, op: Remove, now: int) -> int: ...
    def clear(self, op: Clear, now: int) -> int: ...
    def reindex_expiry(self, op: ReindexExpiry, now: int) -> int: ...
    def redrive(self, op: Redrive, now: int) -> int: ...
    def sweep_dedup(self, op: SweepDedup, now: int) -> int: ...
    def read(self, op: Read[T], now: int) -> T: ...


class Operation(Generic[T_co]):
    """A request's operation and arguments; `T_co` is what it answers. `weight` is what it costs a step
    (items, ids or leases), so a step can bound its work."""

    __slots__ = ()

    @property
    def weight(self) -> int:
        return 1

    def apply(self, ops: Operations, now: int) -> T_co:
        raise NotImplementedError


@dataclass(slots=True)
class Produce(Operation[list[str]]):
    payloads: Sequence[bytes]
    due: int  # 0 or not after now: ready at once
    kind: bytes
    reference: bytes
    encoding: bytes
    dedup: bytes | None = None  # QPRODUCE DEDUP: a repeat within the window stores nothing

    @property
    def weight(self) -> int:
        return len(self.payloads)

    def apply(self, ops: Operations, now: int) -> list[str]:
        return ops.produce(self, now)


@dataclass(slots=True)
class Lease(Operation[list[LeasedItem]]):
    count: int

    @property
    def weight(self) -> int:
        return self.count

    def apply(self, ops: Operations, now: int) -> list[LeasedItem]:
        return ops.lease(self, now)


@dataclass(slots=True)
class _BySeqs(Operation[int]):
    """An operation on items named by id (parsed to this partition's seqs); answers how many it changed."""

    seqs: list[int]

    @property
    def weight(self) -> int:
        return len(self.seqs)


@dataclass(slots=True)
class Complete(_BySeqs):
    def apply(self, ops: Operations, now: int) -> int:
        return ops.complete(self, now)


@dataclass(slots=True)
class Retry(_BySeqs):
    due: int = 0
    dead: bool = False
    reason: bytes = b""  # kept on the item as its last failure reason (empty: none given)

    def apply(self, ops: Operations, now: int) -> int:
        return ops.retry(self, now)


@dataclass(slots=True)
class Release(_BySeqs):
    """Give back items dealt to a consumer that went away before its reply (no attempt is counted)."""

    def apply(self, ops: Operations, now: int) -> int:
        return ops.release(self, now)


@dataclass(slots=True)
class Extend(_BySeqs):
    lease_for: int = 0

    def apply(self, ops: Operations, now: int) -> int:
        return ops.extend(self, now)


@dataclass(slots=True)
class Remove(_BySeqs):
    def apply(self, ops: Operations, now: int) -> int:
        return ops.remove(self, now)


@dataclass(slots=True)
class Clear(Operation[int]):
    include_leased: bool

    def apply(self, ops: Operations, now: int) -> int:
        return ops.clear(self, now)


@dataclass(slots=True)
class ReindexExpiry(Operation[int]):
    """The queue's expire timeout was switched on or off: build or drop what expiry needs."""

    enabled: bool

    def apply(self, ops: Operations, now: int) -> int:
        return ops.reindex_expiry(self, now)


@dataclass(slots=True)
class Redrive(Operation[int]):
    """Move up to `limit` ready items, oldest first, to where `target` sends each; answers how many moved."""

    limit: int
    target: RedriveTarget

    @property
    def weight(self) -> int:
        return self.limit

    def apply(self, ops: Operations, now: int) -> int:
        return ops.redrive(self, now)


@dataclass(slots=True)
class SweepDedup(Operation[int]):
    """Forget the queue's deduplication keys whose window has passed (run by one partition of the queue)."""

    def apply(self, ops: Operations, now: int) -> int:
        return ops.sweep_dedup(self, now)


class Read(Operation[T_co]):
    """Read the partition at this point of its request order (after the requests before it); each kind of
    read is a subclass, so an engine that cannot read synchronously (SQL) knows what to fetch."""

    __slots__ = ()

    def read(self, reads: PartitionReads) -> T_co:
        raise NotImplementedError

    def apply(self, ops: Operations, now: int) -> T_co:
        return ops.read(self, now)


# QSTATS of one partition: its counts, its counters and when its oldest ready item became ready.
PartitionSnapshot = tuple[PartitionStats, PartitionCounters, "int | None"]


@dataclass(slots=True)
class ReadStats(Read[PartitionSnapshot]):
    def read(self, reads: PartitionReads) -> PartitionSnapshot:
        return reads.stats(), reads.counters(), reads.oldest_ready_enqueue_at()


@dataclass(slots=True)
class ReadItems(Read[list[StoredItem]]):
    """QITEMS: items in seq order after `after_seq`, whatever their state, at most `limit`."""

    after_seq: int
    limit: int

    def read(self, reads: PartitionReads) -> list[StoredItem]:
        return reads.items(self.after_seq, self.limit)


@dataclass(slots=True)
class ReadItem(Read["StoredItem | None"]):
    """QGET: the item of `seq`, whatever its state, or None."""

    seq: int

    def read(self, reads: PartitionReads) -> StoredItem | None:
        return reads.get(self.seq)


@dataclass(slots=True)
class Nudge(Operation[None]):
    """Only makes the partition run a step (to deal its ready items to consumers that just began to wait)."""

    def apply(self, ops: Operations, now: int) -> None:
        return None


@dataclass(slots=True)
class Request(Generic[T]):
    """One operation waiting in a partition's inbox, the future that carries its answer, and its weight,
    fixed when it is submitted."""

    op: Operation[T]
    future: asyncio.Future[T]
    weight: int


class PartitionReads(Protocol):
    """What may be read of a partition between its steps (storage is consistent then)."""

    @property
    def index(self) -> int: ...

    @property
    def ready(self) -> int:
        """Items ready to lease now."""
        ...

    @property
    def leased(self) -> int: ...

    @property
    def scheduled(self) -> int: ...

    def stats(self) -> PartitionStats: ...

    def counters(self) -> PartitionCounters: ...

    def oldest_ready_enqueue_at(self) -> int | None: ...

    def items(self, after_seq: int, limit: int) -> list[StoredItem]: ...

    def get(self, seq: int) -> StoredItem | None: ...


class Partition(Protocol):
    """The engine interface: one partition of one queue, applying operations in the order submitted.

    `submit` hands the operation over at once (ADR 5) and returns the future of its answer, set only
    once the change is as durable as the sync policy asks; it raises `TryAgainError` when the partition
    cannot take it (overloaded, stopping, failed storage)."""

    @property
    def index(self) -> int: ...

    @property
    def ready(self) -> int:
        """Items ready to lease now (an estimate where other nodes share the storage)."""
        ...

    @property
    def leased(self) -> int: ...

    @property
    def scheduled(self) -> int: ...

    def start(self) -> None: ...

    async def stop(self, error: QueratorError | None = None) -> None: ...

    def submit(self, op: Operation[T]) -> asyncio.Future[T]: ...

    def pending(self) -> int:
        """Requests submitted and not applied yet."""
        ...

    def read(self, op: Read[T]) -> asyncio.Future[T]:
        """Answer `op` after the requests already submitted (at once if there are none and the engine can
        read synchronously), so a read sees every earlier write of the same caller."""
        ...

    def accept_moved(self, ws: WriteSet, record: Record, now: int) -> None:
        """Add an item leaving another queue of the same engine, in that queue's write (see DeadLetter)."""
        ...
