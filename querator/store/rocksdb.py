"""RocksDB backend (rocksdict): one database per data directory, one key range per key space.

All writes share one WAL, so a single `flush_wal(True)` makes every partition's writes durable:
that is the group commit. `write()` runs on the event loop with sync=False (it holds the GIL but does not
wait for the disk); the fsync runs in a worker thread, where rocksdict releases the GIL, while the next
batches gather (ADR 0004). Every partition's range lives in one column family, so a thousand queues share
one memtable budget and one block cache instead of getting their own.
"""

from __future__ import annotations

import asyncio
import logging
import os
import struct
import sys
import threading
from bisect import bisect_left
from collections.abc import Callable, Iterator
from itertools import islice
from operator import itemgetter
from typing import Any, cast

import rocksdict

from querator.speed import consume
from querator.store.base import KeySpace, WriteSet

log = logging.getLogger("querator.store.rocksdb")

_SyncCallback = Callable[[BaseException | None], None]
_SWITCH_INTERVAL_S = float(os.environ.get("QUERATOR_SWITCH_INTERVAL", "0.0002"))


_PREFIX = struct.Struct(">Q")
# Prefix 0 holds the registry of key spaces: b"n" + name -> prefix, b"c" -> the next prefix number.
_REGISTRY = _PREFIX.pack(0)
_NEXT_PREFIX_KEY = _REGISTRY + b"c"
_NAME_KEY = _REGISTRY + b"n"


class RocksKeySpace:
    """A key space is the range of keys under one 8-byte prefix of the database's single column family."""

    __slots__ = ("db", "end", "name", "prefix")

    def __init__(self, name: str, db: Any, prefix: bytes) -> None:
        self.name = name
        self.db = db
        self.prefix = prefix
        self.end = _PREFIX.pack(_PREFIX.unpack(prefix)[0] + 1)

    def get(self, key: bytes) -> bytes | None:
        value: bytes | None = self.db.get(self.prefix + key)
        return value

    def scan(self, start: bytes, end: bytes) -> Iterator[tuple[bytes, bytes]]:
        prefix = self.prefix
        cut = len(prefix)
        stop = prefix + end
        it = self.db.iter()
        it.seek(prefix + start)
        while it.valid():
            key = it.key()
            if key >= stop:
                return
            yield key[cut:], it.value()
            it.next()

    def head(self, start: bytes, end: bytes, limit: int) -> tuple[list[bytes], list[bytes]]:
        prefix = self.prefix
        # rocksdict's items() iterates in Rust: about half the cost per key of driving an iterator by hand.
        pairs = list(islice(self.db.items(from_key=prefix + start), limit))
        if not pairs:
            return [], []
        keys, values = zip(*pairs, strict=True)
        inside = bisect_left(keys, prefix + end)
        return list(map(itemgetter(slice(len(prefix), None)), keys[:inside])), list(values[:inside])

    def last_key(self, start: bytes, end: bytes) -> bytes | None:
        prefix = self.prefix
        it = self.db.iter()
        it.seek_for_prev(prefix + end)
        lowest = prefix + start
        stop = prefix + end
        while it.valid():
            key: bytes = it.key()
            if key < lowest:
                return None
            if key < stop:
                return key[len(prefix) :]
            it.prev()
        return None


class RocksWriteSet:
    """Key spaces come typed as the Protocol; they are this store's own (`_prefix`), never another's."""

    __slots__ = ("batch", "count")

    def __init__(self) -> None:
        self.batch = rocksdict.WriteBatch(raw_mode=True)
        self.count = 0

    def put(self, space: KeySpace, key: bytes, value: bytes) -> None:
        # `_prefix` inlined: put and delete run once per item on the unbatched paths.
        self.batch.put(cast(RocksKeySpace, space).prefix + key, value)
        self.count += 1

    def delete(self, space: KeySpace, key: bytes) -> None:
        self.batch.delete(cast(RocksKeySpace, space).prefix + key)
        self.count += 1

    def put_many(self, space: KeySpace, keys: list[bytes], values: list[bytes]) -> None:
        if len(keys) != len(values):
            raise ValueError("put_many needs as many values as keys")
        consume(map(self.batch.put, map(_prefix(space).__add__, keys), values))
        self.count += len(keys)

    def delete_many(self, space: KeySpace, keys: list[bytes]) -> None:
        consume(map(self.batch.delete, map(_prefix(space).__add__, keys)))
        self.count += len(keys)

    def __len__(self) -> int:
        return self.count


class StoreLockedError(OSError):
    """Another process (another Querator) holds the database's LOCK file."""

    def __init__(self, path: str) -> None:
        super().__init__(f"data directory in use by another Querator; {path} is locked by another process")
        self.path = path


class RocksStore:
    """One RocksDB database; key spaces are prefixes of one column family (ADR 0007).

    A column family per partition was the first design, but RocksDB rewrites its OPTIONS file, which lists
    every family, each time one is created: 800 families took 110 s to create here, growing quadratically.
    Prefixed ranges keep each partition an ordered key range with the same seek costs, share one memtable
    budget by construction, and make dropping a queue one range delete.
    """

    durable = True

    def __init__(
        self,
        path: str,
        *,
        write_buffer_bytes: int = 64 << 20,
        block_cache_bytes: int = 32 << 20,
    ) -> None:
        _make_durable_dir(path)
        self._path = path
        options = rocksdict.Options(raw_mode=True)
        options.create_if_missing(True)
        options.set_write_buffer_manager(rocksdict.WriteBufferManager(write_buffer_bytes, False))
        options.set_write_buffer_size(min(write_buffer_bytes // 2, 32 << 20))
        options.set_max_write_buffer_number(3)
        options.set_keep_log_file_num(3)
        options.set_max_background_jobs(2)
        options.set_max_open_files(512)
        # Queues are FIFO: keys at the head are deleted soon after they are written. Compact files whose
        # deletions pile up, so scans past the head stay short even before regular compaction runs.
        options.add_compact_on_deletion_collector_factory(10_000, 5_000, 0.5)
        table = rocksdict.BlockBasedOptions()
        table.set_block_cache(rocksdict.Cache(block_cache_bytes))
        table.set_bloom_filter(10, False)
        options.set_block_based_table_factory(table)
        options.set_compression_type(rocksdict.DBCompressionType.lz4())
        try:
            self._db = rocksdict.Rdict(path, options)
        except Exception as exc:
            # rocksdict raises a bare Exception; a held lock reads "While lock file: .../LOCK".
            if "LOCK" in str(exc):
                raise StoreLockedError(path) from exc
            raise OSError(f"cannot open the data directory; {path}: {exc}") from exc
        self._spaces: dict[str, RocksKeySpace] = {}
        raw_next = self._db.get(_NEXT_PREFIX_KEY)
        self._next_prefix = int(raw_next) if raw_next is not None else 1
        it = self._db.iter()
        it.seek(_NAME_KEY)
        while it.valid() and it.key().startswith(_NAME_KEY):
            name = it.key()[len(_NAME_KEY) :].decode()
            self._spaces[name] = RocksKeySpace(name, self._db, it.value())
            it.next()
        self._write_options = rocksdict.WriteOptions()
        self._write_options.sync = False
        self._sync = _GroupSync(self._flush_wal)
        self._closed = False

    def space(self, name: str) -> RocksKeySpace:
        space = self._spaces.get(name)
        if space is None:
            prefix = _PREFIX.pack(self._next_prefix)
            self._next_prefix += 1
            batch = rocksdict.WriteBatch(raw_mode=True)
            batch.put(_NAME_KEY + name.encode(), prefix)
            batch.put(_NEXT_PREFIX_KEY, str(self._next_prefix).encode())
            # Not synced here: the space is empty until a later write, whose own sync covers this one.
            self._db.write(batch, self._write_options)
            space = self._spaces[name] = RocksKeySpace(name, self._db, prefix)
        return space

    def space_names(self) -> list[str]:
        return list(self._spaces)

    def drop_space(self, name: str) -> None:
        space = self._spaces.pop(name, None)
        if space is None:
            return
        batch = rocksdict.WriteBatch(raw_mode=True)
        batch.delete_range(space.prefix, space.end)
        batch.delete(_NAME_KEY + name.encode())
        self._db.write(batch, self._write_options)

    def new_write_set(self) -> RocksWriteSet:
        return RocksWriteSet()

    def write(self, batch: WriteSet) -> None:
        own = cast(RocksWriteSet, batch)
        if own.count:
            self._db.write(own.batch, self._write_options)

    def after_sync(self, callback: _SyncCallback) -> None:
        self._sync.request(callback)

    def _flush_wal(self) -> None:
        self._db.flush_wal(True)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._sync.drain()
        self._db.flush_wal(True)
        self._spaces.clear()
        self._db.close()


def _prefix(space: KeySpace) -> bytes:
    """The prefix of a key space this store made (a write set never mixes stores)."""
    return cast(RocksKeySpace, space).prefix


class _GroupSync:
    """Runs one fsync at a time in a dedicated thread; callers that arrive while one runs share the next.

    The thread takes the waiting callbacks at the moment it starts an fsync, not when it was asked to:
    every write made before that moment is covered, including those made while the thread was waking up
    (a wake-up often takes as long as the fsync itself here), which would otherwise wait one more sync. A
    callback registered once an fsync is running may cover writes made after it started, so it waits for
    the following one: that is what makes the reply-after-durable promise hold. When callbacks are waiting
    at the end of an fsync the thread starts the next one at once, without a round trip through the loop.
    It reports back with `call_soon_threadsafe`, which costs less per sync than an executor's futures (ADR
    0004), and is woken through a bare lock used as a binary semaphore: releasing it is one C call (one
    futex wake when the thread sleeps), where setting an Event runs a Condition's Python code on the loop.
    """

    def __init__(self, fsync: Callable[[], None]) -> None:
        self._fsync = fsync
        # Appended on the loop, swapped out by the thread (both under the GIL, so neither sees half of it).
        self._next: list[_SyncCallback] = []
        self._outstanding = 0  # callbacks requested and not yet called; only the loop changes it
        self._idle_waiters: list[asyncio.Future[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        # Locked whenever `_signalled` is False: the loop releases it only when it sets `_signalled`, and
        # the thread clears `_signalled` only right after acquiring it, so it is never released twice.
        self._wake = threading.Lock()
        self._wake.acquire()
        self._signalled = False
        self._stop = False
        self._thread: threading.Thread | None = None

    def request(self, callback: _SyncCallback) -> None:
        self._next.append(callback)
        self._outstanding += 1
        if self._thread is None:
            self._start_thread()
        self._signal()

    def _signal(self) -> None:
        # After the append: the thread clears the flag before it takes the list, so either it takes this
        # callback or it finds the flag set again. Already set: a sync is due anyway.
        if not self._signalled:
            self._signalled = True
            self._wake.release()

    def _start_thread(self) -> None:
        self._loop = asyncio.get_running_loop()
        # The fsync itself runs without the GIL, but waking up for it and reporting back need the GIL, and
        # a busy event loop gives it up only every switch interval (5 ms by default): that wait, not the
        # disk, dominated reply latency (handoff p99 13 ms). See ADR 4.
        if sys.getswitchinterval() > _SWITCH_INTERVAL_S:
            sys.setswitchinterval(_SWITCH_INTERVAL_S)
        self._thread = threading.Thread(target=self._sync_loop, name="querator-fsync", daemon=True)
        self._thread.start()

    def _sync_loop(self) -> None:
        loop = self._loop
        assert loop is not None
        while True:
            self._wake.acquire()
            self._signalled = False
            if self._stop:
                return
            batch = self._next
            if not batch:
                continue
            self._next = []
            error: BaseException | None = None
            try:
                self._fsync()
            except BaseException as exc:  # reported to every waiting request, never lost
                error = exc
            try:
                loop.call_soon_threadsafe(self._finished, batch, error)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                return

    def _finished(self, callbacks: list[_SyncCallback], error: BaseException | None) -> None:
        self._outstanding -= len(callbacks)
        if error is not None:
            log.error("fsync failed: %s", error)
        for callback in callbacks:
            try:
                callback(error)
            except Exception:
                log.exception("sync callback failed")
        if self._outstanding:
            return
        for waiter in self._idle_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._idle_waiters.clear()

    async def drain(self) -> None:
        """Wait until no sync is running or queued (every callback has been called), then end the thread."""
        if self._outstanding:
            idle: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._idle_waiters.append(idle)
            await idle
        self._stop = True
        self._signal()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None


def _make_durable_dir(path: str) -> None:
    """Create the data directory, and make its creation durable: without an fsync of the parent, a power
    cut after the first acknowledged write could take the new directory, and everything in it, away."""
    absolute = os.path.abspath(path)
    missing: list[str] = []
    while not os.path.isdir(absolute):
        missing.append(absolute)
        absolute = os.path.dirname(absolute)
    os.makedirs(path, exist_ok=True)
    for created in reversed(missing):
        fd = os.open(os.path.dirname(created), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
