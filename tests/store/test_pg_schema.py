"""The postgres backend's schema: migrations bring an older database forward, and the hot statements are
planned as index walks whatever the table's statistics say (ADR 19)."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg

from querator.pg import cycle, nodes
from querator.pg.schema import COUNTERS, PLANNER_SETTINGS, SCHEMA_VERSION, PartitionTables, migrate
from tests.pg_fixtures import needs_postgres

pytestmark = needs_postgres


async def _fresh_schema(dsn: str, name: str) -> asyncpg.Connection:
    conn = await asyncpg.connect(dsn, server_settings=dict(PLANNER_SETTINGS))
    await conn.execute(
        f"DROP SCHEMA IF EXISTS {name} CASCADE; CREATE SCHEMA {name}; SET search_path = {name}"
    )
    return conn


def test_migrations_bring_a_version_1_database_forward(pg_dsn: str) -> None:
    async def main() -> None:
        conn = await _fresh_schema(pg_dsn, "migrate_v1")
        try:
            assert await migrate(conn) == 0
            tables = PartitionTables(7, 0)
            for statement in tables.create(False):
                await conn.execute(statement)
            # The database as version 1 left it: no ready index (2), no table of nodes (3).
            await conn.execute(f"DROP INDEX {tables.items}_ready")
            await conn.execute("DROP TABLE querator_nodes")
            await conn.execute("UPDATE querator_schema SET version = 1")
            assert await migrate(conn) == 1
            indexes = await conn.fetch("SELECT indexname FROM pg_indexes WHERE tablename = $1", tables.items)
            assert f"{tables.items}_ready" in {r[0] for r in indexes}
            assert await conn.fetchval("SELECT to_regclass('querator_nodes')") is not None
            assert await conn.fetchval("SELECT max(version) FROM querator_schema") == SCHEMA_VERSION
            assert await migrate(conn) == SCHEMA_VERSION  # at the current version: nothing to do
        finally:
            await conn.close()

    asyncio.run(main())


async def _partition(conn: asyncpg.Connection) -> PartitionTables:
    """The schema at its current version and the tables of one partition (queue uid 7, partition 0)."""
    await migrate(conn)
    tables = PartitionTables(7, 0)
    for statement in tables.create(False):
        await conn.execute(statement)
    return tables


def _params(**kw: Any) -> list[Any]:
    base: dict[str, Any] = dict(
        now=1000, uid=7, partition=0, writer="w", completes=[], payloads=[], labels=(b"", b"", b""),
        lease_count=0, deadline=0, cut=0, channel="", note="", step=1, head=0,
    )  # fmt: skip
    base.update(kw)
    return cycle.parameters(**base)


def test_leases_and_completes_walk_indexes_after_many_cycles(pg_dsn: str) -> None:
    """After a few hundred produce / lease / complete steps the table's statistics and its leases index
    (full of entries whose rows are gone) once led the planner astray: a lease read every ready row and
    sorted them, and a complete ANDed a bitmap scan of the whole leases index with the primary key. A lease
    must walk the ready index in order, and a complete find its rows by the primary key alone."""

    async def main() -> None:
        conn = await _fresh_schema(pg_dsn, "plans")
        try:
            t = await _partition(conn)
            produce = cycle.statement(t, cycle.Shape(False, True, False, False, False))
            lease = cycle.statement(t, cycle.Shape(False, False, True, False, False))
            complete = cycle.statement(t, cycle.Shape(True, False, False, False, False))
            for _ in range(10):
                await conn.fetch(produce, *_params(payloads=[b"x"] * 100))
            head = 0
            for _ in range(300):
                await conn.fetch(produce, *_params(payloads=[b"x"] * 100))
                rows = await conn.fetch(lease, *_params(lease_count=100, deadline=10**12, head=head))
                seqs = [r[1] for r in rows]
                head = max(seqs) + 1
                await conn.fetch(complete, *_params(completes=seqs))
            await conn.execute(f"ANALYZE {t.items}")
            await conn.fetch(produce, *_params(payloads=[b"x"] * 100))
            seqs = [
                r[1] for r in await conn.fetch(lease, *_params(lease_count=100, deadline=10**12, head=head))
            ]
            for mode in ("force_custom_plan", "force_generic_plan"):
                await conn.execute(f"SET plan_cache_mode = {mode}")
                plan = await _plan(conn, lease, _params(lease_count=100, deadline=10**12, head=head))
                assert f"Index Scan using {t.items}_ready" in plan, plan
                assert "Sort" not in plan and "Bitmap" not in plan, plan
                plan = await _plan(conn, complete, _params(completes=seqs))
                assert f"{t.items}_pkey" in plan and f"{t.items}_leases" not in plan, plan
        finally:
            await conn.close()

    asyncio.run(main())


def test_a_complete_planned_on_a_small_table_uses_the_primary_key(pg_dsn: str) -> None:
    """A statement's plan is made once and kept (a generic plan) while the table it was made on may grow
    by a million rows before the next ANALYZE: a complete planned on a table of a few rows must still find
    its ids by the primary key, not by reading the table, which once cost every complete a scan of the
    whole backlog."""

    async def main() -> None:
        conn = await _fresh_schema(pg_dsn, "small_stats")
        try:
            t = await _partition(conn)
            await conn.execute(
                f"INSERT INTO {t.items} SELECT g, 1, 10000, 1, 1, 1, '', '', '', 'x', '', '', '', 0 "
                "FROM generate_series(1, 10) g"
            )
            await conn.execute(f"ANALYZE {t.items}")
            complete = cycle.statement(t, cycle.Shape(True, False, False, False, False))
            for mode in ("force_custom_plan", "force_generic_plan"):
                await conn.execute(f"SET plan_cache_mode = {mode}")
                plan = await _plan(conn, complete, _params(completes=list(range(1, 9))))
                assert f"{t.items}_pkey" in plan and "Seq Scan" not in plan, plan
        finally:
            await conn.close()

    asyncio.run(main())


async def _plan(conn: asyncpg.Connection, statement: str, params: list[Any]) -> str:
    return "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + statement, *params))


def test_counter_rows_of_gone_nodes_fold_into_one_row_per_partition(pg_dsn: str) -> None:
    """Rows of nodes not seen within the window move into one `folded` row per partition, summed; a live
    node's rows stay; every sum a count read takes is the same before and after, and a second fold adds
    into the folded row."""

    async def main() -> None:
        conn = await _fresh_schema(pg_dsn, "folding")
        try:
            await migrate(conn)
            columns = ", ".join(COUNTERS)

            async def add(writer: str, partition: int, ready: int, produced: int) -> None:
                values = [ready if c == "ready" else produced if c == "produced" else 0 for c in COUNTERS]
                marks = ", ".join(f"${i + 4}" for i in range(len(COUNTERS)))
                insert = (
                    f"INSERT INTO querator_counters (uid, partition, writer, {columns}) VALUES ($1, $2, $3, "
                )
                await conn.execute(insert + marks + ")", 7, partition, writer, *values)

            async def sums() -> list[tuple[int, int, int]]:
                rows = await conn.fetch(
                    "SELECT partition, sum(ready), sum(produced) FROM querator_counters GROUP BY partition "
                    "ORDER BY partition"
                )
                return [(r[0], int(r[1]), int(r[2])) for r in rows]

            await nodes.beat(conn, "alive")
            await add("alive/7/0", 0, 5, 50)
            await add("gone1/7/0", 0, 1, 10)
            await add("gone1/7/0/c", 0, -1, 0)
            await add("gone2/7/0/p", 0, 3, 30)
            await add("gone2/7/1", 1, 2, 20)
            before = await sums()
            assert await nodes.fold(conn) == 4
            assert await sums() == before
            writers = {r[0] for r in await conn.fetch("SELECT writer FROM querator_counters")}
            assert writers == {"alive/7/0", nodes.FOLDED}
            assert (
                await conn.fetchval("SELECT count(*) FROM querator_counters WHERE writer = $1", nodes.FOLDED)
                == 2
            )

            await add("gone3/7/1", 1, 4, 40)
            before = await sums()
            assert await nodes.fold(conn) == 1
            assert await sums() == before
            assert await nodes.fold(conn) == 0
            # Once unseen for the window, the live node's rows fold too, and the node is forgotten.
            assert await nodes.fold(conn, gone_ms=0) == 1
            assert await sums() == before
            assert await conn.fetchval("SELECT count(*) FROM querator_nodes") == 0
        finally:
            await conn.close()

    asyncio.run(main())
