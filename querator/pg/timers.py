"""When a SQL partition runs its timer passes (ended leases, due schedules, expiry, the deduplication key
sweep). Every node may run every pass (SKIP LOCKED makes each item's move happen once); this says when
one node should look: at the times it knows of (deadlines and due times it set, its partition's next
times read at start), and every `PASS_MS` where the counts say there may be work that other nodes, or a
dead one, left."""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Iterable, Sequence
from typing import Final

# How often each partition looks for timers other nodes left: lease ends within 1 s (SPEC 4).
PASS_MS: Final = 1000
# Passes for times this node knows of run at most this often (seconds of real time), so steady traffic
# (every lease sets a deadline) does not make every step a pass.
KNOWN_PASS_S: Final = 0.02
# Partition 0 of each queue sweeps the deduplication keys no live node knows about this often.
SWEEP_EVERY_MS: Final = 30_000

LEASES, SCHEDULES, EXPIRY, SWEEP = range(4)
# Which passes a step runs, in that order.
Passes = tuple[bool, bool, bool, bool]


class TimerPlan:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        # The times this node knows of, by pass (heaps of Unix ms).
        self._known: tuple[list[int], ...] = ([], [], [], [])
        self._last_known_pass = 0.0
        self._next_pass = 0
        self._next_sweep = 0

    def expect(self, kind: int, when: int) -> None:
        heapq.heappush(self._known[kind], when)

    def expect_each(self, times: Sequence[Iterable[int | None]]) -> None:
        """Times by pass (LEASES, SCHEDULES, EXPIRY, SWEEP order); None is skipped."""
        for kind, found in enumerate(times):
            for when in found:
                if when is not None:
                    heapq.heappush(self._known[kind], int(when))

    def next_at(self) -> int:
        """When the partition should wake for its timers, if nothing wakes it before."""
        return min([self._next_pass, *(times[0] for times in self._known if times)])

    def due(self, now: int) -> bool:
        """Whether a step should run for the timers alone."""
        if now >= self._next_pass:
            return True
        return self._known_due(now) and self._loop.time() - self._last_known_pass >= KNOWN_PASS_S

    def quiet(self, now: int) -> bool:
        """No timer due (what a test waits for after moving a manual clock)."""
        return not self._known_due(now) and now < self._next_pass

    def _known_due(self, now: int) -> bool:
        return any(times and times[0] <= now for times in self._known)

    def passes(
        self, now: int, *, leased: bool, scheduled: bool, items: bool, expire: bool, sweeps: bool
    ) -> Passes:
        """The passes this step runs. The flags are the partition's estimates (the counter rows summed
        each second: exact but for the last second's steps) and options: `leased` / `scheduled` (some are),
        `items` (ready or scheduled ones exist), `expire` (the queue has an expire timeout), `sweeps` (this
        partition sweeps the queue's deduplication keys)."""
        due = [bool(times) and times[0] <= now for times in self._known]
        loop_time = self._loop.time()
        if any(due) and loop_time - self._last_known_pass >= KNOWN_PASS_S:
            self._last_known_pass = loop_time
            for times in self._known:
                while times and times[0] <= now:
                    heapq.heappop(times)
        else:
            due = [False, False, False, False]
        if now < self._next_pass:
            return due[0], due[1], due[2], due[3]
        self._next_pass = now + PASS_MS
        sweep = due[SWEEP]
        if sweeps and now >= self._next_sweep:
            # Keys stored through a node that died (a lookup already ignores them once expired).
            self._next_sweep = now + SWEEP_EVERY_MS
            sweep = True
        return due[LEASES] or leased, due[SCHEDULES] or scheduled, due[EXPIRY] or (expire and items), sweep
