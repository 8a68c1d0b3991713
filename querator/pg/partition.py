"""SqlPartition: one asyncio task applies one partition's requests, in the order they were submitted,
as one PostgreSQL transaction per step (group commit per node, as the key-value actor does with one write
and one sync). Its counts (`ready`, `leased`, `scheduled`) are this node's estimates: exact after its own
steps, refreshed from the shared counter rows every second and woken by other nodes' notifications;
they only steer spreading and waking, never a decision about an item (those are made in SQL)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from time import perf_counter_ns
from typing import Any, Final, TypeVar

import asyncpg

from querator.engine import (
    Clear,
    Complete,
    EngineContext,
    Extend,
    Lease,
    Nudge,
    Operation,
    Partition,
    Produce,
    QueueHandle,
    Read,
    Redrive,
    ReindexExpiry,
    Release,
    Remove,
    Request,
    Retry,
    SweepDedup,
)
from querator.errors import NoQueueError, OutcomeUnknownError, QueratorError, TryAgainError
from querator.ids import IdFormat, seq_of
from querator.model import LeasedItem, QueueOptions
from querator.pg import cycle
from querator.pg import rows as R
from querator.pg.lanes import CompleteLane, LaneContext, ProduceLane
from querator.pg.schema import PartitionTables
from querator.pg.step import SqlStep, StepResult
from querator.pg.timers import EXPIRY, KNOWN_PASS_S, LEASES, Passes, TimerPlan
from querator.records import Record
from querator.steps import answer, cut_step, log_dead_letters
from querator.store.base import WriteSet

log = logging.getLogger("querator.partition")

T = TypeVar("T")

# Errors that mean the database cannot be used now: the step is rolled back (or never began), every
# request in it answers -TRYAGAIN, and the next step tries again.
DATABASE_ERRORS: Final = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    OSError,
    asyncio.TimeoutError,
)

_Result = tuple["asyncio.Future[Any]", object]
# How long a step whose commit lost its connection waits for the database to say whether it committed.
_SETTLE_S: Final = 15.0
# The lease's head hint falls back to the start of the table this often (seconds; see `_lease_head`).
_HEAD_RESET_S: Final = 1.0


@dataclass(slots=True)
class SqlShared:
    """What every SQL partition of one node shares."""

    context: EngineContext
    node: str  # this node's id, in counter rows and notifications
    notify: bool  # send NOTIFY on commits that made items ready (postgres-notify)
    channel: str
    acquire_timeout: float = 5.0
    pool: Any = None  # asyncpg.Pool, set when the backend opens
    # Queue uid -> the future of its catalog write still in flight (a create or partition growth): the
    # queue's partitions wait for it, so their tables exist before their first step.
    gates: dict[int, asyncio.Future[None]] = field(default_factory=dict)

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Any]:
        """A pooled connection for one step. Giving it back cannot fail the step: once the block is done,
        its statements committed (or failed on their own), and a connection that broke just after its
        last reply is the pool's to drop, not a -TRYAGAIN for work that was applied."""
        conn = await self.pool.acquire(timeout=self.acquire_timeout)
        try:
            yield conn
        finally:
            try:
                await self.pool.release(conn)
            except DATABASE_ERRORS as exc:
                log.debug("a connection failed on its way back to the pool: %r", exc)


class SqlPartition:
    """Implements `engine.Partition` for the SQL engine (backend postgres)."""

    def __init__(self, shared: SqlShared, queue: QueueHandle, index: int) -> None:
        self._shared = shared
        self._context = shared.context
        self._clock = shared.context.clock
        self._queue = queue
        self.index = index
        self.uid = queue.uid
        self.tables = PartitionTables(queue.uid, index)
        self.ids = IdFormat(queue.uid, index)
        self._writer = f"{shared.node}/{queue.uid}/{index}"
        self._waiters = queue.waiters
        self._waiting = queue.waiters.line
        lanes = LaneContext(
            shared.context,
            shared.connection,
            self.tables,
            queue.name,
            self._settle_lost_commit,
            self._unavailable,
            _lost,
            DATABASE_ERRORS,
        )
        # Completes and plain produces on lanes of their own beside the main steps (lanes.py).
        self._completes = CompleteLane(lanes, f"{self._writer}/c", self._completed_beside)
        self._produces = ProduceLane(
            lanes,
            f"{self._writer}/p",
            lambda seqs: list(self.ids.many(seqs)),
            self._note,
            self._produced_beside,
        )
        # The place of a read or a lease end among the completes: how many had been submitted before it.
        self._read_marks: dict[asyncio.Future[Any], int] = {}
        # The place of a main-step request among the lane's produces.
        self._produce_marks: dict[asyncio.Future[Any], int] = {}
        self._lease_ends_in_step = False
        self._step_commutes = True  # the running main step has only leases, completes and wake-ups
        self._top_ups: set[asyncio.Task[None]] = set()  # short leases waiting for the produces before them
        # Estimates (see the module's text).
        self.ready = 0
        self.leased = 0
        self.scheduled = 0
        self._estimate_changes = 0
        self._maybe_ready = True  # items may be ready that the estimate does not show: look
        self._timers = TimerPlan(shared.context.loop)
        self._inbox: list[Request[Any]] = []
        self._wake: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._stepping = False
        self._step_number = 0
        self._head = 0
        self._head_reset_at = 0.0
        self._failing_since = 0.0

    # -- what the step reads of its queue ---------------------------------------------------------------

    @property
    def queue_name(self) -> str:
        return self._queue.name

    @property
    def options(self) -> QueueOptions:
        return self._queue.options

    def dead_letter_target(self) -> SqlPartition | None:
        target = self._queue.dead_letter_partition()
        return None if target is None else self.same_engine(target)

    def same_engine(self, partition: Partition) -> SqlPartition:
        if not isinstance(partition, SqlPartition):
            raise TypeError("items move between partitions of one engine only")
        return partition

    # -- estimates --------------------------------------------------------------------------------------

    def estimates_version(self) -> int | None:
        """Changes this node made to the estimates so far, or None while a commit of its own is in flight.
        The backend's refresh applies a sum only if this was not None and the same before and after its
        query: a sum read around a commit of this node's would count it twice, or undo it."""
        if self._stepping or self._completes.busy or self._produces.busy or self._top_ups:
            return None
        return self._estimate_changes

    def refresh(self, ready: int, leased: int, scheduled: int) -> None:
        """The counts summed over every node's counter rows (the backend's periodic refresh)."""
        more = ready > self.ready
        self.ready, self.leased, self.scheduled = max(0, ready), max(0, leased), max(0, scheduled)
        if more and self._waiting:
            self.poke()

    @property
    def stopped(self) -> bool:
        return self._stopping and (self._task is None or self._task.done())

    @property
    def has_waiters(self) -> bool:
        return bool(self._waiting)

    def poke(self) -> None:
        """Items may have become ready here (another node's commit, a move from another queue)."""
        self._maybe_ready = True
        self.wake()

    def expect_expiry(self, when: int) -> None:
        """Items that arrived from another queue's step expire at `when`."""
        self._timers.expect(EXPIRY, when)
        self.wake()

    def apply_deltas(self, deltas: list[int]) -> None:
        self._estimate_changes += 1
        self.ready = max(0, self.ready + deltas[R.READY])
        self.leased = max(0, self.leased + deltas[R.LEASED])
        self.scheduled = max(0, self.scheduled + deltas[R.SCHEDULED])

    # -- engine.Partition -------------------------------------------------------------------------------

    def start(self) -> None:
        self._clock.subscribe(self.wake)
        self._task = self._context.loop.create_task(
            self._run(), name=f"partition {self._queue.name}/{self.index}"
        )
        self._completes.start(f"completes {self._queue.name}/{self.index}")
        self._produces.start(f"produces {self._queue.name}/{self.index}")

    async def stop(self, error: QueratorError | None = None) -> None:
        self._clock.unsubscribe(self.wake)
        if error is not None:
            for request in self._inbox:
                if not request.future.done():
                    request.future.set_exception(error)
            self._inbox.clear()
        self._stopping = True
        self.wake()
        if self._task is not None:
            await asyncio.shield(self._task)
        await self._completes.stop(error)
        await self._produces.stop(error)

    def _completed_beside(self, count: int) -> None:
        """The complete lane ended `count` leases."""
        self._estimate_changes += 1
        self.leased = max(0, self.leased - count)

    def _produced_beside(self, count: int, now: int) -> None:
        """The produce lane made `count` items ready."""
        self._estimate_changes += 1
        self.ready += count
        if count and self.options.expire_timeout:
            self._timers.expect(EXPIRY, now + self.options.expire_timeout)
        if self._waiting:
            self.poke()  # a consumer began to wait here while the statement ran

    def _note(self) -> tuple[str, str] | None:
        """The notification a commit that made items ready sends: (channel, payload), or None."""
        if not self._shared.notify:
            return None
        return self._shared.channel, f"{self._shared.node} {self.uid}"

    def wake(self) -> None:
        wake = self._wake
        if wake is not None and not wake.done():
            wake.set_result(None)

    def pending(self) -> int:
        return len(self._inbox) + self._completes.pending() + self._produces.pending()

    def submit(self, op: Operation[T]) -> asyncio.Future[T]:
        if self._stopping:
            raise TryAgainError(f"partition is stopping; queue '{self._queue.name}'")
        if self.pending() >= self._context.inbox_limit:
            raise TryAgainError(f"partition is overloaded; queue '{self._queue.name}' partition {self.index}")
        if type(op) is Complete and not self._lease_ends_waiting():
            return self._completes.submit(op)
        if type(op) is Produce and self._produce_beside(op):
            return self._produces.submit(op)
        future: asyncio.Future[T] = self._context.loop.create_future()
        self._inbox.append(Request(op, future, op.weight))
        if isinstance(op, Read) or type(op) in _BY_IDS:
            # It must see the completes submitted before it (a read, a retry of a completed id).
            self._read_marks[future] = self._completes.submitted
        if self._produces.busy:
            self._produce_marks[future] = self._produces.submitted  # and every produce before it
        self.wake()
        return future

    def _produce_beside(self, op: Produce) -> bool:
        """Whether a produce goes to the produce lane (see lanes.py): a plain one, no consumer waiting here
        to be dealt its items in the same statement, and nothing in the main steps it must follow."""
        if op.due > self._clock.now_ms() or (op.dedup is not None and self.options.dedup_window):
            return False
        if self._waiting or not self._step_commutes:
            return False
        return all(type(r.op) in _COMMUTE for r in self._inbox)

    def _lease_ends_waiting(self) -> bool:
        """A retry, extend, release or remove is waiting or being applied: a complete after it goes
        behind it, in the main steps, so one caller's calls on one id keep their order."""
        return self._lease_ends_in_step or any(type(r.op) in _BY_IDS for r in self._inbox)

    def read(self, op: Read[T]) -> asyncio.Future[T]:
        """Always through a step: the database is read after the requests submitted before."""
        return self.submit(op)

    def accept_moved(self, ws: WriteSet, record: Record, now: int) -> None:
        raise TypeError("the SQL engine moves items between queues in SQL, not in a write set")

    # -- the loop --------------------------------------------------------------------------------------

    async def _run(self) -> None:
        loop = self._context.loop
        gate = self._shared.gates.get(self.uid)
        if gate is not None:
            await asyncio.wait([gate])  # the tables exist once the catalog write committed
        await self._load()
        while True:
            now = self._clock.now_ms()
            if not self._inbox and not self._timers.due(now) and not self._should_deal():
                if self._stopping:
                    return
                self._wake = loop.create_future()
                delay = max(KNOWN_PASS_S / 2, (self._timers.next_at() - now) / 1000)
                handle = loop.call_later(delay, self.wake)
                try:
                    await self._wake
                finally:
                    self._wake = None
                    handle.cancel()
                continue
            self._stepping = True
            try:
                await self._step(now)
            finally:
                self._stepping = False
            await asyncio.sleep(0)  # let the other connections and partitions run

    async def _load(self) -> None:
        """Learn the partition's counts and its next timers from the database, as the key-value engine
        reads its leases and indexes at start: a schedule due in 3 s fires in 3 s, not at the next pass."""
        t = self.tables
        version = self.estimates_version()  # a lane may commit while this reads (see refresh)
        try:
            async with self._shared.connection() as conn:
                row = await conn.fetchrow(
                    f"SELECT (SELECT min(deadline) FROM {t.items} WHERE state = 1), "
                    f"(SELECT min(due_at) FROM {t.scheduled}), "
                    f"(SELECT min(created_at) FROM {t.items} WHERE state = 0), "
                    f"(SELECT min(created_at) FROM {t.scheduled}), "
                    "(SELECT min(first_use) FROM querator_dedup WHERE uid = $1), "
                    "(SELECT row(coalesce(sum(ready), 0), coalesce(sum(leased), 0), "
                    "coalesce(sum(scheduled), 0)) FROM querator_counters WHERE uid = $1 AND partition = $2)",
                    self.uid,
                    self.index,
                )
        except (*DATABASE_ERRORS, QueratorError) as exc:
            log.warning("could not load partition %s/%d: %r", self._queue.name, self.index, exc)
            return
        deadline, due, ready_created, scheduled_created, first_use, counts = row
        if version is not None and self.estimates_version() == version:
            self.refresh(int(counts[0]), int(counts[1]), int(counts[2]))
        options = self._queue.options
        created = [c for c in (ready_created, scheduled_created) if c is not None]
        self._timers.expect_each(
            (
                [deadline],
                [due],
                [min(created) + options.expire_timeout if created and options.expire_timeout else None],
                [
                    first_use + options.dedup_window
                    if first_use is not None and options.dedup_window
                    else None
                ],
            )
        )

    def _lease_head(self) -> int:
        """Where a lease's scan of the primary key starts. Completed items leave dead index entries at the
        head until vacuum removes them, and a scan from 0 walks them all (after a million completes, a
        million of them). Rows below the hint can still be ready (a produce on another node that took its
        seq earlier but committed later, a lease undone in place), so the hint falls back to 0 every
        `_HEAD_RESET_S`: such a row waits at most that long."""
        loop_time = self._context.loop.time()
        if loop_time >= self._head_reset_at:
            self._head_reset_at = loop_time + _HEAD_RESET_S
            self._head = 0
        return self._head

    def _should_deal(self) -> bool:
        return bool(self._waiting) and not self._queue.paused and (self.ready > 0 or self._maybe_ready)

    @property
    def idle(self) -> bool:
        """Nothing submitted, no step running, no timer due: what a test waits for after moving a clock."""
        if self._stopping:
            return True
        return (
            not self._inbox
            and not self._stepping
            and not self._completes.busy
            and not self._produces.busy
            and not self._top_ups
            and self._timers.quiet(self._clock.now_ms())
        )

    def _timer_passes(self, now: int) -> Passes:
        options = self._queue.options
        return self._timers.passes(
            now,
            leased=self.leased > 0,
            scheduled=self.scheduled > 0,
            items=self.ready > 0 or self.scheduled > 0,
            expire=bool(options.expire_timeout),
            sweeps=self.index == 0 and bool(options.dedup_window),
        )

    def _take_inbox(self) -> list[Request[Any]]:
        step, self._inbox = cut_step(self._inbox)
        return step

    # -- one step --------------------------------------------------------------------------------------

    async def _step(self, now: int) -> None:
        taken = self._take_inbox()
        marks = [self._read_marks.pop(r.future) for r in taken if r.future in self._read_marks]
        produce_marks = {
            r.future: self._produce_marks.pop(r.future) for r in taken if r.future in self._produce_marks
        }
        inbox = [r for r in taken if not r.future.done()]
        timers = self._timer_passes(now)
        if not inbox and not any(timers) and not self._should_deal():
            return
        self._step_commutes = all(type(r.op) in _COMMUTE for r in inbox)
        try:
            await self._step_kind(now, inbox, marks, produce_marks, timers)
        finally:
            self._step_commutes = True

    async def _step_kind(
        self,
        now: int,
        inbox: list[Request[Any]],
        marks: list[int],
        produce_marks: dict[asyncio.Future[Any], int],
        timers: Passes,
    ) -> None:
        one_statement = not any(timers) and self._one_statement(inbox, now)
        # Requests see the produces submitted before them. A lease in the common step need not wait for
        # them: only one that comes back short can have missed their items (see `_top_up`).
        waits = [
            m
            for r in inbox
            if (m := produce_marks.get(r.future, 0)) and not (one_statement and type(r.op) is Lease)
        ]
        if waits:
            await self._produces.applied_to(max(waits))
            now = self._clock.now_ms()
        if one_statement:
            applied = self._produces.applied
            behind = {f: m for f, m in produce_marks.items() if m > applied}
            await self._step_cycle(now, inbox, behind)
            return
        if marks:
            await self._completes.applied_to(max(marks))  # the completes made before them have committed
        self._lease_ends_in_step = any(type(r.op) in _BY_IDS for r in inbox)
        try:
            await self._step_transaction(now, inbox, timers)
        finally:
            self._lease_ends_in_step = False

    async def _step_transaction(self, now: int, inbox: list[Request[Any]], timers: Passes) -> None:
        started = perf_counter_ns()
        results: list[_Result] = []
        step: SqlStep | None = None
        error: QueratorError | None = None
        number = self._next_step()
        committing = False
        pid: int | None = None
        try:
            async with self._shared.connection() as conn:
                pid = conn.get_server_pid()
                transaction = conn.transaction()
                await transaction.start()
                try:
                    step = SqlStep(self, conn, now)
                    if any(timers):
                        await step.run_timers(*timers)
                    results = await self._apply(step, inbox)
                    if self._should_deal():
                        results.extend(await self._deal(step))
                    await self._write_counters(conn, step.result, number)
                except BaseException:
                    with contextlib.suppress(Exception):
                        await transaction.rollback()
                    raise
                committing = True
                await transaction.commit()
        except asyncpg.UndefinedTableError:
            error = NoQueueError(self._queue.name)  # deleted through another node
        except DATABASE_ERRORS as exc:
            if committing and _lost(exc):
                committed = await self._settle_lost_commit(self._writer, number, pid, now)
                if committed is not True:
                    error = self._unavailable(exc) if committed is False else OutcomeUnknownError(repr(exc))
            else:
                error = self._unavailable(exc)
        except Exception:
            log.exception("step failed on %s/%d", self._queue.name, self.index)
            error = QueratorError("internal error; see the server log")
        if error is not None or step is None:
            self._resolve([(r.future, None) for r in inbox] + results, error or QueratorError("no step"))
            return
        self._failing_since = 0.0
        self._committed(step.result)
        on_commit = self._context.on_commit
        if on_commit is not None:
            on_commit(perf_counter_ns() - started)
        self._resolve(results, None)

    def _next_step(self) -> int:
        self._step_number += 1
        return self._step_number

    async def _settle_lost_commit(self, writer: str, number: int, pid: int | None, began: int) -> bool | None:
        """The connection was lost while step `number` was committing: find out whether it committed.

        The step's own counter row carries its number in the same transaction. Its old server process is
        ended first (it might still be waiting to commit), then the row read: True (committed: its answers
        stand), False (not: -TRYAGAIN is the truth), None (the database did not come back in time)."""
        loop = self._context.loop
        give_up = loop.time() + _SETTLE_S
        while loop.time() < give_up:
            try:
                async with self._shared.connection() as conn:
                    if pid is not None:
                        # Only the process of the lost connection: started before the step, not a new
                        # process that took its pid after a restart.
                        old = "pid = $1 AND backend_start < to_timestamp($2 / 1000.0)"
                        await conn.execute(
                            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE {old}", pid, began
                        )
                        while await conn.fetchval(
                            f"SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE {old})", pid, began
                        ):
                            await asyncio.sleep(0.05)
                    last = await conn.fetchval(
                        "SELECT last_step FROM querator_counters "
                        "WHERE uid = $1 AND partition = $2 AND writer = $3",
                        self.uid,
                        self.index,
                        writer,
                    )
                    log.warning(
                        "commit outcome settled after a lost connection",
                        extra={"fields": {"queue": self._queue.name, "committed": last == number}},
                    )
                    return bool(last == number)
            except DATABASE_ERRORS:
                await asyncio.sleep(0.2)
        return None

    def _one_statement(self, inbox: list[Request[Any]], now: int) -> bool:
        """Whether the step is the common one `cycle.py` does in one statement: completes, produces due
        now without DEDUP and with one set of labels, leases."""
        labels: tuple[bytes, bytes, bytes] | None = None
        dedup = bool(self.options.dedup_window)
        for request in inbox:
            op = request.op
            kind = type(op)
            if kind is Complete or kind is Lease or kind is Nudge:
                continue
            if kind is not Produce:
                return False
            assert isinstance(op, Produce)
            if op.due > now or (op.dedup is not None and dedup):
                return False
            if labels is None:
                labels = (op.kind, op.reference, op.encoding)
            elif labels != (op.kind, op.reference, op.encoding):
                return False
        return True

    async def _step_cycle(
        self, now: int, inbox: list[Request[Any]], behind: dict[asyncio.Future[Any], int] | None = None
    ) -> None:
        """The common step as one statement (cycle.py). `behind`: the leases that ran before every produce
        submitted ahead of them had committed, with the mark to wait for."""
        started = perf_counter_ns()
        completes: list[Complete] = []
        produces: list[Produce] = []
        leases: list[Lease] = []
        for request in inbox:
            op = request.op
            if isinstance(op, Complete):
                completes.append(op)
            elif isinstance(op, Produce):
                produces.append(op)
            elif isinstance(op, Lease):
                leases.append(op)
            else:
                self._maybe_ready = True  # a Nudge: deal to the waiters below
        paused = self._queue.paused
        deal = bool(self._waiting) and not paused and (self.ready > 0 or self._maybe_ready or bool(produces))
        wanted = sum(w.count for w in self._waiting if not w.future.done()) if deal else 0
        if deal:
            # Cleared before the statement: a wake-up that arrives while it runs (a commit its snapshot
            # may not see) must survive it, or the waiter waits for the next poll.
            self._maybe_ready = False
        asked = 0 if paused else sum(op.count for op in leases)
        count = asked + wanted
        payloads = [p for op in produces for p in op.payloads]
        options = self.options
        shape = cycle.Shape(
            bool(completes), bool(payloads), count > 0, bool(options.expire_timeout), self._shared.notify
        )
        labels = (
            (produces[0].kind, produces[0].reference, produces[0].encoding) if produces else (b"", b"", b"")
        )
        deadline = now + options.lease_timeout
        note = f"{self._shared.node} {self.uid}"
        number = self._next_step()
        sent = False
        pid: int | None = None
        try:
            async with self._shared.connection() as conn:
                pid = conn.get_server_pid()
                sent = True
                rows = await conn.fetch(
                    cycle.statement(self.tables, shape),
                    *cycle.parameters(
                        now,
                        self.uid,
                        self.index,
                        self._writer,
                        [seq for op in completes for seq in op.seqs],
                        payloads,
                        labels,
                        count,
                        deadline,
                        now - options.expire_timeout,
                        self._shared.channel,
                        note,
                        number,
                        self._lease_head(),
                    ),
                )
        except asyncpg.UndefinedTableError:
            self._resolve([(r.future, None) for r in inbox], NoQueueError(self._queue.name))
            return
        except DATABASE_ERRORS as exc:
            failure: QueratorError = self._unavailable(exc)
            # Autocommit: the statement may have committed. If it did, its answers are lost with the
            # connection, and neither a success nor an error can be sent truthfully.
            lost = sent and _lost(exc)
            if lost and await self._settle_lost_commit(self._writer, number, pid, now) is not False:
                failure = OutcomeUnknownError(repr(exc))
            self._resolve([(r.future, None) for r in inbox], failure)
            return
        self._failing_since = 0.0
        ended: set[int] = set()
        made: list[int] = []
        leased: list[Any] = []
        for row in rows:
            part = row[0]
            if part == 0:
                ended.add(row[1])
            elif part == 1:
                made.append(row[1])
                if row[2] == 1:
                    leased.append(row[1:])
            elif part == 2:
                leased.append(row[1:])
        made.sort()
        took = [row[1] for row in rows if row[0] == 2]
        if took:
            # Ready rows left behind the hint: none when the lease was short, else the lowest one it took.
            self._head = max(took) + 1 if len(leased) < count else min(took)
        leased.sort(key=lambda r: r[0])
        items = [LeasedItem(self.ids.one(r[0]), r[2], r[3], deadline, r[4], r[5], r[6]) for r in leased]
        results: list[_Result] = []
        ids = list(self.ids.many(made))
        at = 0
        left = set(ended)
        taken = 0
        for request in inbox:
            op = request.op
            if isinstance(op, Complete):
                mine = left.intersection(op.seqs)
                left -= mine
                results.append((request.future, len(mine)))
            elif isinstance(op, Produce):
                results.append((request.future, ids[at : at + len(op.payloads)]))
                at += len(op.payloads)
            elif isinstance(op, Lease):
                got = [] if paused else items[taken : taken + op.count]
                taken += len(got)
                mark = behind.get(request.future) if behind else None
                if mark is not None and len(got) < op.count and not paused:
                    self._top_up(request, got, mark)
                else:
                    results.append((request.future, got))
            else:
                results.append((request.future, None))
        self.apply_deltas(
            [len(made) - len(leased), len(leased) - len(ended), 0, *([0] * (len(R.COUNTERS) - 3))]
        )
        if leased:
            self._timers.expect(LEASES, deadline)
        if made and options.expire_timeout:
            self._timers.expect(EXPIRY, now + options.expire_timeout)
        if len(items) < count:
            self.ready = 0
        if deal:
            rest = items[taken:]
            dealt = self._waiters.deal(lambda n: rest[:n]) if rest else []
            results.extend(dealt)
            given = sum(len(got) for _, got in dealt)
            if given < len(rest):
                # A waiter left while the statement ran: its items go back through a normal step.
                self.submit(Release([seq_of(item.id) for item in rest[given:]]))
        on_commit = self._context.on_commit
        if on_commit is not None:
            on_commit(perf_counter_ns() - started)
        self._resolve(results, None)

    def _top_up(self, request: Request[Any], got: list[LeasedItem], mark: int) -> None:
        """A lease came back short while produces submitted before it were still committing: their items
        may be what it missed (one caller's pipelined QPRODUCE then QLEASE). Once they have committed, a
        second lease asks for the rest, and the request is answered with both."""
        op = request.op
        assert isinstance(op, Lease)

        async def finish() -> None:
            more: list[LeasedItem] = []
            try:
                await self._produces.applied_to(mark)
                if not self._stopping:
                    future: asyncio.Future[list[LeasedItem]] = self._context.loop.create_future()
                    self._inbox.append(Request(Lease(op.count - len(got)), future, op.count - len(got)))
                    self.wake()
                    more = await future
            except QueratorError:
                pass  # the items already leased are still the answer
            if request.future.done():
                self._release([*got, *more])  # the caller went away meanwhile
            else:
                request.future.set_result([*got, *more])

        task = self._context.loop.create_task(finish(), name=f"lease top-up {self._queue.name}/{self.index}")
        self._top_ups.add(task)
        task.add_done_callback(self._top_ups.discard)

    def _release(self, items: list[LeasedItem]) -> None:
        if items:
            with contextlib.suppress(QueratorError):
                self.submit(Release([seq_of(item.id) for item in items]))

    def _unavailable(self, exc: BaseException) -> TryAgainError:
        """The database failed this step: log once per outage, not per step."""
        loop_time = self._context.loop.time()
        if not self._failing_since:
            self._failing_since = loop_time
            log.warning(
                "database unavailable",
                extra={"fields": {"queue": self._queue.name, "partition": self.index, "error": repr(exc)}},
            )
        return TryAgainError(f"database unavailable; {type(exc).__name__}: {exc}")

    async def _apply(self, step: SqlStep, inbox: list[Request[Any]]) -> list[_Result]:
        """Each request's answer. A read answers at its place in the order: the writes before it are
        applied first, grouped so the step needs few statements (see `_apply_writes`)."""
        answers: dict[int, object] = {}
        writes: list[int] = []
        for i, request in enumerate(inbox):
            if isinstance(request.op, Read):
                await self._apply_writes(step, inbox, writes, answers)
                writes = []
                answers[i] = await step.read(request.op)
            else:
                writes.append(i)
        await self._apply_writes(step, inbox, writes, answers)
        return [(inbox[i].future, answers[i]) for i in range(len(inbox)) if i in answers]

    async def _apply_writes(
        self, step: SqlStep, inbox: list[Request[Any]], indexes: list[int], answers: dict[int, object]
    ) -> None:
        """Writes between two reads: lease ends first, in order (consecutive completes in one DELETE),
        then produces (plain ones in one INSERT per label set), then leases (one UPDATE for all), then the
        rest in order. Concurrent callers may be served in any order; one caller's pipelined calls keep
        theirs where it matters (a lease sees the items produced before it, a complete ends a lease
        dealt before it)."""
        plain: dict[tuple[bytes, bytes, bytes], list[int]] = {}
        leases: list[int] = []
        later: list[int] = []
        completes: list[int] = []

        async def flush_completes() -> None:
            if completes:
                counts = await step.complete([_as(Complete, inbox[i].op) for i in completes])
                answers.update(zip(completes, counts, strict=True))
                completes.clear()

        for i in indexes:
            op = inbox[i].op
            if isinstance(op, Complete):
                completes.append(i)
                continue
            if isinstance(op, (Retry, Release, Extend, Remove)):
                await flush_completes()
                answers[i] = await _BY_IDS[type(op)](step, op)
            elif isinstance(op, Produce):
                if op.due <= step.now and (op.dedup is None or not self.options.dedup_window):
                    plain.setdefault((op.kind, op.reference, op.encoding), []).append(i)
                else:
                    later.append(i)
            elif isinstance(op, Lease):
                leases.append(i)
            else:
                later.append(i)
        await flush_completes()
        for group in plain.values():
            ids = await step.produce_plain([_as(Produce, inbox[i].op) for i in group])
            answers.update(zip(group, ids, strict=True))
        for i in later:
            op = inbox[i].op
            if isinstance(op, Produce):
                answers[i] = await step.produce(op)
        if leases:
            await self._lease(step, inbox, leases, answers)
        for i in later:
            op = inbox[i].op
            if not isinstance(op, Produce):
                answers[i] = await self._other(step, op)

    async def _lease(
        self, step: SqlStep, inbox: list[Request[Any]], leases: list[int], answers: dict[int, object]
    ) -> None:
        if self._queue.paused:  # paused after these leases were handed over: they answer empty
            answers.update((i, []) for i in leases)
            return
        counts = [_as(Lease, inbox[i].op).count for i in leases]
        items = await step.lease(sum(counts))
        at = 0
        for i, count in zip(leases, counts, strict=True):
            answers[i] = items[at : at + count]
            at += count

    async def _other(self, step: SqlStep, op: Operation[Any]) -> object:
        if isinstance(op, Clear):
            return await step.clear(op)
        if isinstance(op, ReindexExpiry):
            return await step.reindex_expiry(op)
        if isinstance(op, Redrive):
            return await step.redrive(op)
        if isinstance(op, SweepDedup):
            return await step.sweep_dedup(op)
        if isinstance(op, Nudge):
            self._maybe_ready = True
            return None
        raise TypeError(f"the SQL engine has no operation {type(op).__name__}")

    async def _deal(self, step: SqlStep) -> list[_Result]:
        """Lease for the consumers waiting on this node, in the step's transaction; items no waiter took
        after all (one left while the lease ran) go back in place."""
        wanted = sum(w.count for w in self._waiting if not w.future.done())
        self._maybe_ready = False
        if not wanted:
            return []
        items = await step.lease(wanted)
        if not items:
            return []
        dealt = self._waiters.deal(lambda count: items[:count])
        taken = sum(len(got) for _, got in dealt)
        if taken < len(items):
            await step.unlease([seq_of(item.id) for item in items[taken:]])
        return list(dealt)

    async def _write_counters(self, conn: Any, result: StepResult, number: int) -> None:
        """The step's deltas, and its number on this actor's own row (see `_settle_lost_commit`)."""
        deltas = result.deltas
        if not deltas.rows and not result.wrote:
            return  # nothing written: the commit flushes nothing, and a lost one applied nothing
        deltas.touch(self.uid, self.index)
        uids, partitions, *counters = deltas.parameters()
        if result.woken and self._shared.notify:
            woken = ",".join(sorted({str(p.uid) for p in result.woken}))
            await conn.execute(
                R.upsert_counters(True),
                uids,
                partitions,
                self._writer,
                *counters,
                number,
                self._shared.channel,
                f"{self._shared.node} {woken}",
            )
        else:
            await conn.execute(R.upsert_counters(False), uids, partitions, self._writer, *counters, number)

    def _committed(self, result: StepResult) -> None:
        """The step's transaction committed: bring this node's estimates and timers in step with it."""
        for (uid, index), deltas in result.deltas.rows.items():
            if uid == self.uid and index == self.index:
                self.apply_deltas(deltas)
        for moved_to in result.woken:
            if moved_to is not self and isinstance(moved_to, SqlPartition):
                deltas_of = result.deltas.of(moved_to.uid, moved_to.index)
                if deltas_of is not None:
                    moved_to.apply_deltas(deltas_of)
                moved_to.poke()
        for arrived_at, expires in result.arrived.items():
            if expires and isinstance(arrived_at, SqlPartition):
                arrived_at.expect_expiry(expires)
        if result.emptied:
            self.ready = 0
        self._timers.expect_each((result.deadlines, result.dues, result.expiries, result.sweeps))
        log_dead_letters(self._queue, self.index, result.dead)

    def _resolve(self, results: list[_Result], error: QueratorError | None) -> None:
        abandoned = answer(results, error)
        if abandoned and not self._stopping:
            self.submit(Release(abandoned))


# What a produce on the produce lane may pass in the main steps (lanes.py).
_COMMUTE: Final = (Lease, Complete, Nudge)

_BY_IDS: Final[dict[type, Callable[[SqlStep, Any], Any]]] = {
    Retry: SqlStep.retry,
    Release: SqlStep.release,
    Extend: SqlStep.extend,
    Remove: SqlStep.remove,
}


Op = TypeVar("Op")


def _as(kind: type[Op], op: object) -> Op:
    """`op`, which the step sorted by its type, as that type."""
    assert isinstance(op, kind)
    return op


def _lost(exc: BaseException) -> bool:
    """The connection went away (or the server ended the session) rather than the statement failing: a
    statement error rolls its transaction back, a lost connection leaves the commit's outcome open. Errors
    asyncpg raises before sending anything (its InterfaceError) leave nothing open."""
    if isinstance(exc, asyncpg.PostgresError):
        return str(getattr(exc, "sqlstate", "") or "")[:2] in ("57", "08")
    return not isinstance(exc, asyncpg.InterfaceError)
