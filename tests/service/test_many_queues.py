"""A thousand queues of four partitions stay cheap to create, serve and reopen."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from querator import Config, QueueOptions, Service
from tests.support import run


def test_thousand_queues_of_four_partitions_open_serve_and_reopen(tmp_path: Path) -> None:
    config = Config(data=str(tmp_path / "data"))

    async def create() -> float:
        async with Service(config) as svc:
            started = time.monotonic()
            await asyncio.gather(
                *(svc.create_queue(f"q{i:04}", QueueOptions(partitions=4)) for i in range(1000))
            )
            await asyncio.gather(*(svc.produce(f"q{i:04}", [b"x"] * 4) for i in range(1000)))
            return time.monotonic() - started

    async def reopen() -> tuple[int, int, float]:
        started = time.monotonic()
        async with Service(config) as svc:
            opened = time.monotonic() - started
            items = await svc.lease("q0999", count=10)
            return len(svc.queues), len(items), opened

    created_in = run(create())
    queues, leased, opened_in = run(reopen())
    assert (queues, leased) == (1000, 4)
    # Generous bounds (about 20x what a 2-core machine takes): they catch per-queue costs that grow with
    # the number of queues, such as a column family per partition (ADR 7), not noise.
    assert created_in < 10, created_in
    assert opened_in < 10, opened_in
