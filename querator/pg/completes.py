"""QCOMPLETE on a lane of its own beside a partition's main steps.

On one partition every step is one commit, and a step waits for the one before it: the commits of one
partition never overlap, and the database flushes them one at a time. Completes are most of a busy
queue's requests, and they commute with everything the main steps do: a client completes only ids whose
lease reply it has, so their lease has committed; a complete deletes a leased row, which no produce or
lease touches. So completes run as their own steps, one statement each, concurrently with the main steps
(two commits in flight per partition, which the database flushes together). What keeps the order of one
caller's calls: a complete goes to the main steps instead whenever a lease end (retry, extend, release,
remove) is waiting there, and a read waits until every complete submitted before it has committed. The
lane writes its own counter row (no two transactions ever wait for one row)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from time import perf_counter_ns
from typing import Any

import asyncpg

from querator.clock import Clock
from querator.engine import Complete, EngineContext, Request
from querator.errors import NoQueueError, OutcomeUnknownError, QueratorError, TryAgainError
from querator.pg import cycle
from querator.pg.schema import PartitionTables

# The partition's answer to "did step `number` of `writer` commit?" after a lost connection (see
# SqlPartition._settle_lost_commit): True, False or None (unknown).
Settle = Callable[[str, int, "int | None", int], Awaitable["bool | None"]]


class CompleteLane:
    def __init__(
        self,
        context: EngineContext,
        connection: Callable[[], Any],
        tables: PartitionTables,
        writer: str,
        queue_name: str,
        settle: Settle,
        unavailable: Callable[[BaseException], TryAgainError],
        lost: Callable[[BaseException], bool],
        database_errors: tuple[type[BaseException], ...],
        on_completed: Callable[[int], None],
    ) -> None:
        self._context = context
        self._clock: Clock = context.clock
        self._connection = connection
        self._tables = tables
        self._writer = writer
        self._queue_name = queue_name
        self._settle = settle
        self._unavailable = unavailable
        self._lost = lost
        self._errors = database_errors
        self._on_completed = on_completed
        self._inbox: list[Request[int]] = []
        self._wake: asyncio.Future[None] | None = None
        self._progress: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._step_number = 0
        self.submitted = 0  # completes handed to the lane, ever
        self.applied = 0  # of those, answered (committed or failed)

    @property
    def busy(self) -> bool:
        return self.applied < self.submitted

    def pending(self) -> int:
        return len(self._inbox)

    def start(self, name: str) -> None:
        self._task = self._context.loop.create_task(self._run(), name=f"completes {name}")

    async def stop(self, error: QueratorError | None) -> None:
        if error is not None:
            for request in self._inbox:
                if not request.future.done():
                    request.future.set_exception(error)
            self.applied += len(self._inbox)
            self._inbox.clear()
        self._stopping = True
        self._wake_up()
        if self._task is not None:
            await asyncio.shield(self._task)

    def submit(self, op: Complete) -> asyncio.Future[int]:
        future: asyncio.Future[int] = self._context.loop.create_future()
        self._inbox.append(Request(op, future, op.weight))
        self.submitted += 1
        self._wake_up()
        return future

    async def applied_to(self, mark: int) -> None:
        """Wait until every complete submitted before `mark` was answered."""
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
            inbox = self._inbox
            self._inbox = []
            try:
                await self._step(inbox)
            finally:
                self.applied += len(inbox)
                if self._progress is not None and not self._progress.done():
                    self._progress.set_result(None)
            await asyncio.sleep(0)

    async def _step(self, inbox: list[Request[int]]) -> None:
        live = [r for r in inbox if not r.future.done()]
        if not live:
            return
        started = perf_counter_ns()
        now = self._clock.now_ms()
        self._step_number += 1
        number = self._step_number
        seqs = [seq for r in live for seq in r.op.seqs]  # type: ignore[attr-defined]
        shape = cycle.Shape(completes=True, produces=False, leases=False, expiry=False, notify=False)
        params = cycle.parameters(
            now, self._tables.uid, self._tables.index, self._writer, seqs, [], (b"", b"", b""),
            0, 0, 0, "", "", number, 0,
        )  # fmt: skip
        sent = False
        pid: int | None = None
        try:
            async with self._connection() as conn:
                pid = conn.get_server_pid()
                sent = True
                rows = await conn.fetch(cycle.statement(self._tables, shape), *params)
        except asyncpg.UndefinedTableError:
            self._fail(live, NoQueueError(self._queue_name))
            return
        except self._errors as exc:
            failure: QueratorError = self._unavailable(exc)
            if sent and self._lost(exc) and await self._settle(self._writer, number, pid, now) is not False:
                failure = OutcomeUnknownError(repr(exc))
            self._fail(live, failure)
            return
        left = {row[1] for row in rows if row[0] == 0}
        self._on_completed(len(left))
        for request in live:
            mine = left.intersection(request.op.seqs)  # type: ignore[attr-defined]
            left -= mine
            if not request.future.done():
                request.future.set_result(len(mine))
        on_commit = self._context.on_commit
        if on_commit is not None:
            on_commit(perf_counter_ns() - started)

    @staticmethod
    def _fail(requests: list[Request[int]], error: QueratorError) -> None:
        for request in requests:
            if not request.future.done():
                request.future.set_exception(error)
