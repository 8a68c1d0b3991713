"""Service: the queue API as plain async methods (the product); the RESP server is one front end of it.

Each method checks its arguments, hands the work to the queue's partitions, and returns an awaitable that
completes once the change is as durable as the configured mode. The hand-off happens when the method is
called, not when it is awaited, so requests are applied in the order they were made even when the
caller (a pipelining connection) awaits them later (ADR 5).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import TypeVar

from querator.arguments import check_ids, check_lease, check_produce, check_retry, due_at
from querator.backend import Backend, open_backend
from querator.catalog import QueueEntry, check_range, validate_options, validate_queue_name
from querator.clock import Clock
from querator.config import Config
from querator.declared import apply_declarations
from querator.engine import (
    Complete,
    Extend,
    Partition,
    Produce,
    ReadItem,
    ReadItems,
    Remove,
    Retry,
)
from querator.errors import CommandError, NoQueueError, QueueExistsError, ShutdownError
from querator.futures import combine, done, ignore, settle
from querator.ids import parse_after, parse_ids
from querator.model import (
    DEFAULT_REDRIVE_LIMIT,
    MAX_LEASE_COUNT,
    MAX_LEASE_TIMEOUT,
    MAX_LIST_LIMIT,
    MAX_REDRIVE_LIMIT,
    LeasedItem,
    QueueInfo,
    QueueOptions,
    QueueStats,
    QueueUpdate,
    StoredItem,
)
from querator.queue import Queue
from querator.records import Record
from querator.store import Store

T = TypeVar("T")
log = logging.getLogger("querator.service")

__all__ = ["Service", "validate_queue_name"]


class Service:
    """`async with Service(config) as svc:` opens storage, loads every queue and starts its partitions."""

    def __init__(
        self,
        config: Config | None = None,
        *,
        clock: Clock | None = None,
        on_commit: Callable[[int], None] | None = None,
    ) -> None:
        """`on_commit` is told how long each partition's write took until durable, in ns (metrics)."""
        self.config = config or Config()
        self.clock = clock or Clock()
        self.on_commit = on_commit
        self.queues: dict[str, Queue] = {}
        self._closing = False
        self._background: set[asyncio.Task[None]] = set()
        # Set by start(); the loop is kept because asyncio.get_running_loop() makes a getpid() system call.
        self.backend: Backend | None = None
        self.loop: asyncio.AbstractEventLoop

    @property
    def store(self) -> Store | None:
        """The key-value store (memory, RocksDB), or None for the postgres backend."""
        return getattr(self.backend, "store", None)

    # -- lifecycle -------------------------------------------------------------------------------------

    async def __aenter__(self) -> Service:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.backend = backend = open_backend(self.config, self.clock, self.loop, self.on_commit)
        entries = await backend.open(self._catalog_changed)
        for entry in entries:
            self.queues[entry.name] = self._new_queue(entry)
        for queue in self.queues.values():
            queue.dead_queue = self.queues.get(queue.options.dead_queue) if queue.options.dead_queue else None
        backend.forget_orphans(entries)
        for queue in self.queues.values():
            for partition in queue.partitions:
                partition.start()
            queue.arm_sweep()
        await apply_declarations(self, self.config.queues)

    def _new_queue(self, entry: QueueEntry) -> Queue:
        """A queue object for a catalog entry, its partitions built but not started."""
        assert self.backend is not None
        queue = Queue(
            self.backend.context,
            self.backend.engine,
            entry.name,
            entry.uid,
            entry.options,
            entry.created_at,
            entry.updated_at,
            entry.paused,
        )
        queue.add_partitions(entry.options.partitions, start=False)
        return queue

    async def close(self) -> None:
        """Stop taking requests, let partitions finish what they hold, answer blocked consumers, close."""
        if self._closing:
            return
        self._closing = True
        for queue in self.queues.values():
            queue.stop_sweep()
            queue.waiters.fail_all(ShutdownError())
        await asyncio.gather(*(p.stop() for q in self.queues.values() for p in q.partitions))
        if self.backend is not None:
            await self.backend.close()

    def _catalog_changed(self, entries: list[QueueEntry]) -> None:
        """Another node created, changed or deleted queues (postgres): make ours match the catalog."""
        if self._closing:
            return
        wanted = {entry.name: entry for entry in entries}
        for name, queue in list(self.queues.items()):
            entry = wanted.get(name)
            if entry is None or entry.uid != queue.uid:
                log.info("queue deleted on another node", extra={"fields": {"queue": name}})
                del self.queues[name]
                self._stop_queue(queue)
        for entry in entries:
            known = self.queues.get(entry.name)
            if known is None:
                added = self.queues[entry.name] = self._new_queue(entry)
                for partition in added.partitions:
                    partition.start()
                continue
            queue = known
            if queue.updated_at == entry.updated_at and queue.paused == entry.paused:
                continue
            queue.options = entry.options
            queue.updated_at = entry.updated_at
            queue.add_partitions(entry.options.partitions, start=True)
            if queue.paused and not entry.paused:
                queue.resume()
            queue.paused = entry.paused
        for queue in self.queues.values():
            queue.dead_queue = self.queues.get(queue.options.dead_queue) if queue.options.dead_queue else None

    def _stop_queue(self, queue: Queue) -> asyncio.Future[None]:
        """Stop a queue no longer in the catalog: its waiters and requests answer NOQUEUE."""
        queue.stop_sweep()
        queue.waiters.fail_all(NoQueueError(queue.name))
        stopped = asyncio.gather(*(p.stop(NoQueueError(queue.name)) for p in queue.partitions))
        result: asyncio.Future[None] = self.loop.create_future()
        stopped.add_done_callback(lambda f: settle(result, None, f.exception()))
        return result

    # -- helpers ---------------------------------------------------------------------------------------

    def _queue(self, name: str) -> Queue:
        if self._closing:
            raise ShutdownError()
        queue = self.queues.get(name)
        if queue is None:
            raise NoQueueError(name)
        return queue

    def _entry(self, queue: Queue) -> QueueEntry:
        return QueueEntry(
            queue.name, queue.uid, queue.options, queue.created_at, queue.updated_at, queue.paused
        )

    def _ids(self, queue: Queue, ids: Sequence[str | bytes]) -> dict[int, list[int]]:
        check_ids(self.config, ids)
        return parse_ids(queue.uid, len(queue.partitions), ids)

    # -- queue administration --------------------------------------------------------------------------

    def create_queue(self, name: str, options: QueueOptions | None = None) -> asyncio.Future[None]:
        if self._closing:
            raise ShutdownError()
        options = options or QueueOptions()
        validate_queue_name(name)
        if name in self.queues:
            raise QueueExistsError(name)
        validate_options(name, options, self.queues)
        assert self.backend is not None
        now = self.clock.now_ms()
        entry = QueueEntry(name, self.backend.new_uid(), options, now, now)
        # Storage first: if we crash before the metadata is durable it is an orphan, dropped at start.
        queue = self._new_queue(entry)
        for partition in queue.partitions:
            partition.start()
        queue.dead_queue = self.queues.get(options.dead_queue) if options.dead_queue else None
        # Registered before its metadata is durable, so a pipelined QPRODUCE finds it (ADR 5).
        self.queues[name] = queue
        saved = self.backend.save(entry, created=True)

        def undo(future: asyncio.Future[None]) -> None:
            # Another node created the same name first (postgres): ours never existed.
            if not future.cancelled() and future.exception() is not None and self.queues.get(name) is queue:
                del self.queues[name]
                self._stop_queue(queue)

        saved.add_done_callback(undo)
        return saved

    def update_queue(self, name: str, changes: QueueUpdate) -> asyncio.Future[None]:
        queue = self._queue(name)
        old = queue.options
        new = old.updated(changes)
        if new.partitions < old.partitions:
            raise CommandError(f"PARTITIONS may only grow; the queue has {old.partitions}")
        validate_options(name, new, self.queues)
        queue.options = new
        queue.updated_at = self.clock.now_ms()
        queue.add_partitions(new.partitions, start=True)
        queue.dead_queue = self.queues.get(new.dead_queue) if new.dead_queue else None
        if new.dedup_window != old.dedup_window:
            queue.rearm_sweep()
        assert self.backend is not None
        written = self.backend.save(self._entry(queue), created=False)
        if bool(old.expire_timeout) == bool(new.expire_timeout):
            return written
        return combine([written, *queue.reindex_expiry(bool(new.expire_timeout))], ignore)

    def delete_queue(self, name: str) -> asyncio.Future[None]:
        queue = self._queue(name)
        for other in self.queues.values():
            if other is not queue and other.options.dead_queue == name:
                raise CommandError(
                    f"queue '{name}' is the dead queue of '{other.name}'; change that queue first"
                )
        assert self.backend is not None
        backend = self.backend
        del self.queues[name]
        entry = self._entry(queue)
        stopped = self._stop_queue(queue)
        written = backend.forget(entry)
        deleted: asyncio.Future[None] = self.loop.create_future()

        async def drop() -> None:
            try:
                await stopped
                await written
                await backend.drop(entry)
                deleted.set_result(None)
            except Exception as exc:
                deleted.set_exception(exc)

        self._background.add(task := self.loop.create_task(drop()))
        task.add_done_callback(self._background.discard)
        return deleted

    def list_queues(self, after: str = "", limit: int = 1000) -> asyncio.Future[list[str]]:
        check_range("LIMIT", limit, 1, MAX_LIST_LIMIT)
        key = after.encode()
        names = sorted((n for n in self.queues if n.encode() > key), key=str.encode)
        return done(self.loop, names[:limit])

    def queue_info(self, name: str) -> asyncio.Future[QueueInfo]:
        return done(self.loop, self._queue(name).info())

    def queue_length(self, name: str) -> asyncio.Future[int]:
        return self._queue(name).length()

    def queue_stats(self, name: str) -> asyncio.Future[QueueStats]:
        return self._queue(name).stats()

    # -- items -----------------------------------------------------------------------------------------

    def produce(
        self,
        queue: str,
        payloads: Sequence[bytes],
        *,
        delay_ms: int | None = None,
        at_ms: int | None = None,
        kind: bytes = b"",
        reference: bytes = b"",
        encoding: bytes = b"",
        dedup: bytes | None = None,
    ) -> asyncio.Future[list[str]]:
        """Add items at the tail of one partition (all or none); the ids come back in order. With `dedup`,
        a repeat of the call within the queue's dedup window stores nothing and returns the first ids."""
        q = self._queue(queue)
        check_produce(self.config, payloads, (kind, reference, encoding), dedup)
        due = due_at(self.clock.now_ms(), delay_ms, at_ms)
        if not q.options.dedup_window:
            dedup = None  # deduplication is off for this queue: DEDUP is accepted and ignored
        produced = q.produce_partition().submit(Produce(payloads, due, kind, reference, encoding, dedup))
        if dedup is not None and not q.sweep_armed():
            # Once the key is stored, the sweep must be armed for its window's end.
            produced.add_done_callback(q.arm_sweep_after)
        return produced

    def lease(
        self, queue: str, count: int = 1, block_ms: int | None = None
    ) -> asyncio.Future[list[LeasedItem]]:
        """Lease up to `count` ready items; with `block_ms`, wait that long (0: forever) for at least one."""
        q = self._queue(queue)
        check_lease(count, block_ms)
        return q.lease(count, block_ms)

    def complete(self, queue: str, ids: Sequence[str | bytes]) -> asyncio.Future[int]:
        q = self._queue(queue)
        return q.by_ids(self._ids(q, ids), Complete)

    def retry(
        self,
        queue: str,
        ids: Sequence[str | bytes],
        *,
        delay_ms: int | None = None,
        at_ms: int | None = None,
        dead: bool = False,
        reason: bytes | None = None,
    ) -> asyncio.Future[int]:
        """Hand leased items back (now, at `due`, or to the dead queue); `reason` becomes their last
        failure reason (none given: empty)."""
        q = self._queue(queue)
        check_retry(dead, delay_ms, at_ms, reason)
        due = due_at(self.clock.now_ms(), delay_ms, at_ms)
        why = reason or b""
        return q.by_ids(self._ids(q, ids), lambda seqs: Retry(seqs, due, dead, why))

    def extend(
        self, queue: str, ids: Sequence[str | bytes], *, lease_for_ms: int | None = None
    ) -> asyncio.Future[int]:
        q = self._queue(queue)
        if lease_for_ms is None:
            lease_for_ms = q.options.lease_timeout
        check_range("FOR", lease_for_ms, 0, MAX_LEASE_TIMEOUT)
        lease_for = lease_for_ms
        return q.by_ids(self._ids(q, ids), lambda seqs: Extend(seqs, lease_for))

    def remove(self, queue: str, ids: Sequence[str | bytes]) -> asyncio.Future[int]:
        q = self._queue(queue)
        return q.by_ids(self._ids(q, ids), Remove)

    def clear(self, queue: str, *, include_leased: bool = False) -> asyncio.Future[int]:
        return self._queue(queue).clear(include_leased)

    def items(
        self, queue: str, *, partition: int | None = None, after: str | None = None, limit: int = 100
    ) -> asyncio.Future[list[StoredItem]]:
        """Items in storage order: partition 0 first, each by id; `after` continues after that id."""
        q = self._queue(queue)
        check_range("LIMIT", limit, 1, MAX_LEASE_COUNT)
        if partition is not None:
            check_range("PARTITION", partition, 0, len(q.partitions) - 1)
        start_partition, after_seq = parse_after(after, len(q.partitions)) if after else (0, 0)
        indexes = [partition] if partition is not None else list(range(start_partition, len(q.partitions)))

        def reader(p: Partition) -> ReadItems:
            return ReadItems(after_seq if p.index == start_partition else 0, limit)

        return q.read(
            [q.partitions[i] for i in indexes],
            reader,
            lambda lists: [i for items in lists for i in items][:limit],
        )

    def get(self, queue: str, item_id: str | bytes) -> asyncio.Future[StoredItem | None]:
        """The item that `item_id` names now, or None (an id of an earlier delivery names nothing)."""
        q = self._queue(queue)
        groups = parse_ids(q.uid, len(q.partitions), [item_id])
        if not groups:
            return done(self.loop, None)
        ((index, (seq,)),) = groups.items()
        return q.read([q.partitions[index]], lambda _: ReadItem(seq), lambda found: found[0])

    # -- pause, resume, redrive (SPEC 7) -----------------------------------------------------------------

    def pause(self, queue: str) -> asyncio.Future[None]:
        """Hand out nothing until `resume`: leases answer empty, blocked consumers keep waiting; produces
        and lease ends go on. Survives restarts; pausing a paused queue changes nothing."""
        return self._set_paused(self._queue(queue), True)

    def resume(self, queue: str) -> asyncio.Future[None]:
        return self._set_paused(self._queue(queue), False)

    def _set_paused(self, queue: Queue, paused: bool) -> asyncio.Future[None]:
        if queue.paused == paused:
            return done(self.loop, None)
        queue.updated_at = self.clock.now_ms()
        if paused:
            queue.paused = True
        else:
            queue.resume()
        assert self.backend is not None
        return self.backend.save(self._entry(queue), created=False)

    def redrive(
        self, queue: str, *, to: str | None = None, limit: int = DEFAULT_REDRIVE_LIMIT
    ) -> asyncio.Future[int]:
        """Move up to `limit` ready items of `queue` (usually a dead queue), oldest first, to the tail of the
        queue each came from, or of `to`. Items whose source queue is gone, and without `to` items that
        were never dead-lettered, stay. Each item arrives as a fresh produce, exactly once."""
        q = self._queue(queue)
        check_range("LIMIT", limit, 1, MAX_REDRIVE_LIMIT)
        if to is not None and self._queue(to) is q:
            raise CommandError("TO may not be the queue itself")

        def target_of(record: Record) -> Partition | None:
            # Looked up when each round runs: a queue deleted meanwhile takes nothing (the item stays).
            # It goes where a produce would (SPEC 7).
            name = to if to is not None else record.source_queue.decode("utf-8", "surrogateescape")
            target = self.queues.get(name) if name else None
            return None if target is None or target is q else target.produce_partition()

        return q.redrive(limit, target_of)

    # -- for INFO ----------------------------------------------------------------------------------------

    def waiting_consumers(self) -> int:
        return sum(len(q.waiters) for q in self.queues.values())

    def summary(self) -> dict[str, int]:
        queues = self.queues.values()
        return {
            "queues": len(self.queues),
            "partitions": sum(len(q.partitions) for q in queues),
            "items_ready": sum(q.ready() for q in queues),
            "items_leased": sum(p.leased for q in queues for p in q.partitions),
            "items_scheduled": sum(p.scheduled for q in queues for p in q.partitions),
            "waiting_consumers": self.waiting_consumers(),
        }
