"""The SQL engine's produce lane (querator/pg/lanes.py) keeps one caller's order: a plain produce commits
beside the main steps, and what the caller pipelines after it still sees its items. Each test holds the
lane's commit back by locking its counter row from another session, so the later call is certainly
applied while the produce is still in flight."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import pytest

from tests.support import run


@pytest.fixture
def backend() -> str:
    """Only the postgres backend has a produce lane (this overrides conftest's every-backend fixture)."""
    return "postgres"


@pytest.fixture
def pg_env(env):  # type: ignore[no-untyped-def]
    return env


@asynccontextmanager
async def produce_lane_held(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """Lock every produce lane's counter row (one produce made it) until the block ends: a produce on
    the lane then waits at its counter upsert, uncommitted."""
    conn = await asyncpg.connect(dsn)
    transaction = conn.transaction()
    await transaction.start()
    try:
        rows = await conn.fetch("SELECT writer FROM querator_counters WHERE writer LIKE '%/p' FOR UPDATE")
        assert rows, "no produce lane has written its counter row yet"
        yield conn
    finally:
        await transaction.rollback()
        await conn.close()


async def blocked_on_lock(dsn: str) -> None:
    """Wait until a statement of the service waits for the held row lock."""
    conn = await asyncpg.connect(dsn)
    try:
        for _ in range(500):
            if await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"):
                return
            await asyncio.sleep(0.01)
        raise AssertionError("no statement waited for the lock")
    finally:
        await conn.close()


def test_lease_after_a_produce_still_committing_gets_its_items(pg_env) -> None:
    async def main() -> None:
        async with pg_env.service() as svc:
            await svc.create_queue("q")
            await svc.produce("q", [b"0"])  # through the lane: its counter row exists from now on
            (item,) = await svc.lease("q")
            await svc.complete("q", [item.id])
            async with produce_lane_held(pg_env.dsn):
                produced = svc.produce("q", [b"a", b"b"])
                leased = svc.lease("q", count=3)
                await blocked_on_lock(pg_env.dsn)
                await asyncio.sleep(0.2)  # the lease's own statement has run, and came back empty
                assert not leased.done()  # it waits for the produce before it, not for the lock
            assert len(await produced) == 2
            assert [i.payload for i in await leased] == [b"a", b"b"]
            stats = await svc.queue_stats("q")
            assert (stats.ready, stats.leased) == (0, 2)

    run(main())


def test_reads_and_clear_after_a_produce_still_committing_see_its_items(pg_env) -> None:
    async def main() -> None:
        async with pg_env.service() as svc:
            await svc.create_queue("q")
            await svc.produce("q", [b"0"])
            async with produce_lane_held(pg_env.dsn):
                produced = svc.produce("q", [b"a", b"b"])
                length = svc.queue_length("q")
                cleared = svc.clear("q")
                await blocked_on_lock(pg_env.dsn)
                await asyncio.sleep(0.2)
                assert not length.done() and not cleared.done()
            await produced
            assert await length == 3
            assert await cleared == 3
            assert (await svc.queue_stats("q")).total == 0

    run(main())


def test_produce_after_a_produce_still_committing_keeps_its_place(pg_env) -> None:
    """A second produce of the same caller goes behind the first even when a waiting consumer sends it
    to the main steps."""

    async def main() -> None:
        async with pg_env.service() as svc:
            await svc.create_queue("q")
            await svc.produce("q", [b"0"])
            assert [i.payload for i in await svc.lease("q")] == [b"0"]
            async with produce_lane_held(pg_env.dsn):
                first = svc.produce("q", [b"a"])
                waiting = svc.lease("q", count=2, block_ms=5_000)
                await asyncio.sleep(0.05)  # the consumer waits: the next produce goes to the main steps
                second = svc.produce("q", [b"b"])
                await blocked_on_lock(pg_env.dsn)
            await first
            await second
            got = [i.payload for i in await waiting]
            rest = [i.payload for i in await svc.lease("q", count=2)]
            assert got + rest == [b"a", b"b"]

    run(main())
