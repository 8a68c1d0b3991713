"""Item movements on the key layout of ADR 3, the primitives every operation and timer is made of:
to the tail or the schedule under a new seq, out of a lease, to the dead queue, out of the ready range
by lease. Each keeps the partition's counters (`meta`) and in-memory timers in step with the keys."""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from itertools import repeat
from typing import Final

from querator.dedup import DedupKeys
from querator.engine import DeadLetter, QueueView
from querator.ids import IdFormat
from querator.kvreads import KeyValueReads
from querator.model import LeasedItem
from querator.overlay import StepWrites
from querator.records import (
    DEAD_EXPIRED,
    DEAD_MAX_ATTEMPTS,
    DUE_INDEX,
    EXPIRY_INDEX,
    LEASED,
    META_KEY,
    READY,
    SCHEDULED,
    PartitionMeta,
    Record,
    index_key,
    key_seq,
    lease_many,
    lease_view,
    prefix_end,
    seq_key,
    seq_keys,
)
from querator.store.base import KeySpace, Store, WriteSet
from querator.timers import Timers

_READY_END: Final = prefix_end(READY)


class ItemMoves(KeyValueReads):
    """`dead_letter` is where items leaving the queue go; `woken` is called when another queue's step adds
    an item here (its actor must run to deal it); `dedup` holds the queue's deduplication keys."""

    def __init__(
        self,
        store: Store,
        space: KeySpace,
        queue: QueueView,
        ids: IdFormat,
        dead_letter: DeadLetter,
        woken: Callable[[], None],
        dedup: DedupKeys,
    ) -> None:
        super().__init__(space, queue, ids, PartitionMeta(), Timers())
        self.writes = StepWrites(store, space)
        self.dedup = dedup
        # Items dead-lettered in the current step, by dead-reason: the actor logs them once per step.
        self.dead_in_step: dict[int, int] = {}
        self._dead_letter_sink = dead_letter
        self._woken = woken

    # -- item movements ---------------------------------------------------------------------------------

    def _new_seq(self) -> int:
        seq = self.meta.next_seq
        self.meta.next_seq = seq + 1
        return seq

    def _enqueue(self, record: Record, due: int, now: int) -> int:
        """Place `record` at the tail (ready) or in the schedule (due in the future) under a new seq."""
        seq = self._new_seq()
        meta = self.meta
        writes = self.writes
        record.lease_deadline = 0
        if due > now:
            record.enqueue_at = due
            writes.put(seq_key(SCHEDULED, seq), record.encode())
            writes.put(index_key(DUE_INDEX, due, seq), b"")
            meta.scheduled += 1
            self.timers.note_due(due)
        else:
            record.enqueue_at = now
            writes.put_ready(seq_key(READY, seq), record.encode())
            meta.ready += 1
        if self.queue.options.expire_timeout:
            self._index_expiry(record.created_at, seq)
        return seq

    def _index_expiry(self, created_at: int, seq: int) -> None:
        self.writes.put(index_key(EXPIRY_INDEX, created_at, seq), b"")
        self.timers.note_expiry(created_at)

    def _unindex_expiry(self, record: Record, seq: int) -> None:
        if self.queue.options.expire_timeout:
            self.writes.delete(index_key(EXPIRY_INDEX, record.created_at, seq))

    def _is_expired(self, record: Record, now: int) -> bool:
        expire = self.queue.options.expire_timeout
        return bool(expire) and now >= record.created_at + expire

    def _end_lease(self, seq: int) -> Record | None:
        """Remove a leased item's lease; the caller decides where the record goes."""
        if not self.timers.leases.end(seq):
            return None
        key = seq_key(LEASED, seq)
        raw = self.writes.get(key)
        self.writes.delete(key)
        return Record.decode(raw) if raw is not None else None

    def _requeue_or_dead(self, record: Record, seq: int, due: int, now: int) -> None:
        """The end of a lease without completion: back to the queue, or to the dead queue."""
        max_attempts = self.queue.options.max_attempts
        if max_attempts and record.attempts >= max_attempts:
            self._dead_letter(record, seq, now, DEAD_MAX_ATTEMPTS)
        elif self._is_expired(record, now):
            self._dead_letter(record, seq, now, DEAD_EXPIRED)
        else:
            self._enqueue(record, due, now)

    def _dead_letter(self, record: Record, seq: int, now: int, why: int) -> None:
        """The item (whose seq here was `seq`) leaves for the dead queue, remembering where it came from."""
        self.meta.count_dead(why)
        self.dead_in_step[why] = self.dead_in_step.get(why, 0) + 1
        record.source_queue = self.queue.name.encode()
        record.source_id = self.ids.one(seq).encode()
        record.dead_reason = why
        target = self._dead_letter_sink()
        if target is not None:
            target.accept_moved(self.writes.ws, record, now)

    def accept_moved(self, ws: WriteSet, record: Record, now: int) -> None:
        """Add an item leaving another queue's step (dead-lettered or redriven) to this partition, in that
        step's write set; it arrives as a new item (attempts 0, its age from now).

        Safe because every step runs to its write without yielding: this partition cannot run between
        the caller's apply and its write. Our counters go in the same write set so a crash keeps both.
        """
        seq = self._new_seq()
        record.attempts = 0
        record.created_at = now
        record.enqueue_at = now
        record.lease_deadline = 0
        ws.put(self.space, seq_key(READY, seq), record.encode())
        if self.queue.options.expire_timeout:
            ws.put(self.space, index_key(EXPIRY_INDEX, now, seq), b"")
            if self.timers.next_expiry_created is None:
                self.timers.next_expiry_created = now
        self.meta.ready += 1
        self.meta.produced += 1
        ws.put(self.space, META_KEY, self.meta.encode())
        self._woken()

    # -- leasing ----------------------------------------------------------------------------------------

    def take_ready(self, count: int, now: int) -> list[LeasedItem]:
        """Lease up to `count` ready items from the head, in FIFO order."""
        taken: list[LeasedItem] = []
        meta = self.meta
        if not meta.ready:
            return taken
        writes = self.writes
        lease_timeout = self.queue.options.lease_timeout
        db_ready = meta.ready - writes.ready_live
        if db_ready > 0 and not self.queue.options.expire_timeout:
            self._lease_stored(min(count, db_ready), now, lease_timeout, taken)
        elif db_ready > 0:
            overlay = writes.overlay
            last_seq = -1
            for key, value in self.space.scan(seq_key(READY, meta.ready_head), _READY_END):
                if key in overlay:
                    continue  # removed earlier in this step
                last_seq = key_seq(key)
                if (
                    self._lease_record(last_seq, key, value, now, lease_timeout, taken)
                    and len(taken) >= count
                ):
                    break
                if not meta.ready - writes.ready_live:
                    break
            if last_seq >= 0:
                meta.ready_head = last_seq + 1
        if len(taken) < count and writes.ready_live:
            pending_keys = writes.ready_keys
            pos = writes.ready_pos
            while pos < len(pending_keys) and len(taken) < count:
                key = pending_keys[pos]
                pos += 1
                pending = writes.overlay.get(key)
                if pending is None:
                    continue
                seq = key_seq(key)
                meta.ready_head = seq + 1
                self._lease_record(seq, key, pending, now, lease_timeout, taken)
            writes.ready_pos = pos
        meta.leased += len(taken)
        return taken

    def _lease_stored(self, want: int, now: int, lease_timeout: int, taken: list[LeasedItem]) -> None:
        """Lease up to `want` ready items from storage's head in one pass, for queues without an expire
        timeout (no item can turn out dead on the way). The same moves as `_lease_record`, done in bulk: no
        Python code runs per item unless a record carries a kind, reference or encoding (`lease_view`)."""
        overlay = self.writes.overlay
        start = seq_key(READY, self.meta.ready_head)
        keys, values = self.space.head(start, _READY_END, want)
        if not overlay.keys().isdisjoint(keys):  # some were removed earlier in this step: skip them
            keys = []
            values = []
            for key, value in self.space.scan(start, _READY_END):
                if key not in overlay:
                    keys.append(key)
                    values.append(value)
                    if len(keys) >= want:
                        break
        if not keys:
            return
        count = len(keys)
        deadline = now + lease_timeout
        seqs = _ready_seqs(keys)
        plain = lease_many(values, deadline)
        kinds: Iterable[bytes]
        references: Iterable[bytes]
        encodings: Iterable[bytes]
        if plain is not None:  # no labels: everything in C
            leased_values, attempts, payloads = plain
            kinds = references = encodings = repeat(b"")
        else:
            views = zip(*map(lease_view, values, repeat(deadline)), strict=True)
            leased_values, attempts, _, kinds, references, encodings, payloads = map(list, views)
        self.writes.delete_many(keys)  # none of them was put in this step
        self.writes.put_many(seq_keys(LEASED, seqs), leased_values)
        self.meta.ready -= count
        self.meta.ready_head = seqs[-1] + 1
        self.timers.leases.add_many(seqs, deadline)
        fields = zip(self.ids.many(seqs), payloads, attempts, repeat(deadline), kinds, references, encodings)
        taken.extend(_leased_items(fields))

    def _lease_record(
        self, seq: int, key: bytes, value: bytes, now: int, lease_timeout: int, taken: list[LeasedItem]
    ) -> bool:
        """Move one ready item to leased (or to the dead queue if it expired). True if it was leased."""
        self.writes.delete(key)
        self.meta.ready -= 1
        if self.queue.options.expire_timeout:
            record = Record.decode(value)
            self._unindex_expiry(record, seq)
            if self._is_expired(record, now):
                self._dead_letter(record, seq, now, DEAD_EXPIRED)
                return False
        deadline = now + lease_timeout
        leased, attempts, _, kind, reference, encoding, payload = lease_view(value, deadline)
        self.writes.put(seq_key(LEASED, seq), leased)
        self.timers.leases.add(seq, deadline)
        taken.append(LeasedItem(self.ids.one(seq), payload, attempts, deadline, kind, reference, encoding))
        return True

    def _remove_waiting(self, seq: int) -> bool:
        """Remove a ready or scheduled item (not leased)."""
        writes = self.writes
        key = seq_key(READY, seq)
        raw = writes.get(key)
        if raw is not None:
            writes.delete(key)
            self.meta.ready -= 1
            self._unindex_expiry(Record.decode(raw), seq)
            return True
        key = seq_key(SCHEDULED, seq)
        raw = writes.get(key)
        if raw is not None:
            record = Record.decode(raw)
            writes.delete(key)
            writes.delete(index_key(DUE_INDEX, record.enqueue_at, seq))
            self._unindex_expiry(record, seq)
            self.meta.scheduled -= 1
            return True
        return False


def _ready_seqs(keys: list[bytes]) -> list[int]:
    """The seqs of ready keys: each is READY + an 8-byte seq, so one unpack reads them all (731bffc)."""
    return list(struct.unpack(">" + "xQ" * len(keys), b"".join(keys)))


def _leased_items(fields: Iterable[tuple[str, bytes, int, int, bytes, bytes, bytes]]) -> map[LeasedItem]:
    """LeasedItems built by `tuple.__new__` in C, no Python code per item (commit 731bffc)."""
    return map(tuple.__new__, repeat(LeasedItem), fields)
