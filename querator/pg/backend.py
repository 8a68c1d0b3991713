"""The postgres backend (SPEC 9): opens the pool, migrates the schema, keeps this node's view of the
catalog and of every partition's counts in step with the database, and wakes blocked consumers when
another node made items ready (LISTEN/NOTIFY, or polling with `postgres-notify = false`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any, Final

import asyncpg

from querator.catalog import CatalogChanged, QueueEntry
from querator.clock import Clock
from querator.config import Config
from querator.engine import Engine, EngineContext, Partition, QueueHandle
from querator.errors import QueratorError, TryAgainError
from querator.pg import catalog, nodes
from querator.pg.partition import SqlPartition, SqlShared
from querator.pg.schema import DB_NOW_MS, PLANNER_SETTINGS, migrate

log = logging.getLogger("querator.postgres")

CHANNEL: Final = "querator"
# Admin changes through other nodes hold here within 1 s (SPEC 9): the catalog is read this often.
CATALOG_POLL_S: Final = 0.5
# Counts (QSTATS agree across nodes within 1 s) and the clock offset are refreshed this often.
COUNTS_POLL_S: Final = 1.0
CLOCK_SYNC_S: Final = 10.0
# Statements are generated per partition table; enough cache that a step never parses again.
_STATEMENT_CACHE: Final = 2048


class SqlEngine:
    """Implements `engine.Engine` for PostgreSQL; remembers its partitions by queue uid, to refresh
    their counts and wake them."""

    def __init__(self, shared: SqlShared) -> None:
        self.shared = shared
        self.partitions: dict[int, list[SqlPartition]] = {}

    def partition(self, queue: QueueHandle, index: int) -> Partition:
        partition = SqlPartition(self.shared, queue, index)
        self.partitions.setdefault(queue.uid, []).append(partition)
        return partition

    def dedup_keys(self, uid: int) -> None:
        return None  # kept in querator_dedup and swept by the steps' timer passes

    def forget(self, uid: int) -> None:
        self.partitions.pop(uid, None)

    def prune(self) -> None:
        """Forget the partitions of queues that stopped (deleted here or through another node)."""
        for uid in [uid for uid, parts in self.partitions.items() if all(p.stopped for p in parts)]:
            del self.partitions[uid]

    def poke(self, uid: int) -> None:
        for partition in self.partitions.get(uid, ()):
            partition.poke()

    def poke_waited(self) -> None:
        """Every partition whose queue has consumers waiting on this node looks for ready items."""
        for partitions in self.partitions.values():
            for partition in partitions:
                if partition.has_waiters:
                    partition.poke()


class PostgresBackend:
    """Implements `backend.Backend` on PostgreSQL."""

    def __init__(
        self,
        config: Config,
        clock: Clock,
        loop: asyncio.AbstractEventLoop,
        on_commit: Callable[[int], None] | None,
    ) -> None:
        self._config = config
        self._clock = clock
        self._loop = loop
        self.context = EngineContext(clock, loop, config.partition_inbox, True, on_commit, shared=True)
        self.node = uuid.uuid4().hex[:16]
        self._shared = SqlShared(self.context, self.node, config.postgres_notify, CHANNEL)
        self._engine = SqlEngine(self._shared)
        self.engine: Engine = self._engine
        self._pool: Any = None
        self._uids: list[int] = []
        self._refilling = False
        self._on_change: CatalogChanged | None = None
        self._writes_in_flight = 0
        self._writes_done = 0  # bumped when a local catalog write ends: a poll begun before is stale
        self._tasks: list[asyncio.Task[None]] = []
        self._listener: Any = None
        self._closing = False

    @property
    def durable(self) -> bool:
        return True

    # -- opening and closing ---------------------------------------------------------------------------

    async def open(self, on_change: CatalogChanged) -> list[QueueEntry]:
        try:
            return await self._open(on_change)
        except (*catalog.CATALOG_ERRORS, ValueError) as exc:
            # One line at start (never the DSN itself: it may hold a password).
            raise QueratorError(
                f"cannot open the database named by postgres-dsn; {type(exc).__name__}: {exc}"
            ) from exc

    async def _open(self, on_change: CatalogChanged) -> list[QueueEntry]:
        self._on_change = on_change
        self._pool = await asyncpg.create_pool(
            self._config.postgres_dsn,
            min_size=1,
            max_size=self._config.postgres_pool_size,
            statement_cache_size=_STATEMENT_CACHE,
            command_timeout=30,
            reset=_keep_session,
            server_settings=dict(PLANNER_SETTINGS),
        )
        self._shared.pool = self._pool
        async with self._pool.acquire() as conn:
            found = await migrate(conn)
            if found == 0:
                log.info("database schema created", extra={"fields": {"node": self.node}})
            await self._sync_clock(conn)
            await nodes.beat(conn, self.node)  # alive before any step writes a counter row
            entries = await catalog.load(conn)
            self._uids = await catalog.reserve_uids(conn, catalog.UID_BLOCK)
        self._tasks = [
            self._loop.create_task(self._poll_catalog(), name="postgres catalog"),
            self._loop.create_task(self._poll_counts(), name="postgres counts"),
            self._loop.create_task(self._keep_clock(), name="postgres clock"),
            self._loop.create_task(self._keep_alive(), name="postgres node"),
            self._loop.create_task(self._wakeups(), name="postgres wake-ups"),
        ]
        log.info(
            "postgres backend open",
            extra={"fields": {"node": self.node, "notify": self._config.postgres_notify}},
        )
        return entries

    async def close(self) -> None:
        self._closing = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.close(timeout=2)
        if self._pool is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._pool.close(), 5)

    # -- the catalog -----------------------------------------------------------------------------------

    def forget_orphans(self, live: list[QueueEntry]) -> None:
        """Nothing to do: a queue's tables are made and dropped in the transaction of its row."""

    def new_uid(self) -> int:
        if not self._uids:
            self._refill_uids()
            raise TryAgainError("no queue id reserved yet; the database is unavailable or busy")
        uid = self._uids.pop(0)
        if len(self._uids) < catalog.UID_BLOCK // 2:
            self._refill_uids()
        return uid

    def _refill_uids(self) -> None:
        if self._refilling or self._closing:
            return
        self._refilling = True

        async def refill() -> None:
            try:
                async with self._pool.acquire(timeout=5) as conn:
                    self._uids.extend(await catalog.reserve_uids(conn, catalog.UID_BLOCK))
            except catalog.CATALOG_ERRORS as exc:
                log.warning("could not reserve queue ids: %s", exc)
            finally:
                self._refilling = False

        self._background(refill())

    def save(self, entry: QueueEntry, created: bool) -> asyncio.Future[None]:
        return self._catalog_write(entry.uid, lambda conn: catalog.save(conn, entry, created))

    def forget(self, entry: QueueEntry) -> asyncio.Future[None]:
        return self._catalog_write(entry.uid, lambda conn: catalog.forget(conn, entry))

    async def drop(self, entry: QueueEntry) -> None:
        self._engine.forget(entry.uid)  # its tables went with its row (forget)

    def _catalog_write(self, uid: int, write: Callable[[Any], Any]) -> asyncio.Future[None]:
        """Run a catalog write; the queue's partitions wait for it (their tables may be new)."""
        future: asyncio.Future[None] = self._loop.create_future()
        self._shared.gates[uid] = future
        self._writes_in_flight += 1

        async def run() -> None:
            try:
                async with self._pool.acquire(timeout=5) as conn:
                    await write(conn)
            except catalog.CATALOG_ERRORS as exc:
                future.set_exception(catalog.unavailable(exc))
            except Exception as exc:
                future.set_exception(exc)
            else:
                future.set_result(None)
            finally:
                self._writes_in_flight -= 1
                self._writes_done += 1
                if self._shared.gates.get(uid) is future:
                    del self._shared.gates[uid]

        self._background(run())
        return future

    async def _poll_catalog(self) -> None:
        """Apply admin changes made through other nodes. A poll that overlapped a local write is dropped:
        it may predate that write."""
        while True:
            await asyncio.sleep(CATALOG_POLL_S)
            if self._writes_in_flight:
                continue
            before = self._writes_done
            try:
                async with self._pool.acquire(timeout=5) as conn:
                    entries = await catalog.load(conn)
            except catalog.CATALOG_ERRORS:
                continue
            if self._writes_in_flight or self._writes_done != before or self._on_change is None:
                continue
            self._on_change(entries)

    # -- counts ------------------------------------------------------------------------------------------

    async def _poll_counts(self) -> None:
        """Every partition's ready / leased / scheduled, summed over every node's counter rows."""
        while True:
            await asyncio.sleep(COUNTS_POLL_S)
            self._engine.prune()
            before = {p: p.estimates_version() for ps in self._engine.partitions.values() for p in ps}
            try:
                async with self._pool.acquire(timeout=5) as conn:
                    rows = await conn.fetch(
                        "SELECT uid, partition, sum(ready), sum(leased), sum(scheduled) "
                        "FROM querator_counters GROUP BY uid, partition"
                    )
            except catalog.CATALOG_ERRORS:
                continue
            counts = {(r[0], r[1]): (int(r[2]), int(r[3]), int(r[4])) for r in rows}
            for partition, version in before.items():
                if version is not None and partition.estimates_version() == version:
                    partition.refresh(*counts.get((partition.uid, partition.index), (0, 0, 0)))

    # -- time --------------------------------------------------------------------------------------------

    async def _sync_clock(self, conn: Any) -> None:
        """Judge deadlines by the database's clock: this node's clock is offset to match it (SPEC 9), to
        within half a round trip. A test's manual clock is left alone."""
        if type(self._clock) is not Clock:
            return
        before = time.time_ns()
        db_ms = await conn.fetchval(f"SELECT {DB_NOW_MS}")
        after = time.time_ns()
        self._clock.offset_ms = int(db_ms) - (before + after) // 2_000_000

    async def _keep_clock(self) -> None:
        while True:
            await asyncio.sleep(CLOCK_SYNC_S)
            try:
                async with self._pool.acquire(timeout=5) as conn:
                    await self._sync_clock(conn)
            except catalog.CATALOG_ERRORS:
                continue

    async def _keep_alive(self) -> None:
        """Mark this node alive, and now and then fold the counter rows of the nodes gone (nodes.py)."""
        next_fold = 0.0
        while True:
            try:
                async with self._pool.acquire(timeout=5) as conn:
                    await nodes.beat(conn, self.node)
                    if self._loop.time() >= next_fold:
                        next_fold = self._loop.time() + nodes.FOLD_S
                        folded = await nodes.fold(conn)
                        if folded:
                            log.info("counter rows of gone nodes folded", extra={"fields": {"rows": folded}})
            except catalog.CATALOG_ERRORS as exc:
                log.debug("node beat failed: %s", exc)
            await asyncio.sleep(nodes.BEAT_S)

    # -- wake-ups across nodes ---------------------------------------------------------------------------

    async def _wakeups(self) -> None:
        """LISTEN on a connection of its own (never a pooled one); after a reconnect every waiting consumer
        looks once, since notifications sent meanwhile are lost. Without NOTIFY: poll."""
        if not self._config.postgres_notify:
            while True:
                await asyncio.sleep(self._config.postgres_poll_ms / 1000)
                self._engine.poke_waited()
        while True:
            if self._listener is None or self._listener.is_closed():
                try:
                    self._listener = await asyncpg.connect(self._config.postgres_dsn, timeout=5)
                    await self._listener.add_listener(CHANNEL, self._notified)
                    self._engine.poke_waited()
                except catalog.CATALOG_ERRORS as exc:
                    log.debug("LISTEN connection failed: %s", exc)
                    self._listener = None
            await asyncio.sleep(1.0)

    def _notified(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        node, _, uids = payload.partition(" ")
        if node == self.node:
            return  # our own commit: its step already dealt to our waiters
        for uid in uids.split(","):
            if uid.isdigit():
                self._engine.poke(int(uid))

    def _background(self, coroutine: Any) -> None:
        task = self._loop.create_task(coroutine)
        self._tasks.append(task)
        task.add_done_callback(lambda t: self._tasks.remove(t) if t in self._tasks else None)


async def _keep_session(conn: Any) -> None:
    """A connection goes back to the pool as it is: steps leave no session state behind (no LISTEN, no
    session locks, no open transaction), and asyncpg's default reset would cost a round trip per step."""
