"""The key-value engine (memory and RocksDB backends): a partition is a `PartitionActor` on a key space of
its own, and a queue's deduplication keys live in one more key space beside its partitions'."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from querator.catalog import Catalog, CatalogChanged, QueueEntry
from querator.clock import Clock
from querator.config import Config
from querator.dedup import DedupKeys
from querator.engine import Engine, EngineContext, Partition, QueueHandle
from querator.partition import PartitionActor
from querator.store import open_store
from querator.store.base import Store

log = logging.getLogger("querator.service")


def space_name(uid: int, index: int) -> str:
    """The key space of partition `index` of the queue incarnation `uid`."""
    return f"q{uid}.p{index}"


def dedup_space_name(uid: int) -> str:
    """The key space of the deduplication keys of the queue incarnation `uid`."""
    return f"q{uid}.dedup"


def space_names(uid: int, partitions: int) -> list[str]:
    """Every key space of a queue: its partitions' and its deduplication keys'."""
    return [*(space_name(uid, i) for i in range(partitions)), dedup_space_name(uid)]


class KeyValueEngine:
    """Implements `engine.Engine` on one store."""

    def __init__(self, context: EngineContext, store: Store) -> None:
        self._context = context
        self._store = store

    def partition(self, queue: QueueHandle, index: int) -> Partition:
        space = self._store.space(space_name(queue.uid, index))
        return PartitionActor(self._context, self._store, queue, index, space)

    def dedup_keys(self, uid: int) -> DedupKeys:
        return DedupKeys(self._store.space(dedup_space_name(uid)))


class KeyValueBackend:
    """Implements `backend.Backend` on a memory or RocksDB store; in durability `flush` it also syncs in
    the background at least every `flush-sync-ms`."""

    def __init__(
        self,
        config: Config,
        clock: Clock,
        loop: asyncio.AbstractEventLoop,
        on_commit: Callable[[int], None] | None,
    ) -> None:
        self._config = config
        self._loop = loop
        self.store = open_store(config)
        wait_for_sync = self.store.durable and config.durability == "fsync"
        self.context = EngineContext(clock, loop, config.partition_inbox, wait_for_sync, on_commit)
        self.engine: Engine = KeyValueEngine(self.context, self.store)
        self._catalog = Catalog(self.store, loop)
        self._flush_sync: asyncio.TimerHandle | None = None
        self._closing = False

    @property
    def durable(self) -> bool:
        return self.store.durable

    async def open(self, on_change: CatalogChanged) -> list[QueueEntry]:
        if self.store.durable and self._config.durability == "flush" and self._config.flush_sync_ms:
            self._flush_sync = self._loop.call_later(self._config.flush_sync_ms / 1000, self._sync)
        return self._catalog.load()

    def forget_orphans(self, live: list[QueueEntry]) -> None:
        self._catalog.drop_orphans(
            name for entry in live for name in space_names(entry.uid, entry.options.partitions)
        )

    def new_uid(self) -> int:
        return self._catalog.new_uid()

    def save(self, entry: QueueEntry, created: bool) -> asyncio.Future[None]:
        return self._catalog.save(entry)

    def forget(self, entry: QueueEntry) -> asyncio.Future[None]:
        return self._catalog.forget(entry.name)

    async def drop(self, entry: QueueEntry) -> None:
        for space in space_names(entry.uid, entry.options.partitions):
            self.store.drop_space(space)

    async def close(self) -> None:
        self._closing = True
        if self._flush_sync is not None:
            self._flush_sync.cancel()
        await self.store.close()

    def _sync(self) -> None:
        """Durability `flush`: replies do not wait for the disk, but a sync at least every `flush-sync-ms`
        bounds what a power cut can take (as Redis's `appendfsync everysec`)."""
        self.store.after_sync(self._synced)

    def _synced(self, error: BaseException | None) -> None:
        if error is not None:
            log.error("background sync failed: %s", error)
        if not self._closing:
            self._flush_sync = self._loop.call_later(self._config.flush_sync_ms / 1000, self._sync)
