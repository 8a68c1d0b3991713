"""PartitionActor: one asyncio task owns one partition's items and storage key space.

Each step drains every waiting request, applies them all to one write set (with the partition's counters),
writes it once, and answers every request only after the write is as durable as the configured mode
(group commit: with `fsync`, the replies wait for one shared fsync). Requests of one step see each other's
effects through a small overlay of the keys written in that step, so a produce and a lease in the same step
behave as if applied one after the other.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import struct
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from itertools import repeat
from typing import TYPE_CHECKING, Any, Final

from querator.errors import QueratorError, TryAgainError
from querator.model import LeasedItem, PartitionStats, StoredItem
from querator.records import (
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
    lease_many,
    lease_view,
    new_record_prefix,
    prefix_end,
    prefixed_decimals,
    ready_keys,
    seq_key,
    seq_keys,
)

if TYPE_CHECKING:
    from querator.queue import Queue, Waiter
    from querator.store.base import KeySpace

log = logging.getLogger("querator.partition")

_READY_END: Final = prefix_end(READY)
_DUE_END: Final = prefix_end(DUE_INDEX)
_EXPIRY_END: Final = prefix_end(EXPIRY_INDEX)
# How much timer work (expired leases, due schedules, expired items) one step does at most, so a burst of
# expiries cannot stall the requests waiting behind it; the rest continues in the next step.
_TIMER_BUDGET: Final = 5000

# Items one step applies at most (a request's weight is its item, id or lease count), so the event loop
# is never held for long by one partition however deep the clients' pipelines are.
_STEP_ITEMS: Final = 20_000

Result = Any
_Request = tuple[Callable[..., Result], tuple[Any, ...], "asyncio.Future[Any]"]


def _weight(args: tuple[Any, ...]) -> int:
    first = args[0] if args else None
    if isinstance(first, list):
        return len(first)  # payloads of a produce, or seqs of a complete/retry/extend/remove
    if isinstance(first, int) and not isinstance(first, bool):
        return first  # a lease's count
    return 1


class PartitionActor:
    def __init__(self, queue: Queue, index: int, space: KeySpace) -> None:
        self.queue = queue
        self.index = index
        self.space = space
        self.service = queue.service
        self.store = queue.service.store
        self.clock = queue.service.clock
        self.meta = PartitionMeta()
        # seq -> lease deadline of every leased item; the heap orders them by deadline (stale entries, left
        # by completes and extensions, are skipped when popped).
        self.leased: dict[int, int] = {}
        self._lease_heap: list[tuple[int, int]] = []
        self._next_due: int | None = None
        self._next_expiry_created: int | None = None
        self._inbox: list[_Request] = []
        self._wake: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.failed: BaseException | None = None
        # The write set of the step in progress and the overlay of the keys it wrote.
        self._ws: Any = None
        self._overlay: dict[bytes, bytes | None] = {}
        self._overlay_ready: list[bytes] = []
        self._overlay_ready_pos = 0
        self._overlay_ready_live = 0
        self._results: list[tuple[asyncio.Future[Any], Result]] = []
        self._wrote = False
        # An item's id is `uid-partition-seq`: `item_id`, `_id_format % seq` in a C-level map, and
        # `prefixed_decimals` for a produced batch's consecutive seqs all build it from this prefix.
        self._id_prefix = f"{queue.uid}-{index}-"
        self._id_format = self._id_prefix + "%d"
        self._load()

    # -- lifecycle -------------------------------------------------------------------------------------

    def _load(self) -> None:
        space = self.space
        raw = space.get(META_KEY)
        if raw is not None:
            self.meta = PartitionMeta.decode(raw)
        # Never reuse a seq, even if the counters were lost: look past the highest key of every state.
        for prefix in (READY, LEASED, SCHEDULED):
            last = space.last_key(prefix, prefix_end(prefix))
            if last is not None:
                self.meta.next_seq = max(self.meta.next_seq, key_seq(last) + 1)
        for key, value in space.scan(LEASED, prefix_end(LEASED)):
            seq = key_seq(key)
            deadline = Record.decode(value).lease_deadline
            self.leased[seq] = deadline
            self._lease_heap.append((deadline, seq))
        heapq.heapify(self._lease_heap)
        self._refresh_next_due()
        self._refresh_next_expiry()

    def start(self) -> None:
        self.clock.subscribe(self.wake)
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"partition {self.queue.name}/{self.index}"
        )

    async def stop(self, error: QueratorError | None = None) -> None:
        """Finish the requests already queued (or fail them with `error`), then end the task."""
        self.clock.unsubscribe(self.wake)
        if error is not None:
            for _, _, future in self._inbox:
                if not future.done():
                    future.set_exception(error)
            self._inbox.clear()
        self._stopping = True
        self.wake()
        if self._task is not None:
            await asyncio.shield(self._task)

    def wake(self) -> None:
        wake = self._wake
        if wake is not None and not wake.done():
            wake.set_result(None)

    def has_pending(self) -> bool:
        """Requests handed to this partition and not applied yet."""
        return bool(self._inbox)

    def inbox_size(self) -> int:
        return len(self._inbox)

    def submit(
        self, handler: Callable[..., Result], args: tuple[Any, ...], future: asyncio.Future[Any]
    ) -> None:
        if self._stopping:
            raise TryAgainError(f"partition is stopping; queue '{self.queue.name}'")
        if self.failed is not None:
            raise TryAgainError(
                f"storage failed; partition {self.index} of '{self.queue.name}': {self.failed}"
            )
        if len(self._inbox) >= self.service.config.partition_inbox:
            raise TryAgainError(f"partition is overloaded; queue '{self.queue.name}' partition {self.index}")
        self._inbox.append((handler, args, future))
        wake = self._wake
        if wake is not None and not wake.done():
            wake.set_result(None)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._inbox and not self._timers_due():
                if self._stopping:
                    return
                self._wake = loop.create_future()
                delay = self._next_timer_delay()
                handle = loop.call_later(delay, self.wake) if delay is not None else None
                try:
                    await self._wake
                finally:
                    self._wake = None
                    if handle is not None:
                        handle.cancel()
            if self.failed is not None:
                self._refuse_inbox()
                continue
            try:
                self._step()
            except Exception as exc:
                # Not a request's fault (those are caught per request in _step): answer everyone waiting on
                # this step rather than leave them hanging, and refuse work until a restart reloads storage.
                log.exception("partition %s/%d step failed", self.queue.name, self.index)
                self.failed = exc
                self._resolve(self._results, exc)
                self._results = []
            if self._inbox or self._timers_due():
                await asyncio.sleep(0)  # more work is waiting: let the other connections and actors run first

    def _refuse_inbox(self) -> None:
        error = TryAgainError(f"storage failed; partition {self.index} of '{self.queue.name}': {self.failed}")
        inbox = self._inbox
        self._inbox = []
        for _, _, future in inbox:
            if not future.done():
                future.set_exception(error)

    # -- the step --------------------------------------------------------------------------------------

    def _step(self) -> None:
        now = self.clock.now_ms()
        inbox = self._take_inbox()
        self._begin()
        self._run_timers(now)
        results = self._results
        for handler, args, future in inbox:
            if future.done():  # cancelled: the client went away before we got to it
                continue
            try:
                results.append((future, handler(self, now, *args)))
            except QueratorError as exc:
                results.append((future, exc))
            except Exception:
                # A bug, not the caller's mistake: requests are validated before they get here. The
                # handlers change nothing before their last check, so the rest of the step is unharmed.
                log.exception(
                    "%s failed on %s/%d", getattr(handler, "__name__", handler), self.queue.name, self.index
                )
                results.append((future, QueratorError("internal error; see the server log")))
        if self.queue.waiters and self.meta.ready:
            self._deal_to_waiters(now)
        self._commit()

    def _take_inbox(self) -> list[_Request]:
        """The requests of one step: all that wait, up to about `_STEP_ITEMS` items (at least one request),
        so one step cannot hold the event loop for long; the rest go to the next step."""
        inbox = self._inbox
        weight = 0
        for taken, (_, args, _) in enumerate(inbox):
            weight += _weight(args)
            if weight >= _STEP_ITEMS:
                self._inbox = inbox[taken + 1 :]
                return inbox[: taken + 1]
        self._inbox = []
        return inbox

    def _begin(self) -> None:
        self._ws = self.store.new_write_set()
        self._results = []

    def _write_out(self) -> bool:
        """Write what the step wrote so far and start a fresh write set. False if the write failed."""
        ws = self._ws
        self._overlay.clear()
        self._overlay_ready.clear()
        self._overlay_ready_pos = 0
        self._overlay_ready_live = 0
        if not len(ws):
            return True
        self._ws = self.store.new_write_set()
        self._wrote = True
        ws.put(self.space, META_KEY, self.meta.encode())
        try:
            self.store.write(ws)
        except Exception as exc:
            # The in-memory state now runs ahead of storage: refuse further work until a restart
            # reloads the partition from what storage really holds.
            log.exception("write failed on %s/%d", self.queue.name, self.index)
            self.failed = exc
            return False
        return True

    def _commit(self) -> None:
        results = self._results
        written = self._write_out()
        wrote = self._wrote
        self._ws = None
        self._results = []
        self._wrote = False
        if not written or self.failed is not None:
            self._resolve(results, TryAgainError(f"storage failed; {self.failed}"))
            return
        if wrote and self.service.wait_for_sync:
            self.store.after_sync(lambda error: self._resolve(results, error))
            return
        self._resolve(results, None)

    def _resolve(
        self, results: list[tuple[asyncio.Future[Any], Result]], error: BaseException | None
    ) -> None:
        failure = TryAgainError(f"storage failed; {error}") if error is not None else None
        abandoned: list[int] = []
        for future, result in results:
            if future.done():
                # Cancelled: the caller went away before its reply. Leased items it will never see go back
                # to the queue, so nothing is held by nobody until the lease times out.
                if failure is None and type(result) is list and result and type(result[0]) is LeasedItem:
                    abandoned.extend(int(item.id.rsplit("-", 1)[1]) for item in result)
                continue
            if failure is not None:
                future.set_exception(failure)
            elif isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)
        if abandoned and not self._stopping and self.failed is None:
            self.submit(PartitionActor.op_release, (abandoned,), self.service.loop.create_future())

    # -- key writes with the step overlay -------------------------------------------------------------

    def _put(self, key: bytes, value: bytes) -> None:
        self._ws.put(self.space, key, value)
        self._overlay[key] = value

    def _delete(self, key: bytes) -> None:
        self._ws.delete(self.space, key)
        # A ready item put earlier in this step and now removed no longer counts as ready in the overlay.
        if key[0] == 114 and self._overlay.get(key) is not None:  # b"r"
            self._overlay_ready_live -= 1
        self._overlay[key] = None

    def _get(self, key: bytes) -> bytes | None:
        overlay = self._overlay
        if key in overlay:
            return overlay[key]
        return self.space.get(key)

    def _put_ready(self, seq: int, value: bytes) -> None:
        key = seq_key(READY, seq)
        self._ws.put(self.space, key, value)
        self._overlay[key] = value
        self._overlay_ready.append(key)
        self._overlay_ready_live += 1

    # -- item movements ---------------------------------------------------------------------------------

    def _new_seq(self) -> int:
        seq = self.meta.next_seq
        self.meta.next_seq = seq + 1
        return seq

    def item_id(self, seq: int) -> str:
        return self._id_format % seq

    def _enqueue(self, record: Record, due: int, now: int) -> int:
        """Place `record` at the tail (ready) or in the schedule (due in the future) under a new seq."""
        seq = self._new_seq()
        meta = self.meta
        record.lease_deadline = 0
        if due > now:
            record.enqueue_at = due
            self._put(seq_key(SCHEDULED, seq), record.encode())
            self._put(index_key(DUE_INDEX, due, seq), b"")
            meta.scheduled += 1
            if self._next_due is None or due < self._next_due:
                self._next_due = due
        else:
            record.enqueue_at = now
            self._put_ready(seq, record.encode())
            meta.ready += 1
        if self.queue.options.expire_timeout:
            self._index_expiry(record.created_at, seq)
        return seq

    def _index_expiry(self, created_at: int, seq: int) -> None:
        self._put(index_key(EXPIRY_INDEX, created_at, seq), b"")
        if self._next_expiry_created is None or created_at < self._next_expiry_created:
            self._next_expiry_created = created_at

    def _unindex_expiry(self, record: Record, seq: int) -> None:
        if self.queue.options.expire_timeout:
            self._delete(index_key(EXPIRY_INDEX, record.created_at, seq))

    def _is_expired(self, record: Record, now: int) -> bool:
        expire = self.queue.options.expire_timeout
        return bool(expire) and now >= record.created_at + expire

    def _end_lease(self, seq: int, now: int) -> Record | None:
        """Remove a leased item's lease; the caller decides where the record goes."""
        if self.leased.pop(seq, None) is None:
            return None
        key = seq_key(LEASED, seq)
        raw = self._get(key)
        self._delete(key)
        return Record.decode(raw) if raw is not None else None

    def _requeue_or_dead(self, record: Record, due: int, now: int) -> None:
        """The end of a lease without completion: back to the queue, or to the dead queue."""
        max_attempts = self.queue.options.max_attempts
        if (max_attempts and record.attempts >= max_attempts) or self._is_expired(record, now):
            self._dead_letter(record, now)
        else:
            self._enqueue(record, due, now)

    def _dead_letter(self, record: Record, now: int) -> None:
        self.meta.dead_lettered += 1
        dead = self.queue.dead_queue
        if dead is not None:
            dead.accept_dead_letter(self._ws, record, now)

    def accept_external(self, ws: Any, record: Record, now: int) -> None:
        """Add a dead-lettered item from another queue's step to this partition, in that step's write set.

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
            if self._next_expiry_created is None:
                self._next_expiry_created = now
        self.meta.ready += 1
        self.meta.produced += 1
        ws.put(self.space, META_KEY, self.meta.encode())
        self.wake()

    def _take_ready(self, count: int, now: int, lease_timeout: int) -> list[LeasedItem]:
        """Lease up to `count` ready items from the head, in FIFO order."""
        taken: list[LeasedItem] = []
        meta = self.meta
        if not meta.ready:
            return taken
        db_ready = meta.ready - self._overlay_ready_live
        if db_ready > 0 and not self.queue.options.expire_timeout:
            self._lease_stored(min(count, db_ready), now, lease_timeout, taken)
        elif db_ready > 0:
            overlay = self._overlay
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
                if not meta.ready - self._overlay_ready_live:
                    break
            if last_seq >= 0:
                meta.ready_head = last_seq + 1
        if len(taken) < count and self._overlay_ready_live:
            pending_keys = self._overlay_ready
            pos = self._overlay_ready_pos
            while pos < len(pending_keys) and len(taken) < count:
                key = pending_keys[pos]
                pos += 1
                pending = self._overlay.get(key)
                if pending is None:
                    continue
                seq = key_seq(key)
                meta.ready_head = seq + 1
                self._lease_record(seq, key, pending, now, lease_timeout, taken)
            self._overlay_ready_pos = pos
        return taken

    def _lease_stored(self, want: int, now: int, lease_timeout: int, taken: list[LeasedItem]) -> None:
        """Lease up to `want` ready items from storage's head in one pass, for queues without an expire
        timeout (no item can turn out dead on the way). The same moves as `_lease_record`, done in bulk: no
        Python code runs per item unless a record carries a kind, reference or encoding (`lease_view`)."""
        overlay = self._overlay
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
        # Every ready key is READY + an 8-byte seq, so one unpack reads all the seqs.
        seqs: list[int] = list(struct.unpack(">" + "xQ" * count, b"".join(keys)))
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
        leased_keys = seq_keys(LEASED, seqs)
        ws = self._ws
        ws.delete_many(self.space, keys)
        overlay.update(dict.fromkeys(keys))  # None: removed (none of them was put in this step)
        ws.put_many(self.space, leased_keys, leased_values)
        overlay.update(zip(leased_keys, leased_values, strict=True))
        self.meta.ready -= count
        self.meta.ready_head = seqs[-1] + 1
        self.leased.update(dict.fromkeys(seqs, deadline))
        deque(map(heapq.heappush, repeat(self._lease_heap), zip(repeat(deadline), seqs)), maxlen=0)
        ids = map(self._id_format.__mod__, seqs)
        fields = zip(ids, payloads, attempts, repeat(deadline), kinds, references, encodings)
        taken.extend(map(tuple.__new__, repeat(LeasedItem), fields))

    def _lease_record(
        self, seq: int, key: bytes, value: bytes, now: int, lease_timeout: int, taken: list[LeasedItem]
    ) -> bool:
        """Move one ready item to leased (or to the dead queue if it expired). True if it was leased."""
        self._delete(key)
        self.meta.ready -= 1
        if self.queue.options.expire_timeout:
            record = Record.decode(value)
            self._unindex_expiry(record, seq)
            if self._is_expired(record, now):
                self._dead_letter(record, now)
                return False
        deadline = now + lease_timeout
        leased, attempts, _, kind, reference, encoding, payload = lease_view(value, deadline)
        self._put(seq_key(LEASED, seq), leased)
        self.leased[seq] = deadline
        heapq.heappush(self._lease_heap, (deadline, seq))
        taken.append(LeasedItem(self.item_id(seq), payload, attempts, deadline, kind, reference, encoding))
        return True

    # -- waiters ---------------------------------------------------------------------------------------

    def _deal_to_waiters(self, now: int) -> None:
        """Deal ready items to blocked consumers one at a time, in arrival order, round after round.

        The items are leased in one pass from the head (FIFO order), then dealt: the first to the first
        waiter, the second to the second, ... wrapping round until each has its COUNT or none are left.
        """
        queue = self.queue
        live: list[Waiter] = [w for w in queue.waiters if not w.future.done()]
        wanted = sum(w.count for w in live)
        items = self._take_ready(wanted, now, queue.options.lease_timeout) if wanted else []
        dealt = 0
        while dealt < len(items):
            for waiter in live:
                if dealt >= len(items):
                    break
                if len(waiter.items) < waiter.count:
                    waiter.items.append(items[dealt])
                    dealt += 1
        served = [w for w in live if w.items]
        if served or len(live) != len(queue.waiters):
            queue.waiters.clear()
            queue.waiters.extend(w for w in live if not w.items)
        for waiter in served:
            waiter.served()
            self._results.append((waiter.future, waiter.items))

    # -- timers ----------------------------------------------------------------------------------------

    def _timers_due(self) -> bool:
        now = self.clock.now_ms()
        heap = self._lease_heap
        if heap and heap[0][0] <= now:
            return True
        if self._next_due is not None and self._next_due <= now:
            return True
        expire = self.queue.options.expire_timeout
        return (
            bool(expire)
            and self._next_expiry_created is not None
            and self._next_expiry_created + expire <= now
        )

    def _next_timer_delay(self) -> float | None:
        candidates: list[int] = []
        if self._lease_heap:
            candidates.append(self._lease_heap[0][0])
        if self._next_due is not None:
            candidates.append(self._next_due)
        expire = self.queue.options.expire_timeout
        if expire and self._next_expiry_created is not None:
            candidates.append(self._next_expiry_created + expire)
        if not candidates:
            return None
        return max(0.0, (min(candidates) - self.clock.now_ms()) / 1000)

    def _run_timers(self, now: int) -> None:
        budget = _TIMER_BUDGET
        heap = self._lease_heap
        leased = self.leased
        while heap and heap[0][0] <= now and budget:
            deadline, seq = heapq.heappop(heap)
            if leased.get(seq) != deadline:
                continue  # completed, retried or extended since
            budget -= 1
            record = self._end_lease(seq, now)
            self.meta.lease_expired += 1
            if record is not None:
                self._requeue_or_dead(record, now, now)
        if self._next_due is not None and self._next_due <= now and budget:
            budget = self._promote_due(now, budget)
        expire = self.queue.options.expire_timeout
        if (
            expire
            and self._next_expiry_created is not None
            and self._next_expiry_created + expire <= now
            and budget
        ):
            self._expire_items(now, expire, budget)

    def _promote_due(self, now: int, budget: int) -> int:
        self._next_due = None
        for key, _ in self.space.scan(DUE_INDEX, _DUE_END):
            if key in self._overlay:
                continue
            due, seq = index_entry(key)
            if due > now or not budget:
                self._next_due = due
                break
            budget -= 1
            self._delete(key)
            item_key = seq_key(SCHEDULED, seq)
            raw = self._get(item_key)
            if raw is None:
                continue
            self._delete(item_key)
            self.meta.scheduled -= 1
            record = Record.decode(raw)
            self._unindex_expiry(record, seq)
            if self._is_expired(record, now):
                self._dead_letter(record, now)
            else:
                self._enqueue(record, now, now)
        return budget

    def _expire_items(self, now: int, expire: int, budget: int) -> None:
        self._next_expiry_created = None
        for key, _ in self.space.scan(EXPIRY_INDEX, _EXPIRY_END):
            if key in self._overlay:
                continue
            created, seq = index_entry(key)
            if created + expire > now or not budget:
                self._next_expiry_created = created
                break
            budget -= 1
            self._delete(key)
            for prefix in (READY, SCHEDULED):
                item_key = seq_key(prefix, seq)
                raw = self._get(item_key)
                if raw is None:
                    continue
                self._delete(item_key)
                record = Record.decode(raw)
                if prefix == READY:
                    self.meta.ready -= 1
                else:
                    self.meta.scheduled -= 1
                    self._delete(index_key(DUE_INDEX, record.enqueue_at, seq))
                self._dead_letter(record, now)
                break

    def _refresh_next_due(self) -> None:
        last = None
        for key, _ in self.space.scan(DUE_INDEX, _DUE_END):
            last = index_entry(key)[0]
            break
        self._next_due = last

    def _refresh_next_expiry(self) -> None:
        first = None
        for key, _ in self.space.scan(EXPIRY_INDEX, _EXPIRY_END):
            first = index_entry(key)[0]
            break
        self._next_expiry_created = first

    # -- request handlers: called inside a step as handler(self, now, *args) ----------------------------

    def op_produce(
        self, now: int, payloads: list[bytes], due: int, kind: bytes, reference: bytes, encoding: bytes
    ) -> list[str]:
        meta = self.meta
        ids: list[str] = []
        if due > now or self.queue.options.expire_timeout:
            for payload in payloads:
                record = Record(0, now, now, 0, kind, reference, encoding, payload)
                ids.append(self.item_id(self._enqueue(record, due, now)))
        elif len(payloads) == 1:  # the commonest call: no lists to build
            seq = self._new_seq()
            self._put_ready(seq, new_record_prefix(now, now, kind, reference, encoding) + payloads[0])
            ids = [self.item_id(seq)]
            meta.ready += 1
        else:
            # The hot path: the record prefix is built once, keys and values in bulk, no Record objects.
            count = len(payloads)
            first = meta.next_seq
            meta.next_seq = first + count
            head = new_record_prefix(now, now, kind, reference, encoding)
            keys = ready_keys(first, count)
            values = list(map(head.__add__, payloads))
            self._ws.put_many(self.space, keys, values)
            self._overlay.update(zip(keys, values, strict=True))
            self._overlay_ready.extend(keys)
            self._overlay_ready_live += count
            ids = prefixed_decimals(self._id_prefix, first, count)
            meta.ready += count
        meta.produced += len(payloads)
        return ids

    def op_lease(self, now: int, count: int) -> list[LeasedItem]:
        return self._take_ready(count, now, self.queue.options.lease_timeout)

    def op_complete(self, now: int, seqs: list[int]) -> int:
        pop = self.leased.pop
        ended = [seq for seq in seqs if pop(seq, None) is not None]
        keys = seq_keys(LEASED, ended)
        self._ws.delete_many(self.space, keys)
        self._overlay.update(dict.fromkeys(keys))  # None: removed
        self.meta.completed += len(ended)
        return len(ended)

    def op_retry(self, now: int, seqs: list[int], due: int, dead: bool) -> int:
        done = 0
        for seq in seqs:
            record = self._end_lease(seq, now)
            if record is None:
                continue
            done += 1
            if dead:
                self._dead_letter(record, now)
            else:
                self._requeue_or_dead(record, due, now)
        self.meta.retried += done
        return done

    def op_release(self, now: int, seqs: list[int]) -> int:
        """Give back items dealt to a consumer that went away before its reply: no attempt is counted."""
        done = 0
        for seq in seqs:
            record = self._end_lease(seq, now)
            if record is None:
                continue
            record.attempts = max(0, record.attempts - 1)
            record.lease_deadline = 0
            self._enqueue(record, now, now)
            done += 1
        return done

    def op_extend(self, now: int, seqs: list[int], lease_for: int) -> int:
        done = 0
        deadline = now + lease_for
        for seq in seqs:
            if seq not in self.leased:
                continue
            key = seq_key(LEASED, seq)
            raw = self._get(key)
            if raw is None:
                continue
            record = Record.decode(raw)
            record.lease_deadline = deadline
            self._put(key, record.encode())
            self.leased[seq] = deadline
            heapq.heappush(self._lease_heap, (deadline, seq))
            done += 1
        return done

    def op_remove(self, now: int, seqs: list[int]) -> int:
        done = 0
        for seq in seqs:
            if seq in self.leased:
                self._end_lease(seq, now)
                done += 1
                continue
            if self._remove_waiting(seq):
                done += 1
        return done

    def _remove_waiting(self, seq: int) -> bool:
        """Remove a ready or scheduled item (not leased)."""
        key = seq_key(READY, seq)
        raw = self._get(key)
        if raw is not None:
            self._delete(key)
            self.meta.ready -= 1
            self._unindex_expiry(Record.decode(raw), seq)
            return True
        key = seq_key(SCHEDULED, seq)
        raw = self._get(key)
        if raw is not None:
            record = Record.decode(raw)
            self._delete(key)
            self._delete(index_key(DUE_INDEX, record.enqueue_at, seq))
            self._unindex_expiry(record, seq)
            self.meta.scheduled -= 1
            return True
        return False

    def op_clear(self, now: int, include_leased: bool) -> int:
        done = 0
        for prefix in (READY, SCHEDULED):
            for key, _ in list(self.space.scan(prefix, prefix_end(prefix))):
                if key not in self._overlay and self._remove_waiting(key_seq(key)):
                    done += 1
        for key in list(self._overlay_ready):
            if self._overlay.get(key) is not None and self._remove_waiting(key_seq(key)):
                done += 1
        for key, value in list(self._overlay.items()):
            if key[:1] == SCHEDULED and value is not None and self._remove_waiting(key_seq(key)):
                done += 1
        if include_leased:
            for seq in list(self.leased):
                self._end_lease(seq, now)
                done += 1
        return done

    def op_reindex_expiry(self, now: int, enabled: bool) -> int:
        """The queue's expire timeout was switched on or off: build or drop the expiry index."""
        for key, _ in list(self.space.scan(EXPIRY_INDEX, _EXPIRY_END)):
            self._delete(key)
        self._next_expiry_created = None
        if not enabled:
            return 0
        count = 0
        for prefix in (READY, SCHEDULED):
            for key, value in self.space.scan(prefix, prefix_end(prefix)):
                if key in self._overlay:
                    continue
                self._index_expiry(Record.decode(value).created_at, key_seq(key))
                count += 1
        return count

    def op_read(self, now: int, reader: Callable[[PartitionActor], Result]) -> Result:
        """Read the partition at this point of the step, after the requests before it.

        What this step wrote so far is written out first, so storage scans see it; its replies still wait
        for the sync that follows the step's last write.
        """
        self._write_out()
        return reader(self)

    def op_nothing(self, now: int) -> None:
        """A request that only makes the actor run a step (to deal to new waiters)."""
        return None

    # -- reads (run outside steps; storage is always consistent between steps) ------------------------

    def stats(self) -> PartitionStats:
        return PartitionStats(self.index, self.meta.ready, len(self.leased), self.meta.scheduled)

    def oldest_ready_enqueue_at(self) -> int | None:
        if not self.meta.ready:
            return None
        for _, value in self.space.scan(seq_key(READY, self.meta.ready_head), _READY_END):
            return Record.decode(value).enqueue_at
        return None

    def _state_stream(self, prefix: bytes, state: str, start: int) -> Iterator[tuple[int, str, bytes]]:
        for key, value in self.space.scan(seq_key(prefix, start), prefix_end(prefix)):
            yield key_seq(key), state, value

    def items(self, after_seq: int, limit: int) -> list[StoredItem]:
        expire = self.queue.options.expire_timeout
        start = after_seq + 1
        streams = [
            self._state_stream(prefix, state, start)
            for prefix, state in ((LEASED, "leased"), (READY, "ready"), (SCHEDULED, "scheduled"))
        ]
        out: list[StoredItem] = []
        for seq, state, value in heapq.merge(*streams):
            if len(out) >= limit:
                break
            record = Record.decode(value)
            out.append(
                StoredItem(
                    id=self.item_id(seq),
                    state=state,  # type: ignore[arg-type]
                    attempts=record.attempts,
                    created_at=record.created_at,
                    enqueue_at=record.enqueue_at,
                    lease_deadline=record.lease_deadline,
                    expire_deadline=record.created_at + expire if expire else 0,
                    kind=record.kind,
                    reference=record.reference,
                    encoding=record.encoding,
                    payload=record.payload,
                )
            )
        return out
