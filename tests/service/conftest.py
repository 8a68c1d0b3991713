"""Fixtures of the queue-semantics suite: a `Service` on each backend with a `ManualClock`.

Tests are plain functions that call `run(main())`; `env` gives them a service factory and helpers to let
the partition actors run after the clock moves (nothing here sleeps for expiry or schedules).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from querator.clock import Clock, ManualClock
from querator.config import Config
from querator.model import QueueOptions, StoredItem
from querator.service import Service

START_MS = 1_700_000_000_000


class Env:
    """Builds services on one backend and data directory; `clock` is shared, so a reopened service
    continues at the time the previous one stopped."""

    def __init__(self, backend: str, data: Path) -> None:
        self.backend = backend
        self.data = data
        self.clock = ManualClock(START_MS)

    def config(self, **overrides: Any) -> Config:
        values: dict[str, Any] = {"backend": self.backend, "data": str(self.data)}
        values.update(overrides)
        return Config(**values)

    def service(self, **overrides: Any) -> Service:
        return Service(self.config(**overrides), clock=self.clock)

    def real_time_service(self, **overrides: Any) -> Service:
        """A service on the real clock, for the few tests that measure real time (BLOCK timeouts)."""
        return Service(self.config(**overrides), clock=Clock())

    @staticmethod
    async def settle(rounds: int = 10) -> None:
        """Yield to the loop so woken partition actors run their step."""
        for _ in range(rounds):
            await asyncio.sleep(0)

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


@pytest.fixture
def env(backend: str, tmp_path: Path) -> Env:
    return Env(backend, tmp_path / "data")


@pytest.fixture
def rocks_env(backend: str, tmp_path: Path) -> Env:
    """For restart tests: only RocksDB keeps anything across a close."""
    if backend != "rocksdb":
        pytest.skip("restart needs a durable backend (memory keeps nothing across a close)")
    return Env(backend, tmp_path / "data")
