"""PartitionActor: one asyncio task applies one partition's requests, in the order they were submitted.

Each step drains the waiting requests (up to a budget), applies them all to one write set through the
key-value state machine, deals ready items to blocked consumers, writes once and answers every request
only after the write is as durable as the sync policy asks (group commit, ADR 4). After a failed write
the partition refuses all work until a restart reloads it, because its memory may be ahead of storage.
"""

from __future__ import annotations

import asyncio
import logging
from time import perf_counter_ns
from typing import Any, TypeVar

from querator.engine import (
    EngineContext,
    Operation,
    QueueHandle,
    Read,
    Release,
    Request,
)
from querator.errors import QueratorError, TryAgainError
from querator.ids import IdFormat
from querator.kvstate import KeyValueState
from querator.model import PartitionCounters, PartitionStats, StoredItem
from querator.records import Record
from querator.steps import answer, cut_step, log_dead_letters
from querator.store.base import KeySpace, Store, WriteSet

log = logging.getLogger("querator.partition")

T = TypeVar("T")


_Result = tuple["asyncio.Future[Any]", object]


class PartitionActor:
    """Implements `engine.Partition` for the key-value engine (memory and RocksDB backends)."""

    def __init__(
        self,
        engine: EngineContext,
        store: Store,
        queue: QueueHandle,
        index: int,
        space: KeySpace,
    ) -> None:
        self._engine = engine
        self._store = store
        self._queue = queue
        self._clock = engine.clock
        self._waiters = waiters = queue.waiters
        # The line's deque itself, so the step's "anyone waiting?" is a C-level truth test.
        self._waiting = waiters.line
        dedup = queue.dedup
        assert dedup is not None, "the key-value engine keeps every queue's deduplication keys"
        self.state = KeyValueState(
            store, space, queue, IdFormat(queue.uid, index), queue.dead_letter_partition, self.wake, dedup
        )
        self.state.load()
        self.index = index  # an attribute, not a property: read by every lease plan
        self._writes = self.state.writes
        self._timers = self.state.timers
        self._inbox: list[Request[Any]] = []
        self._wake: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._results: list[_Result] = []

    # -- engine.PartitionReads: read between steps ------------------------------------------------------

    @property
    def ready(self) -> int:
        return self.state.meta.ready

    @property
    def leased(self) -> int:
        return self.state.leased

    @property
    def scheduled(self) -> int:
        return self.state.scheduled

    def stats(self) -> PartitionStats:
        return self.state.stats()

    def counters(self) -> PartitionCounters:
        return self.state.counters()

    def oldest_ready_enqueue_at(self) -> int | None:
        return self.state.oldest_ready_enqueue_at()

    def items(self, after_seq: int, limit: int) -> list[StoredItem]:
        return self.state.items(after_seq, limit)

    def get(self, seq: int) -> StoredItem | None:
        return self.state.get(seq)

    def accept_moved(self, ws: WriteSet, record: Record, now: int) -> None:
        self.state.accept_moved(ws, record, now)

    # -- lifecycle -------------------------------------------------------------------------------------

    @property
    def failed(self) -> BaseException | None:
        return self._writes.failed

    def start(self) -> None:
        self._clock.subscribe(self.wake)
        self._task = self._engine.loop.create_task(
            self._run(), name=f"partition {self._queue.name}/{self.index}"
        )

    async def stop(self, error: QueratorError | None = None) -> None:
        """Finish the requests already queued (or fail them with `error`), then end the task."""
        self._clock.unsubscribe(self.wake)
        if error is not None:
            for request in self._inbox:
                if not request.future.done():
                    request.future.set_exception(error)
            self._inbox.clear()
        self._stopping = True
        self.wake()
        if self._task is not None:
            await asyncio.shield(self._task)

    def wake(self) -> None:
        wake = self._wake
        if wake is not None and not wake.done():
            wake.set_result(None)

    def pending(self) -> int:
        return len(self._inbox)

    def read(self, op: Read[T]) -> asyncio.Future[T]:
        if not self._inbox:  # idle: storage is consistent between steps
            future: asyncio.Future[T] = self._engine.loop.create_future()
            future.set_result(op.read(self))
            return future
        return self.submit(op)

    def submit(self, op: Operation[T]) -> asyncio.Future[T]:
        if self._stopping:
            raise TryAgainError(f"partition is stopping; queue '{self._queue.name}'")
        if self._writes.failed is not None:
            raise self._storage_failed()
        if len(self._inbox) >= self._engine.inbox_limit:
            raise TryAgainError(f"partition is overloaded; queue '{self._queue.name}' partition {self.index}")
        future: asyncio.Future[T] = self._engine.loop.create_future()
        self._inbox.append(Request(op, future, op.weight))
        wake = self._wake
        if wake is not None and not wake.done():
            wake.set_result(None)
        return future

    # -- the loop --------------------------------------------------------------------------------------

    async def _run(self) -> None:
        loop = self._engine.loop
        clock = self._clock
        timers = self._timers
        writes = self._writes
        queue = self._queue
        while True:
            if not self._inbox and not timers.any_due(clock.now_ms(), queue.options.expire_timeout):
                if self._stopping:
                    return
                self._wake = loop.create_future()
                at = timers.next_at(queue.options.expire_timeout)
                delay = max(0.0, (at - clock.now_ms()) / 1000) if at is not None else None
                handle = loop.call_later(delay, self.wake) if delay is not None else None
                try:
                    await self._wake
                finally:
                    self._wake = None
                    if handle is not None:
                        handle.cancel()
            if writes.failed is not None:
                self._refuse_inbox()
                continue
            try:
                self._step()
            except Exception as exc:
                # Not a request's fault (those are caught per request in _step): answer everyone waiting on
                # this step rather than leave them hanging, and refuse work until a restart reloads storage.
                log.exception("partition %s/%d step failed", self._queue.name, self.index)
                writes.failed = exc
                self._resolve(self._results, exc)
                self._results = []
            if self._inbox or timers.any_due(clock.now_ms(), queue.options.expire_timeout):
                await asyncio.sleep(0)  # more work is waiting: let the other connections and actors run first

    def _refuse_inbox(self) -> None:
        error = self._storage_failed()
        inbox = self._inbox
        self._inbox = []
        for request in inbox:
            if not request.future.done():
                request.future.set_exception(error)

    def _storage_failed(self) -> TryAgainError:
        return TryAgainError(f"storage failed; partition {self.index} of '{self._queue.name}': {self.failed}")

    def _step(self) -> None:
        now = self._clock.now_ms()
        state = self.state
        inbox = self._take_inbox()
        self._writes.begin()
        self._results = results = []
        state.run_timers(now)
        for request in inbox:
            future = request.future
            if future.done():  # cancelled: the client went away before we got to it
                continue
            try:
                results.append((future, request.op.apply(state, now)))
            except QueratorError as exc:
                results.append((future, exc))
            except Exception:
                # A bug, not the caller's mistake: requests are validated before they get here. The
                # state machine changes nothing before its last check, so the rest of the step is unharmed.
                log.exception("%s failed on %s/%d", type(request.op).__name__, self._queue.name, self.index)
                results.append((future, QueratorError("internal error; see the server log")))
        if self._waiting and state.meta.ready and not self._queue.paused:
            results.extend(self._waiters.deal(lambda count: state.take_ready(count, now)))
        self._commit()

    def _take_inbox(self) -> list[Request[Any]]:
        step, self._inbox = cut_step(self._inbox)
        return step

    def _commit(self) -> None:
        results = self._results
        self._results = []
        state = self.state
        if state.dead_in_step:
            log_dead_letters(self._queue, self.index, state.dead_in_step)
            state.dead_in_step.clear()
        on_commit = self._engine.on_commit
        started = perf_counter_ns() if on_commit is not None else 0
        written = state.flush()
        writes = self._writes
        wrote = writes.end()
        if not written or writes.failed is not None:
            self._resolve(results, TryAgainError(f"storage failed; {writes.failed}"))
            return
        if wrote and self._engine.wait_for_sync:

            def synced(error: BaseException | None) -> None:
                if on_commit is not None and error is None:
                    on_commit(perf_counter_ns() - started)
                self._resolve(results, error)

            self._store.after_sync(synced)
            return
        if wrote and on_commit is not None:
            on_commit(perf_counter_ns() - started)
        self._resolve(results, None)

    def _resolve(self, results: list[_Result], error: BaseException | None) -> None:
        failure = TryAgainError(f"storage failed; {error}") if error is not None else None
        abandoned = answer(results, failure)
        if abandoned and not self._stopping and self._writes.failed is None:
            self.submit(Release(abandoned))
