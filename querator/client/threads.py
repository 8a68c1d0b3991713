"""Runs a worker's plain (blocking) handlers on a fixed set of threads, reporting back to the event loop.

Invariant: each submitted item's future is resolved exactly once, on the loop, with the handler's
exception or None; results are handed to the loop in batches (one wake-up for all that finished since
the last one), because a wake-up per item, as `run_in_executor` does, made the GIL change hands twice
per item and cost a third of the throughput (docs/client.md).
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from typing import Any


class HandlerThreads:
    def __init__(self, size: int, handler: Callable[[Any], Any], loop: asyncio.AbstractEventLoop) -> None:
        self._handler = handler
        self._loop = loop
        self._inbox: queue.SimpleQueue[tuple[asyncio.Future[None], Any] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._done: list[tuple[asyncio.Future[None], Exception | None]] = []
        # Daemon threads: a handler still running after the grace period must not keep the process alive.
        self._threads = [
            threading.Thread(target=self._run, name=f"querator-worker-{i}", daemon=True) for i in range(size)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, item: Any) -> asyncio.Future[None]:
        """A future resolved on the loop when the handler returned (None) or raised (its exception)."""
        future: asyncio.Future[None] = self._loop.create_future()
        self._inbox.put((future, item))
        return future

    def shutdown(self) -> None:
        """Threads end once they finish their current item; items not yet taken are dropped."""
        for _ in self._threads:
            self._inbox.put(None)

    def _run(self) -> None:
        while True:
            job = self._inbox.get()
            if job is None:
                return
            future, item = job
            if future.cancelled():
                continue
            error: Exception | None = None
            try:
                self._handler(item)
            except Exception as exc:
                error = exc
            with self._lock:
                first = not self._done
                self._done.append((future, error))
            if first:
                try:
                    self._loop.call_soon_threadsafe(self._deliver)
                except RuntimeError:
                    return  # the loop is closed: the worker has returned and no longer waits for this item

    def _deliver(self) -> None:
        with self._lock:
            done, self._done = self._done, []
        for future, error in done:
            if future.done():
                continue  # cancelled when the grace period ended
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)
