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
from querator.catalog import Catalog, QueueEntry, check_range, validate_options, validate_queue_name
from querator.clock import Clock
from querator.config import Config
from querator.declared import apply_declarations
from querator.engine import (
    Complete,
    DeadLetter,
    EngineContext,
    Extend,
    PartitionReads,
    Produce,
    Remove,
    Retry,
)
from querator.errors import CommandError, NoQueueError, QueueExistsError, ShutdownError
from querator.futures import combine, done, ignore
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
from querator.store import Store, open_store

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
        self._flush_sync: asyncio.TimerHandle | None = None
        # Set by start(); the loop is kept because asyncio.get_running_loop() makes a getpid() system call.
        self.store: Store
        self.loop: asyncio.AbstractEventLoop
        self._engine: EngineContext
        self._catalog: Catalog

    # -- lifecycle -------------------------------------------------------------------------------------

    async def __aenter__(self) -> Service:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.store = open_store(self.config)
        wait_for_sync = self.store.durable and self.config.durability == "fsync"
        self._engine = EngineContext(
            self.store, self.clock, self.loop, self.config.partition_inbox, wait_for_sync, self.on_commit
        )
        self._catalog = Catalog(self.store, self.loop)
        if self.store.durable and self.config.durability == "flush" and self.config.flush_sync_ms:
            self._flush_sync = self.loop.call_later(
                self.config.flush_sync_ms / 1000, self._sync_in_background
            )
        self._load_queues()
        for queue in self.queues.values():
            for partition in queue.partitions:
                partition.start()
            queue.arm_sweep()
        await apply_declarations(self, self.config.queues)

    def _load_queues(self) -> None:
        for entry in self._catalog.load():
            queue = Queue(
                self._engine,
                entry.name,
                entry.uid,
                entry.options,
                entry.created_at,
                entry.updated_at,
                entry.paused,
            )
            queue.add_partitions(entry.options.partitions, start=False)
            self.queues[entry.name] = queue
        for queue in self.queues.values():
            queue.dead_queue = self.queues.get(queue.options.dead_queue) if queue.options.dead_queue else None
        self._catalog.drop_orphans(name for q in self.queues.values() for name in q.space_names())

    async def close(self) -> None:
        """Stop taking requests, let partitions finish what they hold, answer blocked consumers, close."""
        if self._closing:
            return
        self._closing = True
        if self._flush_sync is not None:
            self._flush_sync.cancel()
        for queue in self.queues.values():
            queue.stop_sweep()
            queue.waiters.fail_all(ShutdownError())
        await asyncio.gather(*(p.stop() for q in self.queues.values() for p in q.partitions))
        if hasattr(self, "store"):
            await self.store.close()

    def _sync_in_background(self) -> None:
        """Durability `flush`: replies do not wait for the disk, but a sync at least every `flush-sync-ms`
        bounds what a power cut can take (as Redis's `appendfsync everysec`)."""
        self.store.after_sync(self._synced)

    def _synced(self, error: BaseException | None) -> None:
        if error is not None:
            log.error("background sync failed: %s", error)
        if not self._closing:
            self._flush_sync = self.loop.call_later(
                self.config.flush_sync_ms / 1000, self._sync_in_background
            )

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
        now = self.clock.now_ms()
        queue = Queue(self._engine, name, self._catalog.new_uid(), options, now, now)
        # Key spaces first: if we crash before the metadata is durable they are orphans, dropped at start.
        queue.add_partitions(options.partitions, start=True)
        queue.dead_queue = self.queues.get(options.dead_queue) if options.dead_queue else None
        # Registered before its metadata is durable, so a pipelined QPRODUCE finds it (ADR 5).
        self.queues[name] = queue
        return self._catalog.save(self._entry(queue))

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
        written = self._catalog.save(self._entry(queue))
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
        del self.queues[name]
        queue.stop_sweep()
        queue.waiters.fail_all(NoQueueError(name))
        written = self._catalog.forget(name)
        deleted: asyncio.Future[None] = self.loop.create_future()

        async def drop() -> None:
            try:
                await asyncio.gather(*(p.stop(NoQueueError(name)) for p in queue.partitions))
                await written
                for space in queue.space_names():
                    self.store.drop_space(space)
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

        def reader(p: PartitionReads) -> list[StoredItem]:
            return p.items(after_seq if p.index == start_partition else 0, limit)

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
        return q.read([q.partitions[index]], lambda p: p.get(seq), lambda found: found[0])

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
        return self._catalog.save(self._entry(queue))

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

        def target_of(record: Record) -> DeadLetter | None:
            # Looked up when each round runs: a queue deleted meanwhile takes nothing (the item stays).
            name = to if to is not None else record.source_queue.decode("utf-8", "surrogateescape")
            target = self.queues.get(name) if name else None
            return None if target is None or target is q else target.accept_redriven

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
