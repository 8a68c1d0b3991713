"""Service: the queue API as plain async methods (the product); the RESP server is one front end of it.

Each method checks its arguments, hands the work to the partition actors that own the items, and returns
an awaitable that completes once the change is as durable as the configured mode. The hand-off happens
when the method is called, not when it is awaited, so requests are applied in the order they were made
even when the caller (a pipelining connection) awaits them later (ADR 0005).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from itertools import repeat
from operator import itemgetter
from typing import Any, TypeVar, cast

from querator.clock import Clock
from querator.config import Config
from querator.declared import apply_declarations
from querator.errors import CommandError, NoQueueError, QueratorError, QueueExistsError, ShutdownError
from querator.model import (
    AT_SECONDS_RANGE,
    MAX_AT_MS,
    MAX_ATTEMPTS_LIMIT,
    MAX_ID_BYTES,
    MAX_LABEL_BYTES,
    MAX_LEASE_COUNT,
    MAX_LEASE_TIMEOUT,
    MAX_LIST_LIMIT,
    MAX_PARTITIONS,
    MAX_QUEUE_NAME_BYTES,
    MAX_WAIT_MS,
    LeasedItem,
    PartitionStats,
    QueueInfo,
    QueueOptions,
    QueueStats,
    QueueUpdate,
    StoredItem,
)
from querator.partition import PartitionActor
from querator.queue import Queue, Waiter
from querator.records import PartitionMeta
from querator.store import open_store

log = logging.getLogger("querator.service")

T = TypeVar("T")
_META_SPACE = "meta"
_QUEUE_PREFIX = b"q:"
_NEXT_UID_KEY = b"next-uid"


class Service:
    """`async with Service(config) as svc:` opens storage, loads every queue and starts its partitions."""

    def __init__(self, config: Config | None = None, *, clock: Clock | None = None) -> None:
        self.config = config or Config()
        self.clock = clock or Clock()
        self.store: Any = None
        self.queues: dict[str, Queue] = {}
        self._next_uid = 1
        self._closing = False
        self._started = False
        self.wait_for_sync = False
        self._background: set[asyncio.Task[None]] = set()
        # Set by start(); kept because asyncio.get_running_loop() makes a getpid() system call each time.
        self.loop: asyncio.AbstractEventLoop

    # -- lifecycle -------------------------------------------------------------------------------------

    async def __aenter__(self) -> Service:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.store = open_store(self.config)
        self.wait_for_sync = self.store.durable and self.config.durability == "fsync"
        self._meta = self.store.space(_META_SPACE)
        self._load_queues()
        self._started = True
        for queue in self.queues.values():
            for partition in queue.partitions:
                partition.start()
        await apply_declarations(self, self.config.queues)

    def _load_queues(self) -> None:
        raw_uid = self._meta.get(_NEXT_UID_KEY)
        if raw_uid is not None:
            self._next_uid = int(raw_uid)
        for key, value in self._meta.scan(_QUEUE_PREFIX, b"q;"):
            doc = json.loads(value)
            name = key[len(_QUEUE_PREFIX) :].decode()
            options = QueueOptions(**doc["options"])
            queue = Queue(self, name, doc["uid"], options, doc["created_at"], doc["updated_at"])
            queue.add_partitions(options.partitions, start=False)
            self.queues[name] = queue
        for queue in self.queues.values():
            queue.dead_queue = self.queues.get(queue.options.dead_queue) if queue.options.dead_queue else None
        # Key spaces left by a create or delete that crashed half way belong to no queue: drop them.
        wanted = {_META_SPACE} | {
            q.space_name(i) for q in self.queues.values() for i in range(len(q.partitions))
        }
        for name in self.store.space_names():
            if name not in wanted:
                log.info("dropping orphaned key space %s", name)
                self.store.drop_space(name)

    async def close(self) -> None:
        """Stop taking requests, let partitions finish what they hold, answer blocked consumers, close."""
        if self._closing:
            return
        self._closing = True
        for queue in self.queues.values():
            self._fail_waiters(queue, ShutdownError())
        await asyncio.gather(*(p.stop() for q in self.queues.values() for p in q.partitions))
        if self.store is not None:
            await self.store.close()

    # -- helpers ---------------------------------------------------------------------------------------

    def _queue(self, name: str) -> Queue:
        if self._closing:
            raise ShutdownError()
        queue = self.queues.get(name)
        if queue is None:
            raise NoQueueError(name)
        return queue

    def _submit(
        self, partition: PartitionActor, handler: Callable[..., Any], *args: Any
    ) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = self.loop.create_future()
        partition.submit(handler, args, future)
        return future

    def _done(self, value: T) -> asyncio.Future[T]:
        future: asyncio.Future[T] = self.loop.create_future()
        future.set_result(value)
        return future

    def _write_meta(self, puts: dict[bytes, bytes], deletes: Iterable[bytes] = ()) -> asyncio.Future[None]:
        ws = self.store.new_write_set()
        for key, value in puts.items():
            ws.put(self._meta, key, value)
        for key in deletes:
            ws.delete(self._meta, key)
        self.store.write(ws)
        future: asyncio.Future[None] = self.loop.create_future()
        if self.wait_for_sync:
            self.store.after_sync(lambda error: _settle(future, None, error))
        else:
            future.set_result(None)
        return future

    def _queue_doc(self, queue: Queue) -> bytes:
        o = queue.options
        return json.dumps(
            {
                "uid": queue.uid,
                "created_at": queue.created_at,
                "updated_at": queue.updated_at,
                "options": {
                    "partitions": o.partitions,
                    "lease_timeout": o.lease_timeout,
                    "expire_timeout": o.expire_timeout,
                    "max_attempts": o.max_attempts,
                    "dead_queue": o.dead_queue,
                    "reference": o.reference,
                },
            }
        ).encode()

    def _parse_ids(self, queue: Queue, ids: Sequence[str | bytes]) -> dict[int, list[int]]:
        """Group well-formed ids by partition; a malformed id fails the whole call; ids of an earlier
        queue of the same name are well formed but name nothing, so they are dropped (not counted)."""
        if len(ids) > self.config.max_batch:
            raise CommandError(f"too many ids; at most {self.config.max_batch} per call")
        same = _ids_of_one_partition(queue, ids)
        return same if same is not None else _ids_by_partition(queue, ids)

    def _per_partition(
        self, queue: Queue, groups: dict[int, list[int]], handler: Callable[..., int], *args: Any
    ) -> asyncio.Future[int]:
        futures = [self._submit(queue.partitions[p], handler, seqs, *args) for p, seqs in groups.items()]
        if not futures:
            return self._done(0)
        if len(futures) == 1:
            return futures[0]
        return _combine(futures, sum)

    def _due(self, delay_ms: int | None, at_ms: int | None) -> int:
        if delay_ms is not None and at_ms is not None:
            raise CommandError("DELAY and AT are mutually exclusive")
        if delay_ms is not None:
            if delay_ms < 0:
                raise CommandError("DELAY must be at least 0")
            if delay_ms > MAX_WAIT_MS:
                raise CommandError(f"DELAY must be at most {MAX_WAIT_MS}")
            return self.clock.now_ms() + delay_ms if delay_ms else 0
        if at_ms is not None:
            if at_ms < 0:
                raise CommandError("AT must be at least 0")
            if at_ms > MAX_AT_MS:
                raise CommandError(f"AT must be at most {MAX_AT_MS}")
            if at_ms in AT_SECONDS_RANGE:
                raise CommandError(
                    f"AT must be a Unix time in milliseconds; {at_ms} looks like seconds "
                    f"(did you mean {at_ms * 1000}?)"
                )
            return at_ms
        return 0

    # -- queue administration --------------------------------------------------------------------------

    def create_queue(self, name: str, options: QueueOptions | None = None) -> Awaitable[None]:
        if self._closing:
            raise ShutdownError()
        options = options or QueueOptions()
        validate_queue_name(name)
        if name in self.queues:
            raise QueueExistsError(name)
        self._validate_options(name, options)
        now = self.clock.now_ms()
        uid = self._next_uid
        self._next_uid += 1
        queue = Queue(self, name, uid, options, now, now)
        # Key spaces first: if we crash before the metadata is durable they are orphans, dropped at start.
        queue.add_partitions(options.partitions, start=True)
        queue.dead_queue = self.queues.get(options.dead_queue) if options.dead_queue else None
        self.queues[name] = queue
        return self._write_meta(
            {
                _QUEUE_PREFIX + name.encode(): self._queue_doc(queue),
                _NEXT_UID_KEY: str(self._next_uid).encode(),
            }
        )

    def update_queue(self, name: str, changes: QueueUpdate) -> Awaitable[None]:
        queue = self._queue(name)
        old = queue.options
        new = QueueOptions(
            partitions=old.partitions if changes.partitions is None else changes.partitions,
            lease_timeout=old.lease_timeout if changes.lease_timeout is None else changes.lease_timeout,
            expire_timeout=old.expire_timeout if changes.expire_timeout is None else changes.expire_timeout,
            max_attempts=old.max_attempts if changes.max_attempts is None else changes.max_attempts,
            dead_queue=old.dead_queue if changes.dead_queue is None else changes.dead_queue,
            reference=old.reference if changes.reference is None else changes.reference,
        )
        if new.partitions < old.partitions:
            raise CommandError(f"PARTITIONS may only grow; the queue has {old.partitions}")
        self._validate_options(name, new)
        queue.options = new
        queue.updated_at = self.clock.now_ms()
        queue.add_partitions(new.partitions, start=True)
        queue.dead_queue = self.queues.get(new.dead_queue) if new.dead_queue else None
        written = self._write_meta({_QUEUE_PREFIX + name.encode(): self._queue_doc(queue)})
        if bool(old.expire_timeout) == bool(new.expire_timeout):
            return written
        reindexed = [
            self._submit(p, PartitionActor.op_reindex_expiry, bool(new.expire_timeout))
            for p in queue.partitions
        ]
        return _combine([written, *reindexed], lambda _: None)

    def delete_queue(self, name: str) -> Awaitable[None]:
        queue = self._queue(name)
        for other in self.queues.values():
            if other is not queue and other.options.dead_queue == name:
                raise CommandError(
                    f"queue '{name}' is the dead queue of '{other.name}'; change that queue first"
                )
        del self.queues[name]
        self._fail_waiters(queue, NoQueueError(name))
        written = self._write_meta({}, [_QUEUE_PREFIX + name.encode()])
        loop = self.loop
        done: asyncio.Future[None] = loop.create_future()

        async def drop() -> None:
            try:
                await asyncio.gather(*(p.stop(NoQueueError(name)) for p in queue.partitions))
                await written
                for index in range(len(queue.partitions)):
                    self.store.drop_space(queue.space_name(index))
                done.set_result(None)
            except Exception as exc:
                done.set_exception(exc)

        self._background.add(task := loop.create_task(drop()))
        task.add_done_callback(self._background.discard)
        return done

    def list_queues(self, after: str = "", limit: int = 1000) -> Awaitable[list[str]]:
        _check("LIMIT", limit, 1, MAX_LIST_LIMIT)
        key = after.encode()
        names = sorted((n for n in self.queues if n.encode() > key), key=str.encode)
        return self._done(names[:limit])

    def queue_info(self, name: str) -> Awaitable[QueueInfo]:
        return self._done(self._queue(name).info())

    def _read(
        self,
        partitions: Sequence[PartitionActor],
        reader: Callable[[PartitionActor], Any],
        combine: Callable[[list[Any]], T],
    ) -> asyncio.Future[T]:
        """Read each partition after the requests already handed to it, so a read sees every earlier write
        of the same caller (a pipelined QPRODUCE then QLEN counts the produced items). An idle partition is
        read at once; a busy one inside its next step, at the read's place in its inbox."""
        if not any(p.has_pending() for p in partitions):
            return self._done(combine([reader(p) for p in partitions]))
        parts = [
            self._submit(p, PartitionActor.op_read, reader) if p.has_pending() else self._done(reader(p))
            for p in partitions
        ]
        return _combine(parts, combine)

    def queue_length(self, name: str) -> Awaitable[int]:
        return self._read(self._queue(name).partitions, lambda p: p.meta.ready, sum)

    def queue_stats(self, name: str) -> Awaitable[QueueStats]:
        queue = self._queue(name)
        return self._read(queue.partitions, _partition_snapshot, lambda snaps: self._stats(queue, snaps))

    def _stats(
        self, queue: Queue, snapshots: list[tuple[PartitionStats, PartitionMeta, int | None]]
    ) -> QueueStats:
        parts = [s[0] for s in snapshots]
        metas = [s[1] for s in snapshots]
        now = self.clock.now_ms()
        oldest = [s[2] for s in snapshots if s[2] is not None]
        return QueueStats(
            ready=sum(s.ready for s in parts),
            leased=sum(s.leased for s in parts),
            scheduled=sum(s.scheduled for s in parts),
            produced=sum(m.produced for m in metas),
            completed=sum(m.completed for m in metas),
            retried=sum(m.retried for m in metas),
            lease_expired=sum(m.lease_expired for m in metas),
            dead_lettered=sum(m.dead_lettered for m in metas),
            oldest_ready_age=max(0, now - min(oldest)) if oldest else 0,
            waiting_consumers=sum(1 for w in queue.waiters if not w.future.done()),
            partitions=parts,
        )

    def _validate_options(self, name: str, o: QueueOptions) -> None:
        _check("PARTITIONS", o.partitions, 1, MAX_PARTITIONS)
        _check("LEASE-TIMEOUT", o.lease_timeout, 1, MAX_LEASE_TIMEOUT)
        if o.expire_timeout < 0:
            raise CommandError("EXPIRE-TIMEOUT must be at least 0")
        if o.expire_timeout and o.expire_timeout < o.lease_timeout:
            raise CommandError(f"EXPIRE-TIMEOUT must be 0 or at least the lease timeout ({o.lease_timeout})")
        _check("MAX-ATTEMPTS", o.max_attempts, 0, MAX_ATTEMPTS_LIMIT)
        if o.dead_queue:
            if o.dead_queue == name:
                raise CommandError("DEAD-QUEUE may not be the queue itself")
            dead = self.queues.get(o.dead_queue)
            if dead is None:
                raise NoQueueError(o.dead_queue)
            if dead.options.dead_queue:
                raise CommandError(f"DEAD-QUEUE '{o.dead_queue}' has a dead queue of its own")
            for other in self.queues.values():
                if other.options.dead_queue == name and other.name != name:
                    raise CommandError(
                        f"queue '{name}' is the dead queue of '{other.name}' and may not have one"
                    )

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
    ) -> Awaitable[list[str]]:
        """Add items at the tail of one partition (all or none); the ids come back in order."""
        q = self._queue(queue)
        config = self.config
        if not payloads:
            raise CommandError("ITEMS needs at least one payload")
        if len(payloads) > config.max_batch:
            raise CommandError(f"too many items; at most {config.max_batch} per QPRODUCE")
        limit = config.max_item_bytes
        if max(map(len, payloads)) > limit:
            raise CommandError(f"item payload too large; max-item-bytes is {limit}")
        if kind or reference or encoding:
            for option, label in (("KIND", kind), ("REFERENCE", reference), ("ENCODING", encoding)):
                if len(label) > MAX_LABEL_BYTES:
                    raise CommandError(f"{option} must be at most {MAX_LABEL_BYTES} bytes")
        due = self._due(delay_ms, at_ms)
        partition = q.produce_partition()
        return self._submit(partition, PartitionActor.op_produce, payloads, due, kind, reference, encoding)

    def lease(self, queue: str, count: int = 1, block_ms: int | None = None) -> Awaitable[list[LeasedItem]]:
        """Lease up to `count` ready items; with `block_ms`, wait that long (0: forever) for at least one."""
        q = self._queue(queue)
        _check("COUNT", count, 1, MAX_LEASE_COUNT)
        if block_ms is not None and block_ms < 0:
            raise CommandError("BLOCK must be at least 0")
        if block_ms is not None and block_ms > MAX_WAIT_MS:
            raise CommandError(f"BLOCK must be at most {MAX_WAIT_MS}")
        plan = q.lease_plan(count)
        if not plan:
            if block_ms is None:
                return self._done([])
            return self._wait(q, count, block_ms)
        futures = [self._submit(p, PartitionActor.op_lease, n) for p, n in plan]
        leased = futures[0] if len(futures) == 1 else _combine(futures, _concat)
        if block_ms is None:
            return leased
        return self._or_wait(leased, q, count, block_ms)

    def _wait(self, queue: Queue, count: int, block_ms: int) -> asyncio.Future[list[LeasedItem]]:
        loop = self.loop
        future: asyncio.Future[list[LeasedItem]] = loop.create_future()
        waiter = Waiter(count, future)
        queue.waiters.append(waiter)
        if block_ms:
            waiter.timer = loop.call_later(block_ms / 1000, _time_out, waiter)
        future.add_done_callback(lambda f: self._waiter_done(queue, waiter, f))
        for partition in queue.partitions:
            if partition.meta.ready:
                self._submit(partition, PartitionActor.op_nothing)
        return future

    def _or_wait(
        self, leased: asyncio.Future[list[LeasedItem]], queue: Queue, count: int, block_ms: int
    ) -> asyncio.Future[list[LeasedItem]]:
        """A blocking lease that found items already counted by others: wait for the next ones."""
        loop = self.loop
        outer: asyncio.Future[list[LeasedItem]] = loop.create_future()
        started = loop.time()

        def chained(inner: asyncio.Future[list[LeasedItem]]) -> None:
            if outer.done():
                return
            if inner.cancelled() or inner.exception() is not None or inner.result():
                _copy(inner, outer)
                return
            left = block_ms - int((loop.time() - started) * 1000) if block_ms else 0
            if block_ms and left <= 0:
                outer.set_result([])
                return
            _forward(self._wait(queue, count, max(left, 1) if block_ms else 0), outer)

        leased.add_done_callback(chained)
        outer.add_done_callback(lambda f: leased.cancel() if f.cancelled() else None)
        return outer

    def _waiter_done(self, queue: Queue, waiter: Waiter, future: asyncio.Future[list[LeasedItem]]) -> None:
        # Items dealt to a waiter that was cancelled before its reply are given back by the partition that
        # dealt them (PartitionActor._resolve); here the waiter only leaves the line.
        waiter.served()
        with contextlib.suppress(ValueError):
            queue.waiters.remove(waiter)

    def _fail_waiters(self, queue: Queue, error: QueratorError) -> None:
        for waiter in list(queue.waiters):
            if not waiter.future.done():
                waiter.future.set_exception(error)
        queue.waiters.clear()

    def complete(self, queue: str, ids: Sequence[str | bytes]) -> Awaitable[int]:
        q = self._queue(queue)
        return self._per_partition(q, self._parse_ids(q, ids), PartitionActor.op_complete)

    def retry(
        self,
        queue: str,
        ids: Sequence[str | bytes],
        *,
        delay_ms: int | None = None,
        at_ms: int | None = None,
        dead: bool = False,
    ) -> Awaitable[int]:
        q = self._queue(queue)
        if dead and (delay_ms is not None or at_ms is not None):
            raise CommandError("DEAD, DELAY and AT are mutually exclusive")
        due = self._due(delay_ms, at_ms)
        return self._per_partition(q, self._parse_ids(q, ids), PartitionActor.op_retry, due, dead)

    def extend(
        self, queue: str, ids: Sequence[str | bytes], *, lease_for_ms: int | None = None
    ) -> Awaitable[int]:
        q = self._queue(queue)
        if lease_for_ms is None:
            lease_for_ms = q.options.lease_timeout
        _check("FOR", lease_for_ms, 0, MAX_LEASE_TIMEOUT)
        return self._per_partition(q, self._parse_ids(q, ids), PartitionActor.op_extend, lease_for_ms)

    def remove(self, queue: str, ids: Sequence[str | bytes]) -> Awaitable[int]:
        q = self._queue(queue)
        return self._per_partition(q, self._parse_ids(q, ids), PartitionActor.op_remove)

    def clear(self, queue: str, *, include_leased: bool = False) -> Awaitable[int]:
        q = self._queue(queue)
        futures = [self._submit(p, PartitionActor.op_clear, include_leased) for p in q.partitions]
        return futures[0] if len(futures) == 1 else _combine(futures, sum)

    def items(
        self, queue: str, *, partition: int | None = None, after: str | None = None, limit: int = 100
    ) -> Awaitable[list[StoredItem]]:
        """Items in storage order: partition 0 first, each by id; `after` continues after that id."""
        q = self._queue(queue)
        _check("LIMIT", limit, 1, MAX_LEASE_COUNT)
        if partition is not None:
            _check("PARTITION", partition, 0, len(q.partitions) - 1)
        start_partition, after_seq = 0, 0
        if after:
            parsed = _split_id(after)
            if parsed is None or parsed[1] >= len(q.partitions):
                raise CommandError(f"invalid id '{after}'")
            _, start_partition, after_seq = parsed
        indexes = [partition] if partition is not None else list(range(start_partition, len(q.partitions)))
        chosen = [q.partitions[i] for i in indexes]

        def reader(p: PartitionActor) -> list[StoredItem]:
            return p.items(after_seq if p.index == start_partition else 0, limit)

        return self._read(chosen, reader, lambda lists: [i for items in lists for i in items][:limit])

    # -- for INFO ----------------------------------------------------------------------------------------

    def waiting_consumers(self) -> int:
        return sum(len(q.waiters) for q in self.queues.values())

    def summary(self) -> dict[str, int]:
        queues = self.queues.values()
        return {
            "queues": len(self.queues),
            "partitions": sum(len(q.partitions) for q in queues),
            "items_ready": sum(q.ready() for q in queues),
            "items_leased": sum(len(p.leased) for q in queues for p in q.partitions),
            "items_scheduled": sum(p.meta.scheduled for q in queues for p in q.partitions),
            "waiting_consumers": self.waiting_consumers(),
        }


# -- module helpers -------------------------------------------------------------------------------------


def validate_queue_name(name: str) -> None:
    raw = name.encode("utf-8", "surrogateescape")
    if not raw:
        raise CommandError("invalid queue name; it may not be empty")
    if len(raw) > MAX_QUEUE_NAME_BYTES:
        raise CommandError(f"invalid queue name; at most {MAX_QUEUE_NAME_BYTES} bytes")
    if any(b <= 32 or b >= 127 for b in raw):
        raise CommandError("invalid queue name; only visible ASCII characters, no whitespace")


def _ids_by_partition(queue: Queue, ids: Sequence[str | bytes]) -> dict[int, list[int]]:
    """Well-formed ids grouped by partition, in order and without repeats; the first malformed one fails."""
    groups: dict[int, dict[int, None]] = {}  # dicts keep order and drop repeated ids
    partitions = len(queue.partitions)
    uid = queue.uid
    for raw in ids:
        parsed = _split_id(raw)
        if parsed is None or parsed[1] >= partitions:
            text = raw.decode("ascii", "replace") if isinstance(raw, bytes) else raw
            raise CommandError(f"invalid id '{text}'")
        if parsed[0] != uid:
            continue  # an id of an earlier queue of this name: well formed, names nothing
        group = groups.get(parsed[1])
        if group is None:
            group = groups[parsed[1]] = {}
        group[parsed[2]] = None
    return {partition: list(seqs) for partition, seqs in groups.items()}


def _ids_of_one_partition(queue: Queue, ids: Sequence[str | bytes]) -> dict[int, list[int]] | None:
    """The common case of `_parse_ids`, checked without Python code per id: RESP ids (bytes) of one
    partition of this queue, as one lease returns them. None when anything differs: the general parser
    then decides, and names the offending id."""
    if not ids or set(map(type, ids)) != {bytes}:
        return None
    raw = cast("Sequence[bytes]", ids)
    first = raw[0]
    parsed = _split_id(first)
    if parsed is None or parsed[0] != queue.uid or parsed[1] >= len(queue.partitions):
        return None
    head = first[: first.rindex(b"-") + 1]
    cut = len(head)
    if not (all(map(bytes.startswith, raw, repeat(head))) and max(map(len, raw)) <= MAX_ID_BYTES):
        return None
    tails = list(map(itemgetter(slice(cut, None)), raw))
    if not all(map(bytes.isdigit, tails)):
        return None
    return {parsed[1]: list(dict.fromkeys(map(int, tails)))}


def _split_id(raw: str | bytes) -> tuple[int, int, int] | None:
    """(queue uid, partition, seq) of an id `uid-partition-seq`, or None if it is not of that form."""
    data = raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else raw
    if len(data) > MAX_ID_BYTES:
        return None
    parts = data.split(b"-")
    if len(parts) != 3:
        return None
    a, b, c = parts
    # bytes.isdigit() is ASCII-only and false for b"", so no sign, space or underscore reaches int().
    if not (a.isdigit() and b.isdigit() and c.isdigit()):
        return None
    return int(a), int(b), int(c)


def _check(option: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise CommandError(f"{option} must be between {low} and {high}")


def _partition_snapshot(p: PartitionActor) -> tuple[PartitionStats, PartitionMeta, int | None]:
    return p.stats(), dataclasses.replace(p.meta), p.oldest_ready_enqueue_at()


def _settle(future: asyncio.Future[Any], value: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        from querator.errors import TryAgainError

        future.set_exception(TryAgainError(f"storage failed; {error}"))
    else:
        future.set_result(value)


def _copy(source: asyncio.Future[Any], target: asyncio.Future[Any]) -> None:
    if target.done():
        return
    if source.cancelled():
        target.cancel()
    elif (exc := source.exception()) is not None:
        target.set_exception(exc)
    else:
        target.set_result(source.result())


def _forward(source: asyncio.Future[Any], target: asyncio.Future[Any]) -> None:
    source.add_done_callback(lambda f: _copy(f, target))
    # A consumer that goes away cancels `target`; the waiter behind it must stop waiting too.
    target.add_done_callback(lambda f: source.cancel() if f.cancelled() else None)


def _combine(futures: list[asyncio.Future[Any]], reduce: Callable[[list[Any]], Any]) -> asyncio.Future[Any]:
    """One future for several partition requests: the first error, or `reduce` of all results."""
    combined: asyncio.Future[Any] = futures[0].get_loop().create_future()
    remaining = len(futures)

    def one_done(_: asyncio.Future[Any]) -> None:
        nonlocal remaining
        remaining -= 1
        if remaining or combined.done():
            return
        for future in futures:
            if future.cancelled():
                combined.cancel()
                return
            if (exc := future.exception()) is not None:
                combined.set_exception(exc)
                return
        combined.set_result(reduce([f.result() for f in futures]))

    for future in futures:
        future.add_done_callback(one_done)
    # A caller that goes away cancels the combined future; the partitions must learn it too (a lease they
    # answer for nobody is given back).
    combined.add_done_callback(lambda f: [c.cancel() for c in futures] if f.cancelled() else None)
    return combined


def _concat(results: list[list[LeasedItem]]) -> list[LeasedItem]:
    return [item for items in results for item in items]


def _time_out(waiter: Waiter) -> None:
    waiter.timer = None
    if not waiter.future.done() and not waiter.items:
        waiter.future.set_result([])
