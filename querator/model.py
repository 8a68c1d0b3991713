"""Typed requests and results of the `Service` API. Names follow the project's words: an *item* has a
payload; `*_timeout` is a duration in ms, `*_deadline` / `*_at` a point in Unix ms."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, NamedTuple

ItemState = Literal["ready", "leased", "scheduled"]

# Ranges of SPEC section 3, shared by the RESP adapters and the Service's own validation.
MAX_PARTITIONS = 1024
MAX_LEASE_TIMEOUT = 604_800_000
MAX_ATTEMPTS_LIMIT = 65_536
MAX_LEASE_COUNT = 1000
MAX_LIST_LIMIT = 100_000  # QLIST LIMIT
MAX_QUEUE_NAME_BYTES = 512
MAX_ID_BYTES = 64
# Times are stored as signed 64-bit ms; bound what a client may ask for well inside that.
MAX_WAIT_MS = 3_155_760_000_000  # DELAY and BLOCK: 100 years
MAX_AT_MS = 253_402_300_799_999  # AT: the last millisecond of the year 9999
# An AT in [1e9, 1e11) is a time in 1970-1973 if read as ms, but 2001-5138 if read as seconds: it can only be
# seconds given by mistake, which would otherwise silently mean "now".
AT_SECONDS_RANGE = range(1_000_000_000, 100_000_000_000)
MAX_LABEL_BYTES = 65_535  # KIND, REFERENCE and ENCODING each
# SPEC section 7.
MAX_DEDUP_WINDOW = 86_400_000  # DEDUP-WINDOW: one day
DEFAULT_DEDUP_WINDOW = 300_000  # five minutes, as SQS FIFO queues
MAX_DEDUP_KEY_BYTES = 256
MAX_REASON_BYTES = 4096
MAX_REDRIVE_LIMIT = 100_000
DEFAULT_REDRIVE_LIMIT = 1000
# Why an item reached a dead queue (its `dead-reason`).
DeadReason = Literal["", "max-attempts", "expired", "retry-dead"]


@dataclass(slots=True)
class QueueOptions:
    partitions: int = 1
    lease_timeout: int = 60_000
    expire_timeout: int = 0
    max_attempts: int = 0
    dead_queue: str = ""
    reference: str = ""
    dedup_window: int = DEFAULT_DEDUP_WINDOW

    def updated(self, changes: QueueUpdate) -> QueueOptions:
        """A copy with the fields that `changes` gives (those not None)."""
        return QueueOptions(
            **{
                name: getattr(self, name) if getattr(changes, name) is None else getattr(changes, name)
                for name in QueueOptions.__slots__
            }
        )


@dataclass(slots=True)
class QueueUpdate:
    """Only the fields that are not None change."""

    partitions: int | None = None
    lease_timeout: int | None = None
    expire_timeout: int | None = None
    max_attempts: int | None = None
    dead_queue: str | None = None
    reference: str | None = None
    dedup_window: int | None = None


@dataclass(slots=True)
class QueueInfo:
    name: str
    partitions: int
    lease_timeout: int
    expire_timeout: int
    max_attempts: int
    dead_queue: str
    reference: str
    created_at: int
    updated_at: int
    paused: bool = False
    dedup_window: int = DEFAULT_DEDUP_WINDOW


class LeasedItem(NamedTuple):
    """A leased item. A named tuple, so a lease of many items builds them all in C (`tuple.__new__`)."""

    id: str
    payload: bytes
    attempts: int
    lease_deadline: int
    kind: bytes = b""
    reference: bytes = b""
    encoding: bytes = b""


@dataclass(slots=True)
class StoredItem:
    id: str
    state: ItemState
    attempts: int
    created_at: int
    enqueue_at: int
    lease_deadline: int
    expire_deadline: int
    kind: bytes
    reference: bytes
    encoding: bytes
    payload: bytes
    # SPEC section 7: the last QRETRY's reason, and where a dead-lettered item came from.
    reason: bytes = b""
    source_queue: str = ""
    source_id: str = ""
    dead_reason: DeadReason = ""


@dataclass(slots=True)
class PartitionStats:
    partition: int
    ready: int
    leased: int
    scheduled: int

    @property
    def total(self) -> int:
        return self.ready + self.leased + self.scheduled


@dataclass(slots=True)
class PartitionCounters:
    """A partition's lifetime counters (QSTATS), kept across restarts."""

    produced: int = 0
    completed: int = 0
    retried: int = 0
    lease_expired: int = 0
    dead_lettered: int = 0
    deduplicated: int = 0
    leased: int = 0  # items leased, ever
    # `dead_lettered` by dead-reason (counted since the version that records it; older ones in none).
    dead_max_attempts: int = 0
    dead_expired: int = 0
    dead_retry: int = 0


@dataclass(slots=True)
class QueueStats:
    ready: int
    leased: int
    scheduled: int
    produced: int
    completed: int
    retried: int
    lease_expired: int
    dead_lettered: int
    oldest_ready_age: int
    waiting_consumers: int
    deduplicated: int = 0
    partitions: list[PartitionStats] = field(default_factory=list)
    # Not in QSTATS's reply; for the metrics (SPEC 8).
    leased_total: int = 0
    dead_lettered_by_reason: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return self.ready + self.leased + self.scheduled
