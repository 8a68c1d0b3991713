"""The common step as one statement: completes, plain produces and leases (for requests and for the
consumers waiting on this node) in one data-modifying CTE, in autocommit. One round trip and one commit
instead of a transaction's BEGIN, a statement per part, the counter rows and COMMIT: with several nodes,
each statement is one commit the database groups with the others' (ADR 19).

All CTEs of one statement read one snapshot, so the lease cannot see rows the same statement inserts.
A lease after a produce in the same step must still see them (one client's pipelined calls keep their
order), so what the lease of existing rows leaves short is taken from the new rows themselves: they are
inserted already leased, oldest first. FIFO holds: every existing ready row is older than any new one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from querator.pg.schema import ITEM_COLUMNS, PartitionTables, leased_until_after

_ITEM: Final = ", ".join(ITEM_COLUMNS)


# The columns of a result row that carry no item.
_NOTHING: Final = "0::smallint, NULL::bytea, 0, NULL::bytea, NULL::bytea, NULL::bytea"


@dataclass(frozen=True, slots=True)
class Shape:
    """Which parts a step has; each shape is one statement text (asyncpg prepares each once)."""

    completes: bool
    produces: bool
    leases: bool
    expiry: bool  # the queue has an expire timeout: leases skip expired rows
    notify: bool


def statement(t: PartitionTables, shape: Shape) -> str:
    """Parameters: $1 now, $2 uid, $3 partition, $4 writer, $5 seqs to complete, $6 payloads, $7-$9 their
    kind / reference / encoding, $10 lease count, $11 lease deadline, $12 expiry cut, $13 channel,
    $14 notify payload, $15 the step's number (marks the counter row), $16 where the lease's scan starts
    (the partition's head hint). Rows: (part, seq, state, payload,
    attempts, kind, reference, encoding) where part is 0 completed, 1 produced, 2 leased from existing
    rows, 3 the notification."""
    # Every parameter typed once, so a shape that does not use some still prepares (this CTE is never
    # referenced, so it never runs).
    ctes: list[str] = [
        "args AS (SELECT $1::bigint, $2::bigint, $3::integer, $4::text, $5::bigint[], $6::bytea[], "
        "$7::bytea, $8::bytea, $9::bytea, $10::bigint, $11::bigint, $12::bigint, $13::text, $14::text, "
        "$15::bigint, $16::bigint)"
    ]
    if shape.completes:
        ctes.append(
            f"done AS (DELETE FROM {t.items} WHERE seq = ANY($5::bigint[]) AND {leased_until_after('$1')} "
            "RETURNING seq)"
        )
    if shape.leases:
        fresh = "AND created_at > $12 " if shape.expiry else ""
        ctes.append(
            f"pick AS (SELECT seq FROM {t.items} WHERE state = 0 AND seq >= $16 {fresh}"
            "ORDER BY seq LIMIT $10 FOR UPDATE SKIP LOCKED)"
        )
        ctes.append(
            f"took AS (UPDATE {t.items} AS i SET state = 1, attempts = i.attempts + 1, deadline = $11 "
            "FROM pick WHERE i.seq = pick.seq "
            "RETURNING i.seq, i.payload, i.attempts, i.kind, i.reference, i.encoding)"
        )
    if shape.produces:
        # What the lease of existing rows left short is leased from the new rows, oldest first.
        short = "$10 - (SELECT count(*) FROM took)" if shape.leases else "0"
        ctes.append(
            f"ins AS (INSERT INTO {t.items} (seq, state, deadline, {_ITEM}) "
            f"SELECT nextval('{t.seq}'), CASE WHEN n <= {short} THEN 1 ELSE 0 END, "
            f"CASE WHEN n <= {short} THEN $11 ELSE 0 END, CASE WHEN n <= {short} THEN 1 ELSE 0 END, "
            "$1, $1, $7, $8, $9, p, '', '', '', 0 "
            "FROM unnest($6::bytea[]) WITH ORDINALITY AS u(p, n) ORDER BY n "
            # Only the rows leased here carry their fields back: the rest need just their seqs.
            "RETURNING seq, state, CASE WHEN state = 1 THEN payload END AS payload, attempts, "
            "CASE WHEN state = 1 THEN kind END AS kind, CASE WHEN state = 1 THEN reference END AS reference, "
            "CASE WHEN state = 1 THEN encoding END AS encoding)"
        )
    done = "(SELECT count(*) FROM done)" if shape.completes else "0"
    took = "(SELECT count(*) FROM took)" if shape.leases else "0"
    made = "(SELECT count(*) FROM ins)" if shape.produces else "0"
    leased_new = "(SELECT count(*) FROM ins WHERE state = 1)" if shape.produces else "0"
    deltas = {
        "ready": f"{made} - {leased_new} - {took}",
        "leased": f"{took} + {leased_new} - {done}",
        "produced": made,
        "completed": done,
        "leased_total": f"{took} + {leased_new}",
    }
    names = ", ".join(deltas)
    ctes.append(
        f"counted AS (INSERT INTO querator_counters AS c (uid, partition, writer, {names}, last_step) "
        f"SELECT $2, $3, $4, {', '.join(deltas.values())}, $15 "
        # A step that changed nothing writes nothing: its commit then needs no WAL flush.
        f"WHERE {done} + {took} + {made} > 0 "
        "ON CONFLICT (uid, partition, writer) DO UPDATE SET "
        + ", ".join(f"{c} = c.{c} + excluded.{c}" for c in deltas)
        + ", last_step = excluded.last_step)"
    )
    parts = []
    if shape.completes:
        parts.append(f"SELECT 0, seq, {_NOTHING} FROM done")
    if shape.produces:
        parts.append("SELECT 1, seq, state, payload, attempts, kind, reference, encoding FROM ins")
    if shape.leases:
        parts.append("SELECT 2, seq, 1::smallint, payload, attempts, kind, reference, encoding FROM took")
    if shape.notify:
        # Once per commit, and only when items became ready (a SELECT CTE runs only if referenced).
        ctes.append(f"note AS (SELECT pg_notify($13, $14) WHERE {made} > {leased_new})")
        parts.append(f"SELECT 3, 0, {_NOTHING} FROM note")
    return "WITH " + ", ".join(ctes) + " " + " UNION ALL ".join(parts)


def parameters(
    now: int,
    uid: int,
    partition: int,
    writer: str,
    completes: list[int],
    payloads: list[bytes],
    labels: tuple[bytes, bytes, bytes],
    lease_count: int,
    deadline: int,
    cut: int,
    channel: str,
    note: str,
    step: int,
    head: int,
) -> list[Any]:
    return [
        now,
        uid,
        partition,
        writer,
        completes,
        payloads,
        *labels,
        lease_count,
        deadline,
        cut,
        channel,
        note,
        step,
        head,
    ]
