"""The one source of time (Unix milliseconds), injectable so lease expiry, scheduling and BLOCK deadlines
are tested without sleeping. A timer set with `call_at` never fires before `now_ms()` reaches its time,
whichever clock runs it; partition actors subscribe to be woken when a test moves a `ManualClock`."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable
from typing import Protocol


class Timer(Protocol):
    def cancel(self) -> None: ...


class Clock:
    # Added to this machine's time: the postgres backend sets it so every node reads the database's clock.
    offset_ms = 0

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000 + self.offset_ms

    def call_at(self, loop: asyncio.AbstractEventLoop, when_ms: int, callback: Callable[[], None]) -> Timer:
        """Call `callback` on `loop` once `now_ms() >= when_ms`. The loop is passed in because
        asyncio.get_running_loop() costs a getpid() system call, once per blocking lease here."""
        return _LoopTimer(self, loop, when_ms, callback)

    def subscribe(self, callback: Callable[[], None]) -> None:
        """Real time moves by itself; actors use loop timers, so there is nothing to notify."""

    def unsubscribe(self, callback: Callable[[], None]) -> None:
        pass


class _LoopTimer:
    """A loop timer that checks the wall clock when it fires: the loop's monotonic clock and `now_ms()`
    may drift apart, and a deadline must not pass early, so it re-arms for whatever is left."""

    __slots__ = ("_callback", "_clock", "_handle", "_loop", "_when")

    def __init__(
        self, clock: Clock, loop: asyncio.AbstractEventLoop, when_ms: int, callback: Callable[[], None]
    ) -> None:
        self._clock = clock
        self._when = when_ms
        self._callback = callback
        self._loop = loop
        self._handle = self._arm()

    def _arm(self) -> asyncio.TimerHandle:
        delay = max(0, self._when - self._clock.now_ms()) / 1000
        return self._loop.call_later(delay, self._fire)

    def _fire(self) -> None:
        if self._clock.now_ms() >= self._when:
            self._callback()
        else:
            self._handle = self._arm()

    def cancel(self) -> None:
        self._handle.cancel()


class ManualClock(Clock):
    """A clock that moves only when told to; due timers fire, then every subscriber is woken."""

    def __init__(self, start_ms: int = 1_700_000_000_000) -> None:
        self._now = start_ms
        self._subscribers: list[Callable[[], None]] = []
        self._timers: list[tuple[int, int, _ManualTimer]] = []
        self._order = itertools.count()

    def now_ms(self) -> int:
        return self._now

    def advance(self, ms: int) -> None:
        self._now += ms
        timers = self._timers
        while timers and timers[0][0] <= self._now:
            heapq.heappop(timers)[2].fire()
        for callback in list(self._subscribers):
            callback()

    def call_at(self, loop: asyncio.AbstractEventLoop, when_ms: int, callback: Callable[[], None]) -> Timer:
        timer = _ManualTimer(callback)
        if when_ms <= self._now:
            # Never call back from inside the caller's own code: a loop turn later, as a real timer would.
            loop.call_soon(timer.fire)
        else:
            heapq.heappush(self._timers, (when_ms, next(self._order), timer))
        return timer

    def subscribe(self, callback: Callable[[], None]) -> None:
        self._subscribers.append(callback)

    def unsubscribe(self, callback: Callable[[], None]) -> None:
        if callback in self._subscribers:
            self._subscribers.remove(callback)


class _ManualTimer:
    __slots__ = ("_callback",)

    def __init__(self, callback: Callable[[], None]) -> None:
        self._callback: Callable[[], None] | None = callback

    def fire(self) -> None:
        callback = self._callback
        self._callback = None
        if callback is not None:
            callback()

    def cancel(self) -> None:
        self._callback = None
