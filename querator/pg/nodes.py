"""Which nodes are alive, and folding the counter rows of the nodes that are gone.

Each partition actor of each node writes counter rows of its own (schema.py: no row is written by two
actors), and a restarted node is a new node, so the rows of every node that ever ran would pile up and
every count read would sum them all. Each node marks itself alive in `querator_nodes` every `BEAT_S`.
Every `FOLD_S` the node that takes the advisory lock moves the rows of the nodes unseen for `GONE_MS`
into one `folded` row per partition, in the statement that deletes them, and forgets those nodes: every
sum stays what it was. A live node that was only slow loses nothing either: its next step writes a new
row of its own (only its own steps read its row back, to settle a commit whose connection was lost, and
a node unseen for a minute has given up on those: SqlPartition._settle_lost_commit)."""

from __future__ import annotations

from typing import Any, Final

from querator.pg.schema import COUNTERS, DB_NOW_MS

BEAT_S: Final = 5.0
FOLD_S: Final = 60.0
GONE_MS: Final = 60_000
FOLDED: Final = "folded"  # the writer of the folded rows: never a node's (those are "<node>/<uid>/<n>...")
# pg_try_advisory_xact_lock key: one node folds at a time.
_FOLD_LOCK: Final = 0x5155_4552_0002


async def beat(conn: Any, node: str) -> None:
    """This node is alive now (by the database's clock)."""
    await conn.execute(
        f"INSERT INTO querator_nodes (node, seen_at) VALUES ($1, {DB_NOW_MS}) "
        "ON CONFLICT (node) DO UPDATE SET seen_at = excluded.seen_at",
        node,
    )


def _fold_statement() -> str:
    sums = ", ".join(f"sum({c})" for c in COUNTERS)
    names = ", ".join(COUNTERS)
    adds = ", ".join(f"{c} = c.{c} + excluded.{c}" for c in COUNTERS)
    return (
        "WITH gone AS (DELETE FROM querator_counters AS g "
        f"WHERE g.writer <> '{FOLDED}' AND NOT EXISTS (SELECT 1 FROM querator_nodes AS n "
        f"WHERE n.node = split_part(g.writer, '/', 1) AND n.seen_at > {DB_NOW_MS} - $1) "
        f"RETURNING g.*), moved AS (INSERT INTO querator_counters AS c (uid, partition, writer, {names}) "
        f"SELECT uid, partition, '{FOLDED}', {sums} FROM gone GROUP BY uid, partition "
        f"ON CONFLICT (uid, partition, writer) DO UPDATE SET {adds}) "
        "SELECT count(*) FROM gone"
    )


_FOLD: Final = _fold_statement()


async def fold(conn: Any, gone_ms: int = GONE_MS) -> int | None:
    """Fold the counter rows of the nodes unseen for `gone_ms`; how many rows were folded, or None when
    another node is folding now."""
    async with conn.transaction():
        if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", _FOLD_LOCK):
            return None
        folded = int(await conn.fetchval(_FOLD, gone_ms))
        await conn.execute(f"DELETE FROM querator_nodes WHERE seen_at <= {DB_NOW_MS} - $1", gone_ms)
        return folded
