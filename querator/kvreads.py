"""What can be read of a key-value partition between steps (storage is consistent then) or inside a
`Read` operation: counts, counters, the oldest ready item and the QITEMS listing. Reads never write."""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from typing import Final

from querator.engine import QueueView
from querator.ids import IdFormat
from querator.model import ItemState, PartitionCounters, PartitionStats, StoredItem
from querator.records import (
    DEAD_REASONS,
    LEASED,
    READY,
    SCHEDULED,
    PartitionMeta,
    Record,
    key_seq,
    prefix_end,
    seq_key,
)
from querator.store.base import KeySpace
from querator.timers import Timers

_READY_END: Final = prefix_end(READY)
_STATES: Final[tuple[tuple[bytes, ItemState], ...]] = (
    (LEASED, "leased"),
    (READY, "ready"),
    (SCHEDULED, "scheduled"),
)


class KeyValueReads:
    """Implements `engine.PartitionReads` for one key space."""

    def __init__(
        self, space: KeySpace, queue: QueueView, ids: IdFormat, meta: PartitionMeta, timers: Timers
    ) -> None:
        self.space = space
        self.queue = queue
        self.ids = ids
        self.meta = meta
        self.timers = timers

    @property
    def index(self) -> int:
        return self.ids.partition

    @property
    def ready(self) -> int:
        return self.meta.ready

    @property
    def leased(self) -> int:
        return len(self.timers.leases)

    @property
    def scheduled(self) -> int:
        return self.meta.scheduled

    def stats(self) -> PartitionStats:
        return PartitionStats(self.index, self.meta.ready, len(self.timers.leases), self.meta.scheduled)

    def counters(self) -> PartitionCounters:
        m = self.meta
        return PartitionCounters(
            m.produced,
            m.completed,
            m.retried,
            m.lease_expired,
            m.dead_lettered,
            m.deduplicated,
            m.leased,
            m.dead_max_attempts,
            m.dead_expired,
            m.dead_retry,
        )

    def oldest_ready_enqueue_at(self) -> int | None:
        if not self.meta.ready:
            return None
        for _, value in self.space.scan(seq_key(READY, self.meta.ready_head), _READY_END):
            return Record.decode(value).enqueue_at
        return None

    def _state_stream(
        self, prefix: bytes, state: ItemState, start: int
    ) -> Iterator[tuple[int, ItemState, bytes]]:
        for key, value in self.space.scan(seq_key(prefix, start), prefix_end(prefix)):
            yield key_seq(key), state, value

    def items(self, after_seq: int, limit: int) -> list[StoredItem]:
        """Items in seq order after `after_seq`, whatever their state, at most `limit`."""
        start = after_seq + 1
        streams = [self._state_stream(prefix, state, start) for prefix, state in _STATES]
        out: list[StoredItem] = []
        for seq, state, value in heapq.merge(*streams):
            if len(out) >= limit:
                break
            out.append(self._stored(seq, state, value))
        return out

    def get(self, seq: int) -> StoredItem | None:
        """The item of `seq`, whatever its state, or None."""
        for prefix, state in _STATES:
            value = self.space.get(seq_key(prefix, seq))
            if value is not None:
                return self._stored(seq, state, value)
        return None

    def _stored(self, seq: int, state: ItemState, value: bytes) -> StoredItem:
        expire = self.queue.options.expire_timeout
        record = Record.decode(value)
        return StoredItem(
            id=self.ids.one(seq),
            state=state,
            attempts=record.attempts,
            created_at=record.created_at,
            enqueue_at=record.enqueue_at,
            lease_deadline=record.lease_deadline,
            expire_deadline=record.created_at + expire if expire else 0,
            kind=record.kind,
            reference=record.reference,
            encoding=record.encoding,
            payload=record.payload,
            reason=record.reason,
            source_queue=record.source_queue.decode("utf-8", "surrogateescape"),
            source_id=record.source_id.decode("ascii", "replace"),
            dead_reason=DEAD_REASONS[record.dead_reason] if record.dead_reason < len(DEAD_REASONS) else "",
        )
