"""The blocking lease (QLEASE ... BLOCK): the waiter, a queue's waiting line, the round-robin deal, and
BLOCK deadlines taken from the injectable clock. A waiter leaves the line exactly once (served, timed
out, cancelled or failed), and items are dealt only to waiters whose future is still pending."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable

from querator.clock import Clock, Timer
from querator.errors import QueratorError
from querator.futures import copy, forward
from querator.model import LeasedItem

Items = list[LeasedItem]
# What a deal hands back to the partition step: each served waiter's future and the items it was dealt;
# the step answers them after its write is durable, like any request.
Dealt = list[tuple["asyncio.Future[Items]", Items]]


class Waiter:
    """A consumer blocked in QLEASE ... BLOCK; a partition's step deals items into `items`."""

    __slots__ = ("count", "future", "items", "timer")

    def __init__(self, count: int, future: asyncio.Future[Items]) -> None:
        self.count = count
        self.future = future
        self.items: Items = []
        self.timer: Timer | None = None

    def served(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def time_out(self) -> None:
        self.timer = None
        # A waiter already dealt items is answered by the step that dealt them, once its write is durable.
        if not self.future.done() and not self.items:
            self.future.set_result([])


class WaitLine:
    """The consumers blocked on one queue, in arrival order."""

    __slots__ = ("_clock", "_loop", "line")

    def __init__(self, clock: Clock, loop: asyncio.AbstractEventLoop) -> None:
        self._clock = clock
        self._loop = loop
        self.line: deque[Waiter] = deque()  # read-only outside this class

    def __bool__(self) -> bool:
        return bool(self.line)

    def __len__(self) -> int:
        return len(self.line)

    def waiting(self) -> int:
        """Consumers still waiting (not those answered and about to leave)."""
        return sum(1 for w in self.line if not w.future.done())

    def deadline(self, block_ms: int) -> int | None:
        """When a BLOCK of `block_ms` that starts now ends; None for BLOCK 0 (no limit)."""
        return self._clock.now_ms() + block_ms if block_ms else None

    def wait(self, count: int, deadline: int | None, nudge: Callable[[], None]) -> asyncio.Future[Items]:
        """Join the line until items are dealt or `deadline` passes; `nudge` makes the partitions that
        hold ready items run a step, so items that are already there are dealt at once."""
        future: asyncio.Future[Items] = self._loop.create_future()
        waiter = Waiter(count, future)
        self.line.append(waiter)
        if deadline is not None:
            waiter.timer = self._clock.call_at(self._loop, deadline, waiter.time_out)
        future.add_done_callback(lambda _: self._leave(waiter))
        nudge()
        return future

    def wait_after(
        self, leased: asyncio.Future[Items], count: int, deadline: int | None, nudge: Callable[[], None]
    ) -> asyncio.Future[Items]:
        """A blocking lease that planned on items others took first: if its lease comes back empty, it
        waits in line for the rest of its BLOCK."""
        outer: asyncio.Future[Items] = self._loop.create_future()

        def chained(inner: asyncio.Future[Items]) -> None:
            if outer.done():
                return
            if inner.cancelled() or inner.exception() is not None or inner.result():
                copy(inner, outer)
            elif deadline is not None and self._clock.now_ms() >= deadline:
                outer.set_result([])
            else:
                forward(self.wait(count, deadline, nudge), outer)

        leased.add_done_callback(chained)
        outer.add_done_callback(lambda f: leased.cancel() if f.cancelled() else None)
        return outer

    def _leave(self, waiter: Waiter) -> None:
        # Items dealt to a waiter that was cancelled before its reply are given back by the partition that
        # dealt them (PartitionActor._resolve); here the waiter only leaves the line.
        waiter.served()
        with contextlib.suppress(ValueError):
            self.line.remove(waiter)

    def fail_all(self, error: QueratorError) -> None:
        for waiter in list(self.line):
            if not waiter.future.done():
                waiter.future.set_exception(error)
        self.line.clear()

    def deal(self, take: Callable[[int], Items]) -> Dealt:
        """Lease what the live waiters want in one pass from the head (`take`, FIFO order), then deal the
        items one at a time in arrival order, round after round, until each has its COUNT or none are
        left; the served waiters leave the line."""
        line = self.line
        live = [w for w in line if not w.future.done()]
        wanted = sum(w.count for w in live)
        items = take(wanted) if wanted else []
        dealt = 0
        while dealt < len(items):
            for waiter in live:
                if dealt >= len(items):
                    break
                if len(waiter.items) < waiter.count:
                    waiter.items.append(items[dealt])
                    dealt += 1
        served = [w for w in live if w.items]
        if served or len(live) != len(line):
            line.clear()
            line.extend(w for w in live if not w.items)
        for waiter in served:
            waiter.served()
        return [(w.future, w.items) for w in served]
