"""Items as the SQL engine moves them: a row of an item table, the statements that insert rows, and the
per-step counter deltas. Everything here is plain data and SQL text; nothing touches a connection."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Final, NamedTuple

from querator.ids import IdFormat
from querator.model import ItemState, LeasedItem, StoredItem
from querator.pg.schema import COUNTERS as COUNTERS
from querator.pg.schema import ITEM_COLUMNS, ITEM_TYPES, PartitionTables
from querator.records import DEAD_REASONS

# Indexes into a step's counter deltas (schema.COUNTERS order).
READY, LEASED, SCHEDULED, PRODUCED, COMPLETED, RETRIED, LEASE_EXPIRED, DEDUPLICATED, LEASED_TOTAL = range(9)
DEAD_BY_REASON: Final = {1: 9, 2: 10, 3: 11}  # records.DEAD_* -> the dead_<reason> counter


class Item(NamedTuple):
    """An item's columns besides its seq and state (schema.ITEM_COLUMNS order)."""

    attempts: int
    created_at: int
    enqueue_at: int
    kind: bytes
    reference: bytes
    encoding: bytes
    payload: bytes
    reason: bytes = b""
    source_queue: bytes = b""
    source_id: bytes = b""
    dead_reason: int = 0


_ITEM_LIST: Final = ", ".join(ITEM_COLUMNS)
# What statements return of a deleted item row: its seq, then the Item columns.
RETURN_ITEM: Final = "seq, " + _ITEM_LIST


def item_of(row: Any) -> Item:
    """The Item of a row returned with RETURN_ITEM."""
    return Item(*(row[i] for i in range(1, 12)))


def columns(items: Sequence[Item]) -> list[list[Any]]:
    """Items turned into one array per column, the parameters of an `unnest` insert."""
    return [list(column) for column in zip(*items, strict=True)] if items else [[] for _ in ITEM_COLUMNS]


def _arrays(first: int) -> str:
    return ", ".join(f"${first + i}::{kind}[]" for i, kind in enumerate(ITEM_TYPES))


def insert_ready(t: PartitionTables) -> str:
    """Rows at the tail of the ready items, each with a new seq in the order given; returns the seqs
    (sorted, they are in that order: one statement takes them from the sequence one after another)."""
    return (
        f"INSERT INTO {t.items} (seq, state, deadline, {_ITEM_LIST}) "
        f"SELECT nextval('{t.seq}'), 0, 0, {_ITEM_LIST} "
        f"FROM unnest({_arrays(1)}) WITH ORDINALITY AS u({_ITEM_LIST}, n) ORDER BY n RETURNING seq"
    )


def insert_plain(t: PartitionTables) -> str:
    """The hot produce: payloads that share their labels, at `$1` (created and ready), as new items."""
    return (
        f"INSERT INTO {t.items} (seq, state, deadline, {_ITEM_LIST}) "
        f"SELECT nextval('{t.seq}'), 0, 0, 0, $1, $1, $2, $3, $4, p, '', '', '', 0 "
        "FROM unnest($5::bytea[]) WITH ORDINALITY AS u(p, n) ORDER BY n RETURNING seq"
    )


def insert_scheduled(t: PartitionTables) -> str:
    """Rows into the schedule, due at `$1[i]`, each with a new seq; returns the seqs."""
    return (
        f"INSERT INTO {t.scheduled} (seq, due_at, {_ITEM_LIST}) "
        f"SELECT nextval('{t.seq}'), due_at, {_ITEM_LIST} "
        f"FROM unnest($1::bigint[], {_arrays(2)}) WITH ORDINALITY AS u(due_at, {_ITEM_LIST}, n) "
        "ORDER BY n RETURNING seq"
    )


def upsert_counters(notify: bool) -> str:
    """Add a step's deltas to its own rows (one per partition it touched) and mark them with the step's
    number (`$16`); with `notify`, also wake the other nodes once for the whole commit (`$17` channel,
    `$18` payload)."""
    names = ", ".join(COUNTERS)
    arrays = ", ".join(f"${i + 4}::bigint[]" for i in range(len(COUNTERS)))
    sums = ", ".join(f"{c} = c.{c} + excluded.{c}" for c in COUNTERS)
    upsert = (
        f"INSERT INTO querator_counters AS c (uid, partition, writer, {names}, last_step) "
        f"SELECT uid, partition, $3, {names}, $16 FROM unnest($1::bigint[], $2::integer[], {arrays}) "
        f"AS u(uid, partition, {names}) "
        f"ON CONFLICT (uid, partition, writer) DO UPDATE SET {sums}, last_step = excluded.last_step"
    )
    if not notify:
        return upsert
    return f"WITH counted AS ({upsert}) SELECT pg_notify($17, $18)"


class Deltas:
    """What one step changed in each partition's counters, by (queue uid, partition)."""

    __slots__ = ("rows",)

    def __init__(self) -> None:
        self.rows: dict[tuple[int, int], list[int]] = {}

    def add(self, uid: int, partition: int, counter: int, amount: int) -> None:
        if not amount:
            return
        row = self.rows.get((uid, partition))
        if row is None:
            row = self.rows[(uid, partition)] = [0] * len(COUNTERS)
        row[counter] += amount

    def touch(self, uid: int, partition: int) -> None:
        """Make sure the partition has a row, even with no change (it carries the step's number)."""
        if (uid, partition) not in self.rows:
            self.rows[(uid, partition)] = [0] * len(COUNTERS)

    def of(self, uid: int, partition: int) -> list[int] | None:
        return self.rows.get((uid, partition))

    def parameters(self) -> list[Any]:
        """$1 uids, $2 partitions, then one array per counter ($4 ...); $3 is the writer."""
        keys = sorted(self.rows)
        values = [self.rows[k] for k in keys]
        return [[k[0] for k in keys], [k[1] for k in keys], *map(list, zip(*values, strict=True))]


def leased_items(ids: IdFormat, rows: Iterable[Any], deadline: int) -> list[LeasedItem]:
    """Rows returned by a lease (seq, payload, attempts, kind, reference, encoding), in seq order."""
    return [
        LeasedItem(ids.one(r[0]), r[1], r[2], deadline, r[3], r[4], r[5])
        for r in sorted(rows, key=lambda r: r[0])
    ]


_STATES: Final[tuple[ItemState, ...]] = ("ready", "leased", "scheduled")


def stored_item(ids: IdFormat, row: Any, expire_timeout: int) -> StoredItem:
    """A QITEMS / QGET row: seq, state (0 ready, 1 leased, 2 scheduled), deadline, then the Item."""
    item = Item(*(row[i] for i in range(3, 14)))
    state = _STATES[row[1]]
    return StoredItem(
        id=ids.one(row[0]),
        state=state,
        attempts=item.attempts,
        created_at=item.created_at,
        enqueue_at=item.enqueue_at,
        lease_deadline=row[2] if state == "leased" else 0,
        expire_deadline=item.created_at + expire_timeout if expire_timeout else 0,
        kind=item.kind,
        reference=item.reference,
        encoding=item.encoding,
        payload=item.payload,
        reason=item.reason,
        source_queue=item.source_queue.decode("utf-8", "surrogateescape"),
        source_id=item.source_id.decode("ascii", "replace"),
        dead_reason=DEAD_REASONS[item.dead_reason] if item.dead_reason < len(DEAD_REASONS) else "",
    )


def listing(t: PartitionTables, where: str) -> str:
    """QITEMS / QGET: ready, leased and scheduled items of the partition in seq order (`where` on seq)."""
    return (
        f"(SELECT seq, state, deadline, {_ITEM_LIST} FROM {t.items} WHERE {where} ORDER BY seq LIMIT $2) "
        f"UNION ALL (SELECT seq, 2, due_at, {_ITEM_LIST} FROM {t.scheduled} WHERE {where} "
        "ORDER BY seq LIMIT $2) ORDER BY seq LIMIT $2"
    )
