"""RocksDB backend (rocksdict): one database per data directory, one column family per key space.

All column families share one WAL, so a single `flush_wal(True)` makes every partition's writes durable:
that is the group commit. `write()` runs on the event loop with sync=False (it holds the GIL but does not
wait for the disk); the fsync runs in a worker thread, where rocksdict releases the GIL, while the next
batches gather (ADR 0004). Many column families share one memtable budget (`WriteBufferManager`) and one
block cache, so a thousand queues do not each get their own buffers.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Iterator
from typing import Any

import rocksdict

log = logging.getLogger("querator.store.rocksdb")

_SyncCallback = Callable[[BaseException | None], None]


class RocksKeySpace:
    __slots__ = ("handle", "name", "view")

    def __init__(self, name: str, view: Any, handle: Any) -> None:
        self.name = name
        self.view = view
        self.handle = handle

    def get(self, key: bytes) -> bytes | None:
        value: bytes | None = self.view.get(key)
        return value

    def scan(self, start: bytes, end: bytes) -> Iterator[tuple[bytes, bytes]]:
        it = self.view.iter()
        it.seek(start)
        while it.valid():
            key = it.key()
            if key >= end:
                return
            yield key, it.value()
            it.next()

    def last_key(self, start: bytes, end: bytes) -> bytes | None:
        it = self.view.iter()
        it.seek_for_prev(end)
        while it.valid():
            key: bytes = it.key()
            if key < start:
                return None
            if key < end:
                return key
            it.prev()
        return None


class RocksWriteSet:
    __slots__ = ("batch", "count")

    def __init__(self) -> None:
        self.batch = rocksdict.WriteBatch(raw_mode=True)
        self.count = 0

    def put(self, space: RocksKeySpace, key: bytes, value: bytes) -> None:
        self.batch.put(key, value, space.handle)
        self.count += 1

    def delete(self, space: RocksKeySpace, key: bytes) -> None:
        self.batch.delete(key, space.handle)
        self.count += 1

    def __len__(self) -> int:
        return self.count


class RocksStore:
    durable = True

    def __init__(
        self,
        path: str,
        *,
        write_buffer_bytes: int = 64 << 20,
        block_cache_bytes: int = 32 << 20,
    ) -> None:
        os.makedirs(path, exist_ok=True)
        self._path = path
        self._cache = rocksdict.Cache(block_cache_bytes)
        self._write_buffers = rocksdict.WriteBufferManager(write_buffer_bytes, False)
        options = self._options()
        options.create_if_missing(True)
        options.create_missing_column_families(True)
        # With many column families, the WAL can only be recycled once every family that has data in it
        # is flushed; cap it so an idle queue does not pin gigabytes of log.
        options.set_max_total_wal_size(256 << 20)
        options.set_keep_log_file_num(3)
        options.set_max_background_jobs(2)
        options.set_max_open_files(512)
        existing = self._existing_families(path)
        families = {name: self._options() for name in existing if name != "default"}
        self._db = rocksdict.Rdict(path, options, column_families=families or None)
        self._spaces: dict[str, RocksKeySpace] = {}
        for name in existing:
            if name != "default":
                self._spaces[name] = self._open_space(name)
        self._write_options = rocksdict.WriteOptions()
        self._write_options.sync = False
        self._sync = _GroupSync(self._flush_wal)
        self._closed = False

    def _options(self) -> Any:
        options = rocksdict.Options(raw_mode=True)
        options.set_write_buffer_manager(self._write_buffers)
        # Small memtables per family: the manager caps the total, these keep idle families cheap.
        options.set_write_buffer_size(4 << 20)
        options.set_max_write_buffer_number(3)
        table = rocksdict.BlockBasedOptions()
        table.set_block_cache(self._cache)
        table.set_bloom_filter(10, False)
        options.set_block_based_table_factory(table)
        options.set_compression_type(rocksdict.DBCompressionType.lz4())
        return options

    @staticmethod
    def _existing_families(path: str) -> list[str]:
        if not os.path.exists(os.path.join(path, "CURRENT")):
            return []
        names: list[str] = rocksdict.Rdict.list_cf(path, rocksdict.Options(raw_mode=True))
        return names

    def _open_space(self, name: str) -> RocksKeySpace:
        return RocksKeySpace(name, self._db.get_column_family(name), self._db.get_column_family_handle(name))

    def space(self, name: str) -> RocksKeySpace:
        space = self._spaces.get(name)
        if space is None:
            self._db.create_column_family(name, self._options())
            space = self._spaces[name] = self._open_space(name)
        return space

    def space_names(self) -> list[str]:
        return list(self._spaces)

    def drop_space(self, name: str) -> None:
        if self._spaces.pop(name, None) is not None:
            self._db.drop_column_family(name)

    def new_write_set(self) -> RocksWriteSet:
        return RocksWriteSet()

    def write(self, batch: RocksWriteSet) -> None:
        if batch.count:
            self._db.write(batch.batch, self._write_options)

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


class _GroupSync:
    """Runs one fsync at a time in a worker thread; callers that arrive while one runs share the next.

    A callback registered during a running sync may cover writes made after that sync started, so it
    waits for the following one: that is what makes the reply-after-durable promise hold.
    """

    def __init__(self, fsync: Callable[[], None]) -> None:
        self._fsync = fsync
        self._running: asyncio.Future[None] | None = None
        self._next: list[_SyncCallback] = []
        self._idle: asyncio.Event | None = None

    def request(self, callback: _SyncCallback) -> None:
        self._next.append(callback)
        if self._running is None:
            self._start()

    def _start(self) -> None:
        callbacks = self._next
        self._next = []
        loop = asyncio.get_running_loop()
        self._running = loop.run_in_executor(None, self._fsync)
        self._running.add_done_callback(lambda future: self._finished(future, callbacks))

    def _finished(self, future: asyncio.Future[None], callbacks: list[_SyncCallback]) -> None:
        self._running = None
        error = future.exception() if not future.cancelled() else asyncio.CancelledError()
        if error is not None:
            log.error("fsync failed: %s", error)
        for callback in callbacks:
            try:
                callback(error)
            except Exception:
                log.exception("sync callback failed")
        if self._next:
            self._start()

    async def drain(self) -> None:
        while self._running is not None:
            await asyncio.shield(self._running)
