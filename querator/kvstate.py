"""The key-value state machine of one partition: every operation and timer as moves between the key
ranges of ADR 3 (`r` ready, `l` leased, `s` scheduled, `w` due index, `x` expiry index, `m` counters),
shared by the memory and RocksDB backends. It runs only inside an actor step, writes only through
`StepWrites`, and changes nothing before its last check, so a request that fails leaves the step unharmed."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, TypeVar

from querator.engine import (
    Clear,
    Complete,
    Extend,
    Lease,
    Produce,
    Read,
    Redrive,
    ReindexExpiry,
    Release,
    Remove,
    Retry,
    SweepDedup,
)
from querator.ids import IdFormat
from querator.kvmoves import ItemMoves
from querator.model import LeasedItem
from querator.records import (
    DEAD_EXPIRED,
    DEAD_RETRY,
    DUE_INDEX,
    EXPIRY_INDEX,
    LEASED,
    META_KEY,
    READY,
    SCHEDULED,
    PartitionMeta,
    Record,
    index_entry,
    index_key,
    key_seq,
    new_record_prefix,
    prefix_end,
    ready_keys,
    seq_key,
    seq_keys,
)

if TYPE_CHECKING:
    from querator.engine import PartitionReads

T = TypeVar("T")

_DUE_END: Final = prefix_end(DUE_INDEX)
_EXPIRY_END: Final = prefix_end(EXPIRY_INDEX)
# How much timer work (expired leases, due schedules, expired items) one step does at most, so a burst of
# expiries cannot stall the requests waiting behind it; the rest continues in the next step.
_TIMER_BUDGET: Final = 5000
_READY_END: Final = prefix_end(READY)


class KeyValueState(ItemMoves):
    """Implements `engine.Operations` on one key space; `load` reads the partition from storage first."""

    def load(self) -> None:
        """Read the partition's counters, leases and index heads (never its ready items, ADR 3)."""
        space = self.space
        raw = space.get(META_KEY)
        if raw is not None:
            self.meta = PartitionMeta.decode(raw)
        # Never reuse a seq, even if the counters were lost: look past the highest key of every state.
        for prefix in (READY, LEASED, SCHEDULED):
            last = space.last_key(prefix, prefix_end(prefix))
            if last is not None:
                self.meta.next_seq = max(self.meta.next_seq, key_seq(last) + 1)
        self.timers.leases.load(
            (key_seq(key), Record.decode(value).lease_deadline)
            for key, value in space.scan(LEASED, prefix_end(LEASED))
        )
        self.timers.next_due = self._first_index_time(DUE_INDEX, _DUE_END)
        self.timers.next_expiry_created = self._first_index_time(EXPIRY_INDEX, _EXPIRY_END)

    def _first_index_time(self, prefix: bytes, end: bytes) -> int | None:
        for key, _ in self.space.scan(prefix, end):
            return index_entry(key)[0]
        return None

    # -- the step's frame (called by the actor) ---------------------------------------------------------

    def flush(self) -> bool:
        """Write the step so far (the counters with it). False if storage failed."""
        written = self.writes.flush(self.meta.encode())
        self.dedup.written()
        return written

    # -- timers -----------------------------------------------------------------------------------------

    def run_timers(self, now: int) -> None:
        budget = _TIMER_BUDGET
        timers = self.timers
        heap = timers.leases.heap
        # The heap is looked at before pop_expired is called: most steps have no lease due.
        while budget and heap and heap[0][0] <= now and (seq := timers.leases.pop_expired(now)) is not None:
            budget -= 1
            record = self._end_lease(seq)
            self.meta.lease_expired += 1
            if record is not None:
                self._requeue_or_dead(record, seq, now, now)
        if budget and timers.next_due is not None and timers.next_due <= now:
            budget = self._promote_due(now, budget)
        expire = self.queue.options.expire_timeout
        if (
            budget
            and expire
            and timers.next_expiry_created is not None
            and timers.next_expiry_created + expire <= now
        ):
            self._expire_items(now, expire, budget)

    def _take_index(
        self, prefix: bytes, end: bytes, due_by: int, budget: int
    ) -> tuple[list[int], int | None]:
        """Remove the entries of a time index (due or expiry) whose time is at most `due_by`, oldest first,
        at most `budget`: their seqs, and the time of the first entry left (None if none is left).
        Entries this step already wrote or deleted are skipped: storage does not have them yet."""
        writes = self.writes
        taken: list[int] = []
        for key, _ in self.space.scan(prefix, end):
            if key in writes.overlay:
                continue
            when, seq = index_entry(key)
            if when > due_by or len(taken) >= budget:
                return taken, when
            writes.delete(key)
            taken.append(seq)
        return taken, None

    def _promote_due(self, now: int, budget: int) -> int:
        """Scheduled items whose time has come go to the tail (or to the dead queue if they expired)."""
        seqs, self.timers.next_due = self._take_index(DUE_INDEX, _DUE_END, now, budget)
        writes = self.writes
        for seq in seqs:
            item_key = seq_key(SCHEDULED, seq)
            raw = writes.get(item_key)
            if raw is None:
                continue
            writes.delete(item_key)
            self.meta.scheduled -= 1
            record = Record.decode(raw)
            self._unindex_expiry(record, seq)
            if self._is_expired(record, now):
                self._dead_letter(record, seq, now, DEAD_EXPIRED)
            else:
                self._enqueue(record, now, now)
        return budget - len(seqs)

    def _expire_items(self, now: int, expire: int, budget: int) -> None:
        """Ready or scheduled items older than the expire timeout go to the dead queue (or are deleted)."""
        seqs, self.timers.next_expiry_created = self._take_index(
            EXPIRY_INDEX, _EXPIRY_END, now - expire, budget
        )
        writes = self.writes
        for seq in seqs:
            for prefix in (READY, SCHEDULED):
                item_key = seq_key(prefix, seq)
                raw = writes.get(item_key)
                if raw is None:
                    continue
                writes.delete(item_key)
                record = Record.decode(raw)
                if prefix == READY:
                    self.meta.ready -= 1
                else:
                    self.meta.scheduled -= 1
                    writes.delete(index_key(DUE_INDEX, record.enqueue_at, seq))
                self._dead_letter(record, seq, now, DEAD_EXPIRED)
                break

    # -- operations (engine.Operations) -----------------------------------------------------------------

    def produce(self, op: Produce, now: int) -> list[str]:
        meta = self.meta
        payloads = op.payloads
        ids: list[str]
        window = self.queue.options.dedup_window
        if op.dedup is not None and window:
            first = self.dedup.lookup(op.dedup, now, window)
            if first is not None:
                # A repeat: nothing is stored; the reply waits for this step's sync, which (one log for
                # every key space) also covers the first call's write if that is still being synced.
                meta.deduplicated += 1
                self.writes.put(META_KEY, b"")  # the step's write carries the counter (flush sets it)
                return IdFormat(self.ids.uid, first.partition).run(first.first_seq, first.count)
            start = meta.next_seq
            ids = self._produce(op, now)
            self.dedup.remember(self.writes.ws, op.dedup, now, self.ids.partition, start, len(payloads))
            return ids
        return self._produce(op, now)

    def _produce(self, op: Produce, now: int) -> list[str]:
        meta = self.meta
        payloads = op.payloads
        ids: list[str]
        if op.due > now or self.queue.options.expire_timeout:
            ids = []
            for payload in payloads:
                record = Record(0, now, now, 0, op.kind, op.reference, op.encoding, payload)
                ids.append(self.ids.one(self._enqueue(record, op.due, now)))
        elif len(payloads) == 1:  # the commonest call: no lists to build
            seq = self._new_seq()
            head = new_record_prefix(now, now, op.kind, op.reference, op.encoding)
            self.writes.put_ready(seq_key(READY, seq), head + payloads[0])
            ids = [self.ids.one(seq)]
            meta.ready += 1
        else:
            # The hot path: the record prefix is built once, keys and values in bulk, no Record objects.
            count = len(payloads)
            first = meta.next_seq
            meta.next_seq = first + count
            head = new_record_prefix(now, now, op.kind, op.reference, op.encoding)
            self.writes.put_ready_many(ready_keys(first, count), list(map(head.__add__, payloads)))
            ids = self.ids.run(first, count)
            meta.ready += count
        meta.produced += len(payloads)
        return ids

    def lease(self, op: Lease, now: int) -> list[LeasedItem]:
        if self.queue.paused:  # paused after this lease was handed over: it answers empty (BLOCK waits on)
            return []
        return self.take_ready(op.count, now)

    def complete(self, op: Complete, now: int) -> int:
        ended = self.timers.leases.end_many(op.seqs)
        self.writes.delete_many(seq_keys(LEASED, ended))
        self.meta.completed += len(ended)
        return len(ended)

    def retry(self, op: Retry, now: int) -> int:
        done = 0
        for seq in op.seqs:
            record = self._end_lease(seq)
            if record is None:
                continue
            done += 1
            record.reason = op.reason
            if op.dead:
                self._dead_letter(record, seq, now, DEAD_RETRY)
            else:
                self._requeue_or_dead(record, seq, op.due, now)
        self.meta.retried += done
        return done

    def release(self, op: Release, now: int) -> int:
        done = 0
        for seq in op.seqs:
            record = self._end_lease(seq)
            if record is None:
                continue
            record.attempts = max(0, record.attempts - 1)
            record.lease_deadline = 0
            self._enqueue(record, now, now)
            done += 1
        return done

    def extend(self, op: Extend, now: int) -> int:
        done = 0
        deadline = now + op.lease_for
        leases = self.timers.leases
        for seq in op.seqs:
            if seq not in leases:
                continue
            key = seq_key(LEASED, seq)
            raw = self.writes.get(key)
            if raw is None:
                continue
            record = Record.decode(raw)
            record.lease_deadline = deadline
            self.writes.put(key, record.encode())
            leases.add(seq, deadline)
            done += 1
        return done

    def remove(self, op: Remove, now: int) -> int:
        done = 0
        for seq in op.seqs:
            if seq in self.timers.leases:
                self._end_lease(seq)
                done += 1
            elif self._remove_waiting(seq):
                done += 1
        return done

    def clear(self, op: Clear, now: int) -> int:
        done = 0
        overlay = self.writes.overlay
        for prefix in (READY, SCHEDULED):
            for key, _ in list(self.space.scan(prefix, prefix_end(prefix))):
                if key not in overlay and self._remove_waiting(key_seq(key)):
                    done += 1
        for key in list(self.writes.ready_keys):
            if overlay.get(key) is not None and self._remove_waiting(key_seq(key)):
                done += 1
        for key, value in list(overlay.items()):
            if key[:1] == SCHEDULED and value is not None and self._remove_waiting(key_seq(key)):
                done += 1
        if op.include_leased:
            for seq in list(self.timers.leases.deadlines):
                self._end_lease(seq)
                done += 1
        return done

    def reindex_expiry(self, op: ReindexExpiry, now: int) -> int:
        for key, _ in list(self.space.scan(EXPIRY_INDEX, _EXPIRY_END)):
            self.writes.delete(key)
        self.timers.next_expiry_created = None
        if not op.enabled:
            return 0
        count = 0
        for prefix in (READY, SCHEDULED):
            for key, value in self.space.scan(prefix, prefix_end(prefix)):
                if key in self.writes.overlay:
                    continue
                self._index_expiry(Record.decode(value).created_at, key_seq(key))
                count += 1
        return count

    def redrive(self, op: Redrive, now: int) -> int:
        """Ready items, oldest first, each to where `op.target` sends it; those it leaves stay in place."""
        self.flush()  # the step's own writes go out first, so the scan sees every ready item
        moved = 0
        writes = self.writes
        # Lazily: a dead queue may hold millions of items and a round moves at most `op.limit`. The moves go
        # to the write set, not to storage, so the scan is not disturbed by them.
        for key, value in self.space.scan(seq_key(READY, self.meta.ready_head), _READY_END):
            if moved >= op.limit:
                break
            record = Record.decode(value)
            send = op.target(record)
            if send is None:
                continue
            seq = key_seq(key)
            writes.delete(key)
            self.meta.ready -= 1
            self._unindex_expiry(record, seq)
            # It arrives as a fresh produce would: no reason, no provenance (SPEC 7).
            record.clear_extras()
            send.accept_moved(writes.ws, record, now)
            moved += 1
        return moved

    def sweep_dedup(self, op: SweepDedup, now: int) -> int:
        return self.dedup.sweep(self.writes.ws, now, self.queue.options.dedup_window, _TIMER_BUDGET)

    def read(self, op: Read[T], now: int) -> T:
        """What this step wrote so far is written out first, so storage scans see it; the read's reply
        still waits for the sync that follows the step's last write."""
        self.flush()
        reads: PartitionReads = self
        return op.read(reads)
