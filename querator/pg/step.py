"""One step of one SQL partition: every request the actor drained, applied inside one transaction on one
connection, in as few statements as the batch allows (all completes in one DELETE, all plain produces in
one INSERT, all leases in one UPDATE ... FOR UPDATE SKIP LOCKED). Nodes coordinate only through rows:
SKIP LOCKED hands a row to one transaction, and every lease end checks the lease is still there and
unexpired, so two nodes never hand out or end one lease twice. Deadlines are compared with `now`, the
database's time (see `DatabaseClock`), never a node's own."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from querator.engine import (
    Clear,
    Complete,
    Extend,
    Partition,
    Produce,
    Read,
    ReadItem,
    ReadItems,
    ReadStats,
    Redrive,
    ReindexExpiry,
    Release,
    Remove,
    Retry,
    SweepDedup,
)
from querator.ids import IdFormat
from querator.model import LeasedItem, PartitionCounters, PartitionStats, QueueOptions
from querator.pg import rows as R
from querator.pg.rows import Deltas, Item
from querator.pg.schema import PartitionTables, leased_until_after
from querator.records import DEAD_EXPIRED, DEAD_MAX_ATTEMPTS, DEAD_RETRY, Record


class StepPartition(Protocol):
    """What a step needs of its partition, and of the partitions it moves items to."""

    uid: int
    index: int
    tables: PartitionTables
    ids: IdFormat

    @property
    def queue_name(self) -> str: ...

    @property
    def options(self) -> QueueOptions: ...

    def dead_letter_target(self) -> StepPartition | None: ...

    def same_engine(self, partition: Partition) -> StepPartition: ...


# Timer work (ended leases, due schedules, expired items) one step does at most; the rest next step.
TIMER_BUDGET: Final = 5000

_COUNTS: Final = ", ".join(f"coalesce(sum({c}), 0)" for c in R.COUNTERS)


@dataclass(slots=True)
class StepResult:
    """What a committed step tells its actor besides the requests' answers."""

    deltas: Deltas = field(default_factory=Deltas)
    # Partitions (of this or another queue) that got ready items: their waiters may be served.
    woken: set[StepPartition] = field(default_factory=set)
    # Lease deadlines and due times this step set: when this node's timers should look again.
    deadlines: list[int] = field(default_factory=list)
    dues: list[int] = field(default_factory=list)
    expiries: list[int] = field(default_factory=list)
    sweeps: list[int] = field(default_factory=list)  # when deduplication keys stored here expire
    # Ready items seen to run out (a lease came back short): the ready estimate is 0.
    emptied: bool = False
    # Rows changed that no counter shows (an extended lease, a deduplication key, an index): the step
    # must still write its counter row, whose step number tells a lost commit's outcome.
    wrote: bool = False
    dead: dict[int, int] = field(default_factory=dict)  # dead-lettered items by records.DEAD_*
    # Other partitions that got items, with when the first of them expires (0: no expire timeout).
    arrived: dict[StepPartition, int] = field(default_factory=dict)


class SqlStep:
    """Applies operations to one partition's tables on `conn`, inside the caller's transaction."""

    def __init__(self, partition: StepPartition, conn: Any, now: int) -> None:
        self.p = partition
        self.conn = conn
        self.now = now
        self.t: PartitionTables = partition.tables
        self.uid = partition.uid
        self.index = partition.index
        self.result = StepResult()

    # -- counters --------------------------------------------------------------------------------------

    def count(self, counter: int, amount: int) -> None:
        self.result.deltas.add(self.uid, self.index, counter, amount)

    # -- moving items ----------------------------------------------------------------------------------

    async def enqueue(self, items: list[Item], due: int) -> list[int]:
        """Items at the tail now, or in the schedule until `due`, each under a new seq."""
        if not items:
            return []
        # Ready since now, or (scheduled) since its due time: QITEMS's enqueue-at, QSTATS's age.
        items = [item._replace(enqueue_at=max(due, self.now)) for item in items]
        expire = self.p.options.expire_timeout
        if expire:
            self.result.expiries.append(min(item.created_at for item in items) + expire)
        if due > self.now:
            seqs = await self.conn.fetch(R.insert_scheduled(self.t), [due] * len(items), *R.columns(items))
            self.count(R.SCHEDULED, len(items))
            self.result.dues.append(due)
        else:
            seqs = await self.conn.fetch(R.insert_ready(self.t), *R.columns(items))
            self.count(R.READY, len(items))
            self.result.woken.add(self.p)
        return sorted(r[0] for r in seqs)

    async def dead_letter(self, moves: list[tuple[int, Item, int]]) -> None:
        """Items (seq here, item, records.DEAD_* reason) leave for the dead queue, or are gone without
        one; they arrive there as new items that remember where they came from (SPEC 7)."""
        if not moves:
            return
        for _, _, why in moves:
            self.count(R.DEAD_BY_REASON[why], 1)
            self.result.dead[why] = self.result.dead.get(why, 0) + 1
        target = self.p.dead_letter_target()
        if target is None:
            return
        name = self.p.queue_name.encode()
        arrived = [
            item._replace(
                attempts=0,
                created_at=self.now,
                enqueue_at=self.now,
                source_queue=name,
                source_id=self.p.ids.one(seq).encode(),
                dead_reason=why,
            )
            for seq, item, why in moves
        ]
        await self.move_to(target, arrived)

    async def move_to(self, target: StepPartition, items: list[Item]) -> None:
        """Items arrive at the tail of another queue's partition, counted as produced there."""
        await self.conn.fetch(R.insert_ready(target.tables), *R.columns(items))
        expire = target.options.expire_timeout
        if target is self.p and expire:
            self.result.expiries.append(self.now + expire)
        elif target is not self.p:
            self.result.arrived[target] = self.now + expire if expire else 0
        deltas = self.result.deltas
        deltas.add(target.uid, target.index, R.READY, len(items))
        deltas.add(target.uid, target.index, R.PRODUCED, len(items))
        self.result.woken.add(target)

    async def requeue_or_dead(self, ended: list[tuple[int, Item]], due: int) -> None:
        """Leases ended without completion: back to the tail (or the schedule), or to the dead queue when
        attempts are used up or the item expired."""
        max_attempts = self.p.options.max_attempts
        expire = self.p.options.expire_timeout
        back: list[Item] = []
        dead: list[tuple[int, Item, int]] = []
        for seq, item in ended:
            if max_attempts and item.attempts >= max_attempts:
                dead.append((seq, item, DEAD_MAX_ATTEMPTS))
            elif expire and self.now >= item.created_at + expire:
                dead.append((seq, item, DEAD_EXPIRED))
            else:
                back.append(item)
        await self.enqueue(back, due)
        await self.dead_letter(dead)

    async def end_leases(self, seqs: list[int]) -> list[tuple[int, Item]]:
        """Delete unexpired leases among `seqs`; their items (the caller says where they go)."""
        rows = await self.conn.fetch(
            f"DELETE FROM {self.t.items} WHERE seq = ANY($1::bigint[]) AND {leased_until_after('$2')} "
            f"RETURNING {R.RETURN_ITEM}",
            seqs,
            self.now,
        )
        self.count(R.LEASED, -len(rows))
        return [(r[0], R.item_of(r)) for r in sorted(rows, key=lambda r: r[0])]

    # -- timers ----------------------------------------------------------------------------------------

    async def run_timers(self, leases: bool, schedules: bool, expiry: bool, sweep: bool) -> None:
        budget = TIMER_BUDGET
        now = self.now
        if sweep and self.p.options.dedup_window and await self.sweep_dedup(SweepDedup()) >= budget:
            self.result.sweeps.append(now)  # more to sweep: the next step goes on
        if leases:
            rows = await self.conn.fetch(
                f"DELETE FROM {self.t.items} WHERE seq IN (SELECT seq FROM {self.t.items} "
                "WHERE state = 1 AND deadline <= $1 ORDER BY deadline LIMIT $2 FOR UPDATE SKIP LOCKED) "
                f"RETURNING {R.RETURN_ITEM}",
                now,
                budget,
            )
            if len(rows) >= budget:
                self.result.deadlines.append(now)  # more ended than one pass takes: the next step goes on
            if rows:
                budget -= len(rows)
                self.count(R.LEASED, -len(rows))
                self.count(R.LEASE_EXPIRED, len(rows))
                ended = [(r[0], R.item_of(r)) for r in sorted(rows, key=lambda r: r[0])]
                await self.requeue_or_dead(ended, now)
        if schedules and budget:
            rows = await self.conn.fetch(
                f"DELETE FROM {self.t.scheduled} WHERE seq IN (SELECT seq FROM {self.t.scheduled} "
                "WHERE due_at <= $1 ORDER BY due_at, seq LIMIT $2 FOR UPDATE SKIP LOCKED) "
                f"RETURNING due_at, {R.RETURN_ITEM}",
                now,
                budget,
            )
            if len(rows) >= budget:
                self.result.dues.append(now)
            if rows:
                budget -= len(rows)
                self.count(R.SCHEDULED, -len(rows))
                expire = self.p.options.expire_timeout
                back: list[Item] = []
                dead: list[tuple[int, Item, int]] = []
                for r in sorted(rows, key=lambda r: (r[0], r[1])):
                    item = Item(*(r[i] for i in range(2, 13)))
                    if expire and now >= item.created_at + expire:
                        dead.append((r[1], item, DEAD_EXPIRED))
                    else:
                        back.append(item._replace(enqueue_at=now))
                await self.enqueue(back, now)
                await self.dead_letter(dead)
        expire = self.p.options.expire_timeout
        if expiry and expire and budget:
            await self._expire(now - expire, budget)

    async def _expire(self, created_by: int, budget: int) -> None:
        """Ready and scheduled items created at or before `created_by` go to the dead queue."""
        ready = await self.conn.fetch(
            f"DELETE FROM {self.t.items} WHERE seq IN (SELECT seq FROM {self.t.items} "
            "WHERE state = 0 AND created_at <= $1 ORDER BY created_at LIMIT $2 FOR UPDATE SKIP LOCKED) "
            f"RETURNING {R.RETURN_ITEM}",
            created_by,
            budget,
        )
        scheduled = await self.conn.fetch(
            f"DELETE FROM {self.t.scheduled} WHERE seq IN (SELECT seq FROM {self.t.scheduled} "
            "WHERE created_at <= $1 LIMIT $2 FOR UPDATE SKIP LOCKED) "
            f"RETURNING {R.RETURN_ITEM}",
            created_by,
            max(1, budget - len(ready)),
        )
        if len(ready) >= budget:
            self.result.expiries.append(self.now)
        self.count(R.READY, -len(ready))
        self.count(R.SCHEDULED, -len(scheduled))
        moves = [(r[0], R.item_of(r), DEAD_EXPIRED) for r in sorted([*ready, *scheduled], key=lambda r: r[0])]
        await self.dead_letter(moves)

    # -- operations ------------------------------------------------------------------------------------

    async def produce_plain(self, ops: list[Produce]) -> list[list[str]]:
        """Produces due now with the same labels and no DEDUP: one INSERT for all their payloads."""
        first = ops[0]
        payloads = [p for op in ops for p in op.payloads]
        rows = await self.conn.fetch(
            R.insert_plain(self.t), self.now, first.kind, first.reference, first.encoding, payloads
        )
        seqs = sorted(r[0] for r in rows)
        self.count(R.READY, len(seqs))
        self.count(R.PRODUCED, len(seqs))
        if self.p.options.expire_timeout:
            self.result.expiries.append(self.now + self.p.options.expire_timeout)
        self.result.woken.add(self.p)
        ids = list(self.p.ids.many(seqs))
        answers: list[list[str]] = []
        at = 0
        for op in ops:
            answers.append(ids[at : at + len(op.payloads)])
            at += len(op.payloads)
        return answers

    async def produce(self, op: Produce) -> list[str]:
        """A produce that is scheduled, or has DEDUP: its own statements."""
        window = self.p.options.dedup_window
        if op.dedup is not None and window:
            self.result.wrote = True
            claimed = await self.conn.fetchrow(
                "INSERT INTO querator_dedup (uid, key, first_use, partition, seqs) "
                "VALUES ($1, $2, $3, $4, '{}') ON CONFLICT (uid, key) DO UPDATE "
                "SET first_use = excluded.first_use, partition = excluded.partition, seqs = '{}' "
                "WHERE querator_dedup.first_use + $5 <= excluded.first_use RETURNING uid",
                self.uid,
                op.dedup,
                self.now,
                self.index,
                window,
            )
            if claimed is None:  # a live key: nothing is stored, the first call's ids come back
                first = await self.conn.fetchrow(
                    "SELECT partition, seqs FROM querator_dedup WHERE uid = $1 AND key = $2",
                    self.uid,
                    op.dedup,
                )
                self.count(R.DEDUPLICATED, 1)
                return list(IdFormat(self.uid, first[0]).many(first[1]))
        items = [Item(0, self.now, self.now, op.kind, op.reference, op.encoding, p) for p in op.payloads]
        seqs = await self.enqueue(items, op.due)
        self.count(R.PRODUCED, len(seqs))
        if op.dedup is not None and window:
            await self.conn.execute(
                "UPDATE querator_dedup SET seqs = $3 WHERE uid = $1 AND key = $2", self.uid, op.dedup, seqs
            )
            self.result.sweeps.append(self.now + window)
        return list(self.p.ids.many(seqs))

    async def lease(self, count: int) -> list[LeasedItem]:
        """Up to `count` ready items from the head, in FIFO order; those locked by another node's step are
        skipped, never waited for. Expired items are left to the expiry pass."""
        deadline = self.now + self.p.options.lease_timeout
        expire = self.p.options.expire_timeout
        fresh = "AND created_at > $3 " if expire else ""
        args: list[Any] = [count, deadline]
        if expire:
            args.append(self.now - expire)
        rows = await self.conn.fetch(
            f"WITH c AS (SELECT seq FROM {self.t.items} WHERE state = 0 {fresh}"
            "ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED) "
            f"UPDATE {self.t.items} t SET state = 1, attempts = t.attempts + 1, deadline = $2 "
            "FROM c WHERE t.seq = c.seq "
            "RETURNING t.seq, t.payload, t.attempts, t.kind, t.reference, t.encoding",
            *args,
        )
        if len(rows) < count:
            self.result.emptied = True
        if rows:
            self.count(R.READY, -len(rows))
            self.count(R.LEASED, len(rows))
            self.count(R.LEASED_TOTAL, len(rows))
            self.result.deadlines.append(deadline)
        return R.leased_items(self.p.ids, rows, deadline)

    async def complete(self, ops: list[Complete]) -> list[int]:
        """Every complete of the step in one DELETE; each request is answered for its own ids."""
        seqs = [seq for op in ops for seq in op.seqs]
        rows = await self.conn.fetch(
            f"DELETE FROM {self.t.items} WHERE seq = ANY($1::bigint[]) AND {leased_until_after('$2')} "
            "RETURNING seq",
            seqs,
            self.now,
        )
        ended = {r[0] for r in rows}
        self.count(R.LEASED, -len(ended))
        self.count(R.COMPLETED, len(ended))
        answers = []
        for op in ops:
            mine = ended.intersection(op.seqs)
            ended -= mine
            answers.append(len(mine))
        return answers

    async def retry(self, op: Retry) -> int:
        ended = await self.end_leases(op.seqs)
        ended = [(seq, item._replace(reason=op.reason)) for seq, item in ended]
        self.count(R.RETRIED, len(ended))
        if op.dead:
            await self.dead_letter([(seq, item, DEAD_RETRY) for seq, item in ended])
        else:
            await self.requeue_or_dead(ended, op.due)
        return len(ended)

    async def release(self, op: Release) -> int:
        """Items dealt to a consumer that went away: back to the tail, the attempt not counted."""
        ended = await self.end_leases(op.seqs)
        await self.enqueue([item._replace(attempts=max(0, item.attempts - 1)) for _, item in ended], self.now)
        return len(ended)

    async def unlease(self, seqs: list[int]) -> None:
        """Undo this step's lease of `seqs` in place (their consumer left before they were dealt)."""
        await self.conn.execute(
            f"UPDATE {self.t.items} SET state = 0, attempts = attempts - 1, deadline = 0 "
            "WHERE seq = ANY($1::bigint[])",
            seqs,
        )
        self.count(R.READY, len(seqs))
        self.count(R.LEASED, -len(seqs))
        self.count(R.LEASED_TOTAL, -len(seqs))

    async def extend(self, op: Extend) -> int:
        deadline = self.now + op.lease_for
        rows = await self.conn.fetch(
            f"UPDATE {self.t.items} SET deadline = $3 WHERE seq = ANY($1::bigint[]) "
            f"AND {leased_until_after('$2')} RETURNING seq",
            op.seqs,
            self.now,
            deadline,
        )
        if rows:
            self.result.deadlines.append(deadline)
            self.result.wrote = True
        return len(rows)

    async def remove(self, op: Remove) -> int:
        rows = await self.conn.fetch(
            f"DELETE FROM {self.t.items} WHERE seq = ANY($1::bigint[]) RETURNING state", op.seqs
        )
        scheduled = await self.conn.fetch(
            f"DELETE FROM {self.t.scheduled} WHERE seq = ANY($1::bigint[]) RETURNING seq", op.seqs
        )
        leased = sum(1 for r in rows if r[0] == 1)
        self.count(R.LEASED, -leased)
        self.count(R.READY, -(len(rows) - leased))
        self.count(R.SCHEDULED, -len(scheduled))
        return len(rows) + len(scheduled)

    async def clear(self, op: Clear) -> int:
        states = "" if op.include_leased else "WHERE state = 0 "
        rows = await self.conn.fetch(f"DELETE FROM {self.t.items} {states}RETURNING state")
        scheduled = await self.conn.fetchval(
            f"WITH d AS (DELETE FROM {self.t.scheduled} RETURNING 1) SELECT count(*) FROM d"
        )
        leased = sum(1 for r in rows if r[0] == 1)
        self.count(R.LEASED, -leased)
        self.count(R.READY, -(len(rows) - leased))
        self.count(R.SCHEDULED, -scheduled)
        return len(rows) + int(scheduled)

    async def reindex_expiry(self, op: ReindexExpiry) -> int:
        """The expire timeout was switched on or off: the index the expiry pass walks follows it."""
        await self.conn.execute(self.t.create_expiry_index() if op.enabled else self.t.drop_expiry_index())
        self.result.wrote = True
        expire = self.p.options.expire_timeout
        if op.enabled and expire:
            oldest = await self.conn.fetchval(
                f"SELECT min(created_at) FROM (SELECT min(created_at) AS created_at FROM {self.t.items} "
                f"WHERE state = 0 UNION ALL SELECT min(created_at) FROM {self.t.scheduled}) AS both_tables"
            )
            if oldest is not None:
                self.result.expiries.append(int(oldest) + expire)
        return 0

    async def redrive(self, op: Redrive) -> int:
        """Ready items, oldest first, each to where `op.target` sends it (as a fresh produce); those it
        leaves stay. Rows another node's step holds are skipped."""
        moved: dict[StepPartition, list[Item]] = {}
        taken: list[int] = []
        after = -1
        while len(taken) < op.limit:
            rows = await self.conn.fetch(
                f"SELECT {R.RETURN_ITEM} FROM {self.t.items} WHERE state = 0 AND seq > $1 ORDER BY seq "
                "LIMIT 1000 FOR UPDATE SKIP LOCKED",
                after,
            )
            if not rows:
                break
            for r in rows:
                after = r[0]
                item = R.item_of(r)
                target = op.target(_record(item))
                if target is None or len(taken) >= op.limit:
                    continue
                partition = self.p.same_engine(target)
                fresh = Item(0, self.now, self.now, item.kind, item.reference, item.encoding, item.payload)
                moved.setdefault(partition, []).append(fresh)
                taken.append(r[0])
        if not taken:
            return 0
        await self.conn.execute(f"DELETE FROM {self.t.items} WHERE seq = ANY($1::bigint[])", taken)
        self.count(R.READY, -len(taken))
        for partition, items in moved.items():
            await self.move_to(partition, items)
        return len(taken)

    async def sweep_dedup(self, op: SweepDedup) -> int:
        window = self.p.options.dedup_window
        swept = await self.conn.fetchval(
            "WITH d AS (DELETE FROM querator_dedup WHERE (uid, key) IN (SELECT uid, key FROM querator_dedup "
            "WHERE uid = $1 AND first_use + $2 <= $3 LIMIT $4) RETURNING 1) SELECT count(*) FROM d",
            self.uid,
            window,
            self.now,
            TIMER_BUDGET,
        )
        self.result.wrote = self.result.wrote or bool(swept)
        return int(swept)

    # -- reads -----------------------------------------------------------------------------------------

    async def read(self, op: Read[Any]) -> object:
        if isinstance(op, ReadStats):
            return await self.snapshot()
        if isinstance(op, ReadItems):
            rows = await self.conn.fetch(R.listing(self.t, "seq > $1"), op.after_seq, op.limit)
            expire = self.p.options.expire_timeout
            return [R.stored_item(self.p.ids, r, expire) for r in rows]
        if isinstance(op, ReadItem):
            row = await self.conn.fetchrow(R.listing(self.t, "seq = $1"), op.seq, 1)
            return None if row is None else R.stored_item(self.p.ids, row, self.p.options.expire_timeout)
        raise TypeError(f"the SQL engine has no read {type(op).__name__}")

    async def snapshot(self) -> tuple[PartitionStats, PartitionCounters, int | None]:
        """QSTATS of this partition: the counter rows of every writer summed, and the head's age."""
        row = await self.conn.fetchrow(
            f"SELECT {_COUNTS}, (SELECT enqueue_at FROM {self.t.items} WHERE state = 0 ORDER BY seq LIMIT 1) "
            "FROM querator_counters WHERE uid = $1 AND partition = $2",
            self.uid,
            self.index,
        )
        c = [int(v) for v in row[:12]]
        pending = self.result.deltas.of(self.uid, self.index)  # this step's own changes, not yet summed
        if pending is not None:
            c = [a + b for a, b in zip(c, pending, strict=True)]
        stats = PartitionStats(self.index, max(0, c[R.READY]), max(0, c[R.LEASED]), max(0, c[R.SCHEDULED]))
        dead = c[9] + c[10] + c[11]
        counters = PartitionCounters(c[3], c[4], c[5], c[6], dead, c[7], c[8], c[9], c[10], c[11])
        return stats, counters, row[12]


def _record(item: Item) -> Record:
    """The key-value record a redrive target function reads (it looks at the source queue only)."""
    return Record(
        item.attempts,
        item.created_at,
        item.enqueue_at,
        0,
        item.kind,
        item.reference,
        item.encoding,
        item.payload,
        item.reason,
        item.source_queue,
        item.source_id,
        item.dead_reason,
    )
