"""What the Service needs of its storage, whatever it is: the engine that builds partitions, the catalog
of queues, and the storage's lifecycle. The key-value backends (memory, RocksDB) keep everything in one
process; the postgres backend shares it with every node on the same database (SPEC 9) and tells the
Service about queues other nodes created, changed or deleted."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

from querator.catalog import CatalogChanged, QueueEntry
from querator.clock import Clock
from querator.config import Config
from querator.engine import Engine, EngineContext


class Backend(Protocol):
    engine: Engine
    context: EngineContext

    @property
    def durable(self) -> bool:
        """Whether anything survives a restart (the start-up line says so)."""
        ...

    async def open(self, on_change: CatalogChanged) -> list[QueueEntry]:
        """Open storage; every queue's catalog entry."""
        ...

    def forget_orphans(self, live: list[QueueEntry]) -> None:
        """Storage left by a create or delete that crashed half way belongs to no queue: drop it."""
        ...

    def new_uid(self) -> int:
        """A queue incarnation never given before (on any node)."""
        ...

    def save(self, entry: QueueEntry, created: bool) -> asyncio.Future[None]:
        """Store a queue's entry (`created`: a new queue, whose partitions' storage is made with it);
        answered once durable."""
        ...

    def forget(self, entry: QueueEntry) -> asyncio.Future[None]:
        """Remove a queue's entry; answered once durable."""
        ...

    async def drop(self, entry: QueueEntry) -> None:
        """Free the storage of a forgotten queue whose partitions have stopped."""
        ...

    async def close(self) -> None: ...


def open_backend(
    config: Config,
    clock: Clock,
    loop: asyncio.AbstractEventLoop,
    on_commit: Callable[[int], None] | None,
) -> Backend:
    if config.backend == "postgres":
        from querator.pg.backend import PostgresBackend

        return PostgresBackend(config, clock, loop, on_commit)
    from querator.kvengine import KeyValueBackend

    return KeyValueBackend(config, clock, loop, on_commit)
