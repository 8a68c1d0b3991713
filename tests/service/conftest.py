"""Fixtures of the queue-semantics suite: a `Service` on each backend with a `ManualClock`.

Tests are plain functions that call `run(main())`; `env` gives them a service factory and helpers to let
the partition actors run after the clock moves (nothing here sleeps for expiry or schedules).
"""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any

import pytest

from querator.clock import Clock, ManualClock
from querator.config import Config
from querator.model import QueueOptions, StoredItem
from querator.service import Service

START_MS = 1_700_000_000_000


class Env:
    """Builds services on one backend and data directory (or, for postgres, one database schema of its
    own); `clock` is shared, so a reopened service continues at the time the previous one stopped."""

    def __init__(self, backend: str, data: Path, dsn: str = "") -> None:
        self.backend = backend
        self.data = data
        self.dsn = dsn
        self.clock = ManualClock(START_MS)
        self._services: list[Service] = []

    def config(self, **overrides: Any) -> Config:
        values: dict[str, Any] = {"backend": self.backend, "data": str(self.data)}
        if self.dsn:
            values["postgres_dsn"] = self.dsn
        values.update(overrides)
        return Config(**values)

    def service(self, **overrides: Any) -> Service:
        svc = Service(self.config(**overrides), clock=self.clock)
        self._services.append(svc)
        return svc

    def real_time_service(self, **overrides: Any) -> Service:
        """A service on the real clock, for the few tests that measure real time (BLOCK timeouts)."""
        return Service(self.config(**overrides), clock=Clock())

    async def settle(self, rounds: int = 10) -> None:
        """Yield to the loop so woken partition actors run their step. On postgres a step waits for the
        database: wait until every partition has nothing left to do (as a key-value step would have)."""
        for _ in range(rounds):
            await asyncio.sleep(0)
        if self.backend != "postgres":
            return
        deadline = asyncio.get_running_loop().time() + 10
        quiet = 0
        while quiet < 3 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.002)
            partitions = [p for svc in self._services for q in svc.queues.values() for p in q.partitions]
            quiet = quiet + 1 if all(getattr(p, "idle", True) for p in partitions) else 0

    async def advance(self, ms: int) -> None:
        """Move the clock (waking every partition actor) and let the actors apply their timers."""
        self.clock.advance(ms)
        await self.settle()

    @staticmethod
    async def create(svc: Service, name: str = "q", **options: Any) -> None:
        await svc.create_queue(name, QueueOptions(**options))

    @staticmethod
    async def all_items(svc: Service, name: str = "q", **kwargs: Any) -> list[StoredItem]:
        return list(await svc.items(name, limit=1000, **kwargs))

    @staticmethod
    async def partition_of(svc: Service, name: str = "q") -> dict[str, int]:
        """id -> partition, learned through the public `items(partition=p)` listing."""
        info = await svc.queue_info(name)
        out: dict[str, int] = {}
        for p in range(info.partitions):
            for item in await svc.items(name, partition=p, limit=1000):
                out[item.id] = p
        return out

    def now(self) -> int:
        return self.clock.now_ms()


@pytest.fixture(params=["memory", "rocksdb", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    """Every storage backend; postgres on a throwaway cluster (skipped only without its binaries)."""
    return str(request.param)


_schemas = itertools.count()


@pytest.fixture
def env(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Env:
    if backend != "postgres":
        return Env(backend, tmp_path / "data")
    # One database per module (pg_dsn), one schema per test: as fresh as a new data directory.
    dsn = request.getfixturevalue("pg_dsn")
    schema = f"t{next(_schemas)}"
    asyncio.run(_create_schema(dsn, schema))
    return Env(backend, tmp_path / "data", f"{dsn}?search_path={schema}")


async def _create_schema(dsn: str, schema: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"CREATE SCHEMA {schema}")
    finally:
        await conn.close()


@pytest.fixture
def rocks_env(env: Env) -> Env:
    """For restart tests: a durable backend (RocksDB, postgres); memory keeps nothing across a close."""
    if env.backend == "memory":
        pytest.skip("restart needs a durable backend (memory keeps nothing across a close)")
    return env
