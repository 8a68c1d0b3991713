"""`AsyncWorker` and `Worker`: lease items, run a handler on each, then complete, retry with backoff or
dead-letter it; keep the leases of held items alive; stop gracefully (SPEC section 10, ADR 14).

Invariants: an item is *held* from its lease until a complete, retry or hand-back is sent for it; every
held item's lease is extended once half of it has passed, so no other consumer gets an item this worker
still holds; the worker holds at most `concurrency` items plus those it expects to start within half a
lease (none until a handler's duration has been measured); on stop it leases nothing more and hands every
held item it has not started back at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import signal
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError

from querator.client.aio import AsyncClient
from querator.client.backoff import backoff_ms, reason_of
from querator.client.errors import QueratorError
from querator.client.options import DEFAULT_URL
from querator.client.threads import HandlerThreads
from querator.client.types import Item

log = logging.getLogger("querator.client.worker")

Handler = Callable[[Item], Any] | Callable[[Item], Awaitable[Any]]
OnStart = Callable[[Item], None]
OnSuccess = Callable[[Item, float], None]  # the item and the handler's duration in seconds
OnFailure = Callable[[Item, BaseException, float], None]

# Errors of one call to the server that a worker survives: it logs them and tries again later.
CALL_ERRORS = (QueratorError, RedisError, OSError)
MAX_IDS = 1000  # the server's max-batch: ids per QCOMPLETE / QRETRY / QEXTEND
# A failed QCOMPLETE is tried this often before its items are left to their lease running out.
COMPLETE_TRIES = 5
# Weight of the newest duration in the running average that sizes prefetching.
EWMA_WEIGHT = 0.2


class Dead(Exception):
    """Raised by a handler: the item goes to the dead queue at once, with this exception's text as REASON."""


@dataclass(slots=True)
class _Held:
    item: Item
    extended_at: float  # monotonic time of the lease or of its last extension


def _is_async(handler: Handler) -> bool:
    call = getattr(handler, "__call__", None)  # noqa: B004 - instances with an async __call__
    return inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(call)


class AsyncWorker:
    def __init__(
        self,
        url: str,
        queue: str,
        handler: Handler,
        *,
        concurrency: int = 8,
        batch: int | None = None,
        block_ms: int = 1000,
        backoff_base_ms: int = 1000,
        backoff_cap_ms: int = 300_000,
        grace_ms: int = 30_000,
        on_start: OnStart | None = None,
        on_success: OnSuccess | None = None,
        on_failure: OnFailure | None = None,
        redis_options: Mapping[str, Any] | None = None,
        handle_signals: bool = True,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if batch is not None and not 1 <= batch <= MAX_IDS:
            raise ValueError(f"batch must be between 1 and {MAX_IDS}")
        self.url = url or DEFAULT_URL
        self.queue = queue
        self.handler = handler
        self.concurrency = concurrency
        # Items per QLEASE: by default one round of handlers, so a lease refills every free slot at once.
        self.batch = batch or min(concurrency, MAX_IDS)
        self.block_ms = block_ms
        self.backoff_base_ms = backoff_base_ms
        self.backoff_cap_ms = backoff_cap_ms
        self.grace_ms = grace_ms
        self.on_start = on_start
        self.on_success = on_success
        self.on_failure = on_failure
        self._redis_options = dict(redis_options or {})
        self._handle_signals = handle_signals
        self._async_handler = _is_async(handler)
        self._stop_requested = False
        self._wake: asyncio.Event | None = None
        self._flush: asyncio.Event | None = None
        self._closing = False
        self._client: AsyncClient | None = None
        self._threads: HandlerThreads | None = None
        self._lease_timeout_ms = 0
        self._held: dict[str, _Held] = {}
        self._waiting: deque[_Held] = deque()
        self._running: set[asyncio.Task[None]] = set()
        self._to_complete: list[str] = []
        self._handler_seconds: float | None = None

    # -- control ---------------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop gracefully: lease nothing more, hand back what was not started, let handlers finish within
        the grace period. Call it on the worker's event loop (`Worker.stop` may be called from any thread)."""
        self._stop_requested = True
        if self._wake is not None:
            self._wake.set()

    async def run(self) -> None:
        """Work until `stop()` (or SIGINT / SIGTERM when `handle_signals` and on the main thread)."""
        loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._flush = asyncio.Event()
        self._closing = False
        client = self._client = AsyncClient(self.url, **self._redis_options)
        if not self._async_handler:
            self._threads = HandlerThreads(self.concurrency, self.handler, loop)
        restore_signals = self._install_signals(loop)
        try:
            # Fails at once on a missing queue, and gives the lease time that paces extensions.
            self._lease_timeout_ms = (await client.info(self.queue)).lease_timeout
            completer = asyncio.create_task(self._complete_loop())
            extender = asyncio.create_task(self._extend_loop())
            try:
                await self._lease_loop()
                await self._drain()
            finally:
                self._closing = True
                self._flush.set()
                await completer
                extender.cancel()
                await asyncio.gather(extender, return_exceptions=True)
        finally:
            restore_signals()
            if self._threads is not None:
                # A handler thread still running after the grace period cannot be interrupted; its item
                # was handed back already, so the worker does not wait for it.
                self._threads.shutdown()
                self._threads = None
            await client.aclose()

    def _install_signals(self, loop: asyncio.AbstractEventLoop) -> Callable[[], None]:
        if not self._handle_signals or threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        for sig in previous:
            loop.add_signal_handler(sig, self.stop)

        def restore() -> None:
            for sig, handler in previous.items():
                loop.remove_signal_handler(sig)
                if handler is not None:
                    signal.signal(sig, handler)

        return restore

    # -- leasing ---------------------------------------------------------------------------------------

    def _room(self) -> int:
        """How many more items the worker may hold: a slot for each handler, plus as many waiting items as
        can start within half a lease at the measured handler duration (so none waits past its lease)."""
        prefetch = 0
        if self._handler_seconds is not None:
            half_lease = self._lease_timeout_ms / 2000
            startable = int(self.concurrency * half_lease / max(self._handler_seconds, 1e-6))
            prefetch = min(self.batch, startable)
        return self.concurrency + prefetch - len(self._held)

    async def _lease_loop(self) -> None:
        assert self._client is not None and self._wake is not None
        pause = 0.1
        while not self._stop_requested:
            room = self._room()
            if room <= 0:
                self._wake.clear()
                if self._room() <= 0 and not self._stop_requested:
                    await self._wake.wait()
                continue
            try:
                items = await self._client.lease(self.queue, min(self.batch, room), self.block_ms)
            except CALL_ERRORS as exc:
                log.warning("lease from %s failed: %s; trying again in %.1f s", self.queue, exc, pause)
                await self._sleep_unless_stopped(pause)
                pause = min(pause * 2, 5.0)
                continue
            pause = 0.1
            now = time.monotonic()
            for item in items:
                held = _Held(item, now)
                self._held[item.id] = held
                self._waiting.append(held)
            self._start_waiting()

    async def _sleep_unless_stopped(self, seconds: float) -> None:
        assert self._wake is not None
        self._wake.clear()
        if not self._stop_requested:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), seconds)

    def _start_waiting(self) -> None:
        while self._waiting and len(self._running) < self.concurrency and not self._stop_requested:
            task = asyncio.create_task(self._process(self._waiting.popleft()))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    # -- one item --------------------------------------------------------------------------------------

    async def _process(self, held: _Held) -> None:
        item = held.item
        self._hook(self.on_start, item)
        started = time.perf_counter()
        try:
            if self._async_handler:
                await self.handler(item)
            else:
                assert self._threads is not None
                await self._threads.submit(item)
        except Dead as exc:
            elapsed = self._finished(item, started)
            await self._retry(item, dead=True, reason=reason_of(exc))
            self._hook(self.on_failure, item, exc, elapsed)
        except Exception as exc:
            elapsed = self._finished(item, started)
            delay = backoff_ms(item.attempts, self.backoff_base_ms, self.backoff_cap_ms)
            await self._retry(item, delay_ms=delay, reason=reason_of(exc))
            self._hook(self.on_failure, item, exc, elapsed)
        else:
            elapsed = self._finished(item, started)
            self._to_complete.append(item.id)
            assert self._flush is not None
            self._flush.set()
            self._hook(self.on_success, item, elapsed)

    def _finished(self, item: Item, started: float) -> float:
        """The handler is done with `item`: release it and its slot, and learn how long handlers take."""
        elapsed = time.perf_counter() - started
        self._held.pop(item.id, None)
        last = self._handler_seconds
        self._handler_seconds = elapsed if last is None else last + EWMA_WEIGHT * (elapsed - last)
        self._start_waiting()
        assert self._wake is not None
        self._wake.set()
        return elapsed

    async def _retry(
        self, item: Item, *, reason: str, delay_ms: int | None = None, dead: bool = False
    ) -> None:
        assert self._client is not None
        try:
            await self._client.retry(self.queue, [item.id], delay_ms=delay_ms, dead=dead, reason=reason)
        except CALL_ERRORS as exc:
            log.error(
                "retry of %s on %s failed: %s; its lease will run out instead", item.id, self.queue, exc
            )

    def _hook(self, hook: Callable[..., None] | None, *args: Any) -> None:
        if hook is None:
            return
        try:
            hook(*args)
        except Exception:
            # A broken metrics or logging hook must not lose or repeat the item's work.
            log.exception("worker hook %r failed", hook)

    # -- completing and extending ----------------------------------------------------------------------

    async def _complete_loop(self) -> None:
        """Completes finished items in batches (one QCOMPLETE for all that finished meanwhile), the way
        the server commits a partition's requests: many handlers share one round trip."""
        assert self._client is not None and self._flush is not None
        tries = 0
        while True:
            if not self._to_complete:
                if self._closing:
                    return
                self._flush.clear()
                await self._flush.wait()
                continue
            ids = self._to_complete[:MAX_IDS]
            try:
                await self._client.complete(self.queue, ids)
            except CALL_ERRORS as exc:
                tries += 1
                if tries < COMPLETE_TRIES:
                    log.warning("complete on %s failed: %s; trying again", self.queue, exc)
                    await asyncio.sleep(0.05 * 2**tries)
                    continue
                log.error(
                    "complete of %d items on %s failed: %s; they will be delivered again",
                    len(ids),
                    self.queue,
                    exc,
                )
            tries = 0
            del self._to_complete[: len(ids)]

    async def _extend_loop(self) -> None:
        assert self._client is not None
        lease = self._lease_timeout_ms / 1000
        # Checking four times per lease extends each lease between 1/2 and 3/4 of its time.
        tick = max(0.005, min(lease / 4, 1.0))
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            due = [h for h in self._held.values() if now - h.extended_at >= lease / 2]
            for start in range(0, len(due), MAX_IDS):
                chunk = due[start : start + MAX_IDS]
                try:
                    extended = await self._client.extend(self.queue, [h.item.id for h in chunk])
                except CALL_ERRORS as exc:
                    log.warning("extending leases on %s failed: %s; trying again", self.queue, exc)
                    continue
                for h in chunk:
                    h.extended_at = now
                if extended < len(chunk):
                    log.warning(
                        "%d of %d leases on %s had already ended",
                        len(chunk) - extended,
                        len(chunk),
                        self.queue,
                    )

    # -- stopping --------------------------------------------------------------------------------------

    async def _drain(self) -> None:
        never_started = [held.item.id for held in self._waiting]
        self._waiting.clear()
        for id_ in never_started:
            self._held.pop(id_, None)
        await self._hand_back(never_started)
        running = set(self._running)
        if running:
            _, late = await asyncio.wait(running, timeout=self.grace_ms / 1000)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        # What is still held belongs to handlers the grace period cut short.
        unfinished = list(self._held)
        self._held.clear()
        if unfinished:
            log.warning(
                "%d handlers on %s did not finish within the grace period; their items go back",
                len(unfinished),
                self.queue,
            )
        await self._hand_back(unfinished)

    async def _hand_back(self, ids: Iterable[str]) -> None:
        """QRETRY without a delay: the items are ready for other workers now, not when their lease ends."""
        assert self._client is not None
        id_list = list(ids)
        for start in range(0, len(id_list), MAX_IDS):
            try:
                await self._client.retry(self.queue, id_list[start : start + MAX_IDS])
            except CALL_ERRORS as exc:
                log.error("handing back items of %s failed: %s; their leases will run out", self.queue, exc)


class Worker:
    """`AsyncWorker` for programs without an event loop: `run()` blocks on its own loop; plain handlers run
    in a thread pool of `concurrency` threads, async ones on that loop."""

    def __init__(
        self,
        url: str,
        queue: str,
        handler: Handler,
        *,
        concurrency: int = 8,
        batch: int | None = None,
        block_ms: int = 1000,
        backoff_base_ms: int = 1000,
        backoff_cap_ms: int = 300_000,
        grace_ms: int = 30_000,
        **options: Any,
    ) -> None:
        """SPEC 10's parameters are spelled out; `options` takes the rest of `AsyncWorker`'s (hooks,
        `redis_options`, `handle_signals`)."""
        self._worker = AsyncWorker(
            url,
            queue,
            handler,
            concurrency=concurrency,
            batch=batch,
            block_ms=block_ms,
            backoff_base_ms=backoff_base_ms,
            backoff_cap_ms=backoff_cap_ms,
            grace_ms=grace_ms,
            **options,
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    def run(self) -> None:
        loop = asyncio.new_event_loop()
        with self._lock:
            self._loop = loop
        try:
            loop.run_until_complete(self._worker.run())
        finally:
            with self._lock:
                self._loop = None
            loop.close()

    def stop(self) -> None:
        """Thread-safe: may be called from any thread, before or during `run()`."""
        with self._lock:
            if self._loop is None:
                self._worker.stop()
            else:
                self._loop.call_soon_threadsafe(self._worker.stop)
