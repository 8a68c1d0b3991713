"""Helpers of the SPEC section 7 tests (deduplication, reasons, provenance, redrive, pause, QGET).

Only public means: the `Service` methods, and for the storage check the store's own `KeySpace.scan`
over every key space the service has (the only storage a `Service` writes to).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from typing import Any

# What `reason source-queue source-id dead-reason` read on an item that never reached a dead queue.
NO_PROVENANCE = (b"", "", "", "")
# Past every key a partition or the service writes: the first byte of every key is below it.
_END = b"\xff" * 16


def provenance(item: Any) -> tuple[bytes, str, str, str]:
    return item.reason, item.source_queue, item.source_id, item.dead_reason


async def dead_letter(svc: Any, queue: str, payloads: list[bytes], **retry: Any) -> list[str]:
    """Produce `payloads` into `queue`, lease them and QRETRY DEAD them; the ids they had when they left."""
    await svc.produce(queue, payloads)
    leased = await svc.lease(queue, count=len(payloads))
    assert [i.payload for i in leased] == payloads
    ids = [i.id for i in leased]
    assert await svc.retry(queue, ids, dead=True, **retry) == len(ids)
    return ids


def key_count(svc: Any) -> int:
    """Every key of every key space of the service's store: the meta space and each partition's."""
    store = svc.store
    return sum(1 for name in store.space_names() for _ in store.space(name).scan(b"", _END))


async def eventually(predicate: Callable[[], bool], what: str, seconds: float = 10.0) -> None:
    """Let the partition actors (and RocksDB's sync thread) run until `predicate` holds. This waits for
    background work the clock has already made due; it measures no time."""
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, f"never happened: {what}"
        await asyncio.sleep(0.002)


async def stable_key_count(svc: Any, polls: int = 20) -> int:
    """`key_count` once it has not changed for `polls` turns of the loop in a row (work made due by the
    clock, such as dropping expired keys, has run)."""
    count, same = key_count(svc), 0
    while same < polls:
        await asyncio.sleep(0.002)
        now = key_count(svc)
        count, same = now, same + 1 if now == count else 0
    return count


def exact(message: str) -> str:
    """A `pytest.raises(match=...)` pattern that matches `message` and nothing longer."""
    return f"^{re.escape(message)}$"


async def remembered_keys(env: Any, svc: Any, queue: str = "q") -> int:
    """How many deduplication keys the queue's storage holds: the key space on the key-value backends,
    the rows of `querator_dedup` on postgres (read over a connection of the test's own)."""
    if env.backend != "postgres":
        return int(svc.queues[queue].dedup.count())
    import asyncpg

    conn = await asyncpg.connect(env.dsn)
    try:
        uid = svc.queues[queue].uid
        return int(await conn.fetchval("SELECT count(*) FROM querator_dedup WHERE uid = $1", uid))
    finally:
        await conn.close()


async def eventually_async(predicate: Callable[[], Any], what: str, seconds: float = 10.0) -> None:
    """`eventually` for a predicate that must be awaited."""
    deadline = time.monotonic() + seconds
    while not await predicate():
        assert time.monotonic() < deadline, f"never happened: {what}"
        await asyncio.sleep(0.01)
