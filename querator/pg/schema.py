"""Every table of the postgres backend, and the versioned migrations that make them.

Shared tables: `querator_schema` (the version), `querator_queues` (the catalog), `querator_counters`
(per-writer counter rows, summed when read, so no row is updated by more than one partition actor of one
node: no hot row) and `querator_dedup` (QPRODUCE DEDUP keys). Each partition of each queue incarnation
`uid` has a table of ready and leased items in seq order (`querator_q<uid>_p<n>`), a table of scheduled
items (`..._s`), and a sequence for its seqs (`..._seq`). Table names come from numbers, never from queue
names. Besides the primary keys, the indexes are: the ready items by seq (partial: the FIFO scan), the
leases by deadline (partial: lease expiry), the scheduled items by due time and, while the queue has an
expire timeout, the ready items by age.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import asyncpg

SCHEMA_VERSION: Final = 3
# pg_advisory_xact_lock key: nodes starting together migrate one at a time.
_MIGRATION_LOCK: Final = 0x5155_4552  # "QUER"

# Version 1. Each later version appends a list; a database is brought forward one version at a time.
_MIGRATIONS: Final[list[list[str]]] = [
    [
        """CREATE TABLE querator_queues (
            name text PRIMARY KEY,
            uid bigint NOT NULL UNIQUE,
            options jsonb NOT NULL,
            created_at bigint NOT NULL,
            updated_at bigint NOT NULL,
            paused boolean NOT NULL DEFAULT false)""",
        "CREATE SEQUENCE querator_queue_uid",
        # `writer` is the node and partition actor that writes the row: no two actors update one row.
        """CREATE TABLE querator_counters (
            uid bigint NOT NULL,
            partition integer NOT NULL,
            writer text NOT NULL,
            ready bigint NOT NULL DEFAULT 0,
            leased bigint NOT NULL DEFAULT 0,
            scheduled bigint NOT NULL DEFAULT 0,
            produced bigint NOT NULL DEFAULT 0,
            completed bigint NOT NULL DEFAULT 0,
            retried bigint NOT NULL DEFAULT 0,
            lease_expired bigint NOT NULL DEFAULT 0,
            deduplicated bigint NOT NULL DEFAULT 0,
            leased_total bigint NOT NULL DEFAULT 0,
            dead_max_attempts bigint NOT NULL DEFAULT 0,
            dead_expired bigint NOT NULL DEFAULT 0,
            dead_retry bigint NOT NULL DEFAULT 0,
            -- The writer's last step: after a connection lost during a commit, whether it committed.
            last_step bigint NOT NULL DEFAULT 0,
            PRIMARY KEY (uid, partition, writer))
            WITH (fillfactor = 50, autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000)""",
        """CREATE TABLE querator_dedup (
            uid bigint NOT NULL,
            key bytea NOT NULL,
            first_use bigint NOT NULL,
            partition integer NOT NULL,
            seqs bigint[] NOT NULL,
            PRIMARY KEY (uid, key))""",
        # The sweep finds a queue's expired keys without reading its live ones.
        "CREATE INDEX querator_dedup_age ON querator_dedup (uid, first_use)",
    ],
    # Version 2: the lease's index of ready items (`PartitionTables.create`) on every existing partition.
    [
        """DO $$
        DECLARE t text;
        BEGIN
            FOR t IN SELECT c.relname FROM pg_class c
                WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind = 'r'
                AND c.relname ~ '^querator_q[0-9]+_p[0-9]+$'
            LOOP
                EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON %I (seq) WHERE state = 0', t || '_ready', t);
            END LOOP;
        END $$""",
    ],
    # Version 3: the nodes alive, so the counter rows of those gone can be folded (nodes.py).
    [
        """CREATE TABLE querator_nodes (
            node text PRIMARY KEY,
            seen_at bigint NOT NULL)
            WITH (fillfactor = 50)""",
    ],
]

# The counter columns, in the order a step's deltas carry them.
COUNTERS: Final = (
    "ready",
    "leased",
    "scheduled",
    "produced",
    "completed",
    "retried",
    "lease_expired",
    "deduplicated",
    "leased_total",
    "dead_max_attempts",
    "dead_expired",
    "dead_retry",
)

# An item's columns besides its seq (and state / deadline / due_at), in the order rows carry them.
ITEM_COLUMNS: Final = (
    "attempts",
    "created_at",
    "enqueue_at",
    "kind",
    "reference",
    "encoding",
    "payload",
    "reason",
    "source_queue",
    "source_id",
    "dead_reason",
)
ITEM_TYPES: Final = (
    "integer",
    "bigint",
    "bigint",
    "bytea",
    "bytea",
    "bytea",
    "bytea",
    "bytea",
    "bytea",
    "bytea",
    "smallint",
)

_ITEM_DDL: Final = """
    attempts integer NOT NULL,
    created_at bigint NOT NULL,
    enqueue_at bigint NOT NULL,
    kind bytea NOT NULL,
    reference bytea NOT NULL,
    encoding bytea NOT NULL,
    payload bytea NOT NULL,
    reason bytea NOT NULL,
    source_queue bytea NOT NULL,
    source_id bytea NOT NULL,
    dead_reason smallint NOT NULL"""

# Every item is inserted once, updated per lease and deleted once: room on each page keeps lease updates
# on the page, and vacuum runs by absolute thresholds, not a fraction of a table that may hold millions.
_ITEM_STORAGE: Final = (
    "fillfactor = 80, autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 5000, "
    "autovacuum_vacuum_insert_scale_factor = 0, autovacuum_vacuum_insert_threshold = 50000, "
    "autovacuum_vacuum_cost_delay = 0"
)


@dataclass(frozen=True, slots=True)
class PartitionTables:
    """The names of one partition's tables; built from numbers only, so they are safe to format in."""

    uid: int
    index: int

    @property
    def items(self) -> str:
        return f"querator_q{self.uid}_p{self.index}"

    @property
    def scheduled(self) -> str:
        return f"{self.items}_s"

    @property
    def seq(self) -> str:
        return f"{self.items}_seq"

    @property
    def expiry_index(self) -> str:
        return f"{self.items}_expiry"

    def create(self, expiry: bool) -> list[str]:
        """DDL for the partition; each statement may run again harmlessly."""
        statements = [
            f"CREATE SEQUENCE IF NOT EXISTS {self.seq}",
            # state 0 ready, 1 leased; deadline is the lease's end (0 while ready).
            f"""CREATE TABLE IF NOT EXISTS {self.items} (
                seq bigint PRIMARY KEY,
                state smallint NOT NULL,
                deadline bigint NOT NULL,{_ITEM_DDL})
                WITH ({_ITEM_STORAGE})""",
            # Payloads are usually compressed already: store them out of line without trying pglz.
            f"ALTER TABLE {self.items} ALTER COLUMN payload SET STORAGE EXTERNAL",
            # Lease expiry finds the leases that ended without walking the ready items.
            f"CREATE INDEX IF NOT EXISTS {self.items}_leases ON {self.items} (deadline) WHERE state = 1",
            # A lease walks the ready items in seq order without visiting the leased ones (on the primary
            # key, the consumers' unexpired leases sit at the head, and another node's are behind its hint).
            f"CREATE INDEX IF NOT EXISTS {self.items}_ready ON {self.items} (seq) WHERE state = 0",
            f"""CREATE TABLE IF NOT EXISTS {self.scheduled} (
                seq bigint PRIMARY KEY,
                due_at bigint NOT NULL,{_ITEM_DDL})""",
            f"CREATE INDEX IF NOT EXISTS {self.scheduled}_due ON {self.scheduled} (due_at, seq)",
        ]
        if expiry:
            statements.append(self.create_expiry_index())
        return statements

    def create_expiry_index(self) -> str:
        """Only while the queue has an expire timeout: the expiry pass finds old ready items by it."""
        return f"CREATE INDEX IF NOT EXISTS {self.expiry_index} ON {self.items} (created_at) WHERE state = 0"

    def drop_expiry_index(self) -> str:
        return f"DROP INDEX IF EXISTS {self.expiry_index}"

    def drop(self) -> list[str]:
        return [
            f"DROP TABLE IF EXISTS {self.items}",
            f"DROP TABLE IF EXISTS {self.scheduled}",
            f"DROP SEQUENCE IF EXISTS {self.seq}",
        ]


# The database's clock now, in Unix milliseconds: the one clock every node judges time by (SPEC 9).
DB_NOW_MS: Final = "(extract(epoch FROM clock_timestamp()) * 1000)::bigint"


# The engine's connections start with these (startup parameters). Every statement of the engine finds
# rows by key or walks an index in order under a LIMIT, on tables whose size swings by millions between two
# ANALYZEs. Planned with the statistics of a small table, a complete scanned the whole table for its ids
# (once the backlog grew, a 100k-row scan per complete); a bitmap scan reads every match before a LIMIT
# applies (a lease's whole backlog, then sorted) and never marks dead index entries, so each one walks
# what vacuum has not removed yet. A statement with no index to use still scans (the catalog's), but
# at the planner's "disabled" cost, which is above `jit_above_cost`: without `jit = off` such a statement
# was compiled by LLVM first (430 ms to plan `SELECT max(version) FROM querator_schema`). The engine's
# statements are short; JIT never pays for itself on them.
PLANNER_SETTINGS: Final = {"enable_bitmapscan": "off", "enable_seqscan": "off", "jit": "off"}


def leased_until_after(now: str) -> str:
    """SQL for "leased, and the lease not over at `now`" (a parameter such as "$2"), for rows the primary
    key finds by their seqs (`seq = ANY(...)`). `state + 0` keeps the planner off the partial index of
    leases: it would AND a bitmap scan of that index with the primary key's, and a bitmap scan walks every
    entry that leases left behind until vacuum (it never marks one dead, as an index scan does), so a
    complete of 50 ids read 30,000 entries (0.7 ms of its 0.85)."""
    return f"state + 0 = 1 AND deadline > {now}"


async def migrate(conn: asyncpg.Connection) -> int:
    """Bring the database to `SCHEMA_VERSION` (one node at a time); the version found before."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
        await conn.execute("CREATE TABLE IF NOT EXISTS querator_schema (version integer NOT NULL)")
        found = await conn.fetchval("SELECT max(version) FROM querator_schema")
        version = found or 0
        if version > SCHEMA_VERSION:
            raise RuntimeError(
                f"the database's schema is version {version}, newer than this Querator's {SCHEMA_VERSION}"
            )
        for number in range(version + 1, SCHEMA_VERSION + 1):
            for statement in _MIGRATIONS[number - 1]:
                await conn.execute(statement)
            await conn.execute("INSERT INTO querator_schema (version) VALUES ($1)", number)
        return int(version)
