"""QCOMPLETE and plain QPRODUCE on lanes of their own beside a partition's main steps.

On one partition every step is one commit, and a step waits for the one before it, so a partition's main
steps never overlap: one statement of the database works for it at a time. Most of a busy queue's requests
are completes, produces and leases, and the first two commute with the third: a complete deletes a leased
row that no produce or lease touches (a client completes only ids whose lease reply it has, so that lease
has committed), and a produce inserts rows no one else has seen. So each runs as its own one-statement
steps, concurrently with the main steps: three commits in flight per partition, which the database flushes
together, and the three statements run on different cores.

What keeps the order of one caller's calls:
- A complete goes to the main steps instead whenever a lease end (retry, extend, release, remove) is waiting
  there, and a read or a lease end waits until every complete submitted before it has committed.
- A produce goes to the produce lane only when the main steps have nothing that must come before it (only
  leases, completes and wake-ups waiting or running), and every request of the main steps waits until each
  produce submitted before it has committed: a lease then sees the items produced before it, a read counts
  them, QCLEAR removes them. A lease submitted before a produce may see its items, as a lease through
  another node may.
- A produce goes to the main steps when consumers wait on this node: there it is dealt to them in the same
  statement, one commit from produce to lease.

Each lane writes its own counter row (no two transactions ever wait for one row) and carries its step's
number there, so a commit whose connection was lost can be settled."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from time import perf_counter_ns
from typing import Any, Generic, TypeVar, cast

import asyncpg

from querator.clock import Clock
from querator.engine import Complete, EngineContext, Produce, Request
from querator.errors import NoQueueError, OutcomeUnknownError, QueratorError, TryAgainError
from querator.pg import cycle
from querator.pg.schema import PartitionTables

# The partition's answer to "did step `number` of `writer` commit?" after a lost connection (see
# SqlPartition._settle_lost_commit): True, False or None (unknown).
Settle = Callable[[str, int, "int | None", int], Awaitable["bool | None"]]

Op = TypeVar("Op", Complete, Produce)


class LaneContext:
    """What every lane of one partition shares: how to reach the database and how its failures read."""

    def __init__(
        self,
        context: EngineContext,
        connection: Callable[[], Any],
        tables: PartitionTables,
        queue_name: str,
        settle: Settle,
        unavailable: Callable[[BaseException], TryAgainError],
        lost: Callable[[BaseException], bool],
        database_errors: tuple[type[BaseException], ...],
    ) -> None:
        self.context = context
        self.clock: Clock = context.clock
        self.connection = connection
        self.tables = tables
        self.queue_name = queue_name
        self.settle = settle
        self.unavailable = unavailable
        self.lost = lost
        self.errors = database_errors


class Lane(ABC, Generic[Op]):
    """One kind of request, applied as one statement per step, one step at a time."""

    def __init__(self, lanes: LaneContext, writer: str) -> None:
        self._lanes = lanes
        self._context = lanes.context
        self._writer = writer
        self._inbox: list[Request[Any]] = []
        self._wake: asyncio.Future[None] | None = None
        self._progress: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._step_number = 0
        self.submitted = 0  # requests handed to the lane, ever
        self.applied = 0  # of those, answered (committed or failed)

    @property
    def busy(self) -> bool:
        return self.applied < self.submitted

    def pending(self) -> int:
        return len(self._inbox)

    def start(self, name: str) -> None:
        self._task = self._context.loop.create_task(self._run(), name=name)

    async def stop(self, error: QueratorError | None) -> None:
        if error is not None:
            for request in self._inbox:
                if not request.future.done():
                    request.future.set_exception(error)
            self.applied += len(self._inbox)
            self._inbox.clear()
            if self._progress is not None and not self._progress.done():
                self._progress.set_result(None)
        self._stopping = True
        self._wake_up()
        if self._task is not None:
            await asyncio.shield(self._task)

    def submit(self, op: Op) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = self._context.loop.create_future()
        self._inbox.append(Request(op, future, op.weight))
        self.submitted += 1
        self._wake_up()
        return future

    async def applied_to(self, mark: int) -> None:
        """Wait until every request submitted before `mark` was answered."""
        while self.applied < mark:
            if self._progress is None or self._progress.done():
                self._progress = self._context.loop.create_future()
            await self._progress

    def _wake_up(self) -> None:
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    async def _run(self) -> None:
        loop = self._context.loop
        while True:
            if not self._inbox:
                if self._stopping:
                    return
                self._wake = loop.create_future()
                try:
                    await self._wake
                finally:
                    self._wake = None
                continue
            inbox = self._take()
            try:
                await self._step(inbox)
            finally:
                self.applied += len(inbox)
                if self._progress is not None and not self._progress.done():
                    self._progress.set_result(None)
            await asyncio.sleep(0)

    def _take(self) -> list[Request[Any]]:
        """The requests of the next step (all of them, unless a lane must split them)."""
        inbox, self._inbox = self._inbox, []
        return inbox

    async def _step(self, inbox: list[Request[Any]]) -> None:
        live = [r for r in inbox if not r.future.done()]
        if not live:
            return
        lanes = self._lanes
        started = perf_counter_ns()
        now = lanes.clock.now_ms()
        self._step_number += 1
        number = self._step_number
        shape, params = self._statement([cast(Op, r.op) for r in live], now, number)
        sent = False
        pid: int | None = None
        try:
            async with lanes.connection() as conn:
                pid = conn.get_server_pid()
                sent = True
                rows = await conn.fetch(cycle.statement(lanes.tables, shape), *params)
        except asyncpg.UndefinedTableError:
            self._fail(live, NoQueueError(lanes.queue_name))
            return
        except lanes.errors as exc:
            failure: QueratorError = lanes.unavailable(exc)
            # Autocommit: the statement may have committed. If it did, its answers are lost with the
            # connection, and neither a success nor an error can be sent truthfully.
            if sent and lanes.lost(exc) and await lanes.settle(self._writer, number, pid, now) is not False:
                failure = OutcomeUnknownError(repr(exc))
            self._fail(live, failure)
            return
        self._answer(live, rows, now)
        on_commit = self._context.on_commit
        if on_commit is not None:
            on_commit(perf_counter_ns() - started)

    @abstractmethod
    def _statement(self, ops: list[Op], now: int, number: int) -> tuple[cycle.Shape, list[Any]]:
        """The step's statement shape and its parameters."""

    @abstractmethod
    def _answer(self, requests: list[Request[Any]], rows: list[Any], now: int) -> None:
        """Answer the requests from the committed statement's rows."""

    @staticmethod
    def _fail(requests: list[Request[Any]], error: QueratorError) -> None:
        for request in requests:
            if not request.future.done():
                request.future.set_exception(error)


class CompleteLane(Lane[Complete]):
    """Completes: each request is answered with how many of its ids it completed."""

    def __init__(self, lanes: LaneContext, writer: str, on_completed: Callable[[int], None]) -> None:
        super().__init__(lanes, writer)
        self._on_completed = on_completed

    def _statement(self, ops: list[Complete], now: int, number: int) -> tuple[cycle.Shape, list[Any]]:
        seqs = [seq for op in ops for seq in op.seqs]
        shape = cycle.Shape(completes=True, produces=False, leases=False, expiry=False, notify=False)
        t = self._lanes.tables
        params = cycle.parameters(
            now, t.uid, t.index, self._writer, seqs, [], (b"", b"", b""), 0, 0, 0, "", "", number, 0
        )
        return shape, params

    def _answer(self, requests: list[Request[Any]], rows: list[Any], now: int) -> None:
        left = {row[1] for row in rows if row[0] == 0}
        self._on_completed(len(left))
        for request in requests:
            mine = left.intersection(request.op.seqs)  # type: ignore[attr-defined]
            left -= mine
            if not request.future.done():
                request.future.set_result(len(mine))


class ProduceLane(Lane[Produce]):
    """Plain produces (ready now, no DEDUP), one label set per step: each request is answered with its
    items' ids, in order."""

    def __init__(
        self,
        lanes: LaneContext,
        writer: str,
        ids: Callable[[list[int]], list[str]],
        notify: Callable[[], tuple[str, str] | None],
        on_produced: Callable[[int, int], None],
    ) -> None:
        super().__init__(lanes, writer)
        self._ids = ids
        self._notify = notify  # (channel, payload) when the commit is to send one
        self._on_produced = on_produced  # (items made ready, now)

    def _take(self) -> list[Request[Any]]:
        """The oldest requests that share one label set (the statement stores one)."""
        first = self._inbox[0].op
        labels = (first.kind, first.reference, first.encoding)  # type: ignore[attr-defined]
        n = 1
        for request in self._inbox[1:]:
            op = request.op
            if (op.kind, op.reference, op.encoding) != labels:  # type: ignore[attr-defined]
                break
            n += 1
        inbox, self._inbox = self._inbox[:n], self._inbox[n:]
        return inbox

    def _statement(self, ops: list[Produce], now: int, number: int) -> tuple[cycle.Shape, list[Any]]:
        payloads = [p for op in ops for p in op.payloads]
        labels = (ops[0].kind, ops[0].reference, ops[0].encoding)
        note = self._notify()
        channel, payload = note if note is not None else ("", "")
        shape = cycle.Shape(
            completes=False, produces=True, leases=False, expiry=False, notify=note is not None
        )
        t = self._lanes.tables
        params = cycle.parameters(
            now, t.uid, t.index, self._writer, [], payloads, labels, 0, 0, 0, channel, payload, number, 0
        )
        return shape, params

    def _answer(self, requests: list[Request[Any]], rows: list[Any], now: int) -> None:
        made = sorted(row[1] for row in rows if row[0] == 1)
        ids = self._ids(made)
        at = 0
        for request in requests:
            n = len(request.op.payloads)  # type: ignore[attr-defined]
            if not request.future.done():
                request.future.set_result(ids[at : at + n])
            at += n
        self._on_produced(len(made), now)
