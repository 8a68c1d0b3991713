"""The queue catalog in PostgreSQL: one row per queue in `querator_queues`, and each queue's tables made
and dropped in the same transaction as its row, so a crash never leaves a queue without its tables or
tables without a queue. Queue uids come from one sequence (unique across nodes), reserved a few at a
time so QCREATE can name its queue before the database answers (ADR 5)."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any, Final

import asyncpg

from querator.catalog import QueueEntry
from querator.errors import NoQueueError, QueueExistsError, TryAgainError
from querator.model import QueueOptions
from querator.pg.schema import PartitionTables

# Queue uids reserved ahead; topped up in the background when half are used.
UID_BLOCK: Final = 16


def entry_of(row: Any) -> QueueEntry:
    options = QueueOptions(**json.loads(row["options"]))
    return QueueEntry(row["name"], row["uid"], options, row["created_at"], row["updated_at"], row["paused"])


async def load(conn: Any) -> list[QueueEntry]:
    rows = await conn.fetch(
        "SELECT name, uid, options::text AS options, created_at, updated_at, paused FROM querator_queues"
    )
    return [entry_of(row) for row in rows]


async def reserve_uids(conn: Any, count: int) -> list[int]:
    rows = await conn.fetch("SELECT nextval('querator_queue_uid') FROM generate_series(1, $1)", count)
    return [int(r[0]) for r in rows]


def tables_of(entry: QueueEntry) -> list[PartitionTables]:
    return [PartitionTables(entry.uid, i) for i in range(entry.options.partitions)]


async def save(conn: Any, entry: QueueEntry, created: bool) -> None:
    """Store the entry, making any partition tables it names that do not exist yet, in one transaction."""
    options = json.dumps(asdict(entry.options))
    async with conn.transaction():
        if created:
            inserted = await conn.fetchval(
                "INSERT INTO querator_queues (name, uid, options, created_at, updated_at, paused) "
                "VALUES ($1, $2, $3::jsonb, $4, $5, $6) ON CONFLICT (name) DO NOTHING RETURNING uid",
                entry.name,
                entry.uid,
                options,
                entry.created_at,
                entry.updated_at,
                entry.paused,
            )
            if inserted is None:
                raise QueueExistsError(entry.name)  # created through another node first
        else:
            updated = await conn.fetchval(
                "UPDATE querator_queues SET options = $3::jsonb, updated_at = $4, paused = $5 "
                "WHERE name = $1 AND uid = $2 RETURNING uid",
                entry.name,
                entry.uid,
                options,
                entry.updated_at,
                entry.paused,
            )
            if updated is None:
                raise NoQueueError(entry.name)  # deleted through another node
        for tables in tables_of(entry):
            for statement in tables.create(bool(entry.options.expire_timeout)):
                await conn.execute(statement)


async def forget(conn: Any, entry: QueueEntry) -> None:
    """Remove the queue's row, tables, counters and deduplication keys in one transaction."""
    async with conn.transaction():
        await conn.execute("DELETE FROM querator_queues WHERE name = $1 AND uid = $2", entry.name, entry.uid)
        for tables in tables_of(entry):
            for statement in tables.drop():
                await conn.execute(statement)
        # Partitions beyond the entry's count (grown through another node) go too.
        extra = await conn.fetch(
            "SELECT relname FROM pg_class WHERE relkind IN ('r', 'S') AND relname LIKE $1",
            f"querator\\_q{entry.uid}\\_p%",
        )
        for row in extra:
            kind = "SEQUENCE" if row["relname"].endswith("_seq") else "TABLE"
            await conn.execute(f'DROP {kind} IF EXISTS "{row["relname"]}"')
        await conn.execute("DELETE FROM querator_counters WHERE uid = $1", entry.uid)
        await conn.execute("DELETE FROM querator_dedup WHERE uid = $1", entry.uid)


def unavailable(exc: BaseException) -> TryAgainError:
    return TryAgainError(f"database unavailable; {type(exc).__name__}: {exc}")


# What a database that cannot be used now raises (TimeoutError is an OSError).
CATALOG_ERRORS: Final = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError)
