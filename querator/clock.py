"""The one source of time (Unix milliseconds), injectable so expiry and scheduling are tested without
sleeping. Partition actors subscribe to be woken when a test moves a `ManualClock`."""

from __future__ import annotations

import time
from collections.abc import Callable


class Clock:
    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    def subscribe(self, callback: Callable[[], None]) -> None:
        """Real time moves by itself; actors use loop timers, so there is nothing to notify."""

    def unsubscribe(self, callback: Callable[[], None]) -> None:
        pass


class ManualClock(Clock):
    """A clock that moves only when told to; every subscriber is woken when it does."""

    def __init__(self, start_ms: int = 1_700_000_000_000) -> None:
        self._now = start_ms
        self._subscribers: list[Callable[[], None]] = []

    def now_ms(self) -> int:
        return self._now

    def advance(self, ms: int) -> None:
        self._now += ms
        for callback in list(self._subscribers):
            callback()

    def subscribe(self, callback: Callable[[], None]) -> None:
        self._subscribers.append(callback)

    def unsubscribe(self, callback: Callable[[], None]) -> None:
        if callback in self._subscribers:
            self._subscribers.remove(callback)
