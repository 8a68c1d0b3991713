"""Future plumbing shared by the engine: settled futures, one future for several partition requests,
and forwarding. The invariant: a caller that cancels the future it holds cancels every future behind it,
so a partition never hands items to a caller that went away."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from querator.errors import TryAgainError

T = TypeVar("T")
R = TypeVar("R")


def done(loop: asyncio.AbstractEventLoop, value: T) -> asyncio.Future[T]:
    """A future that already holds `value` (the Service's methods always return a future, ADR 5)."""
    future: asyncio.Future[T] = loop.create_future()
    future.set_result(value)
    return future


def settle(future: asyncio.Future[T], value: T, error: BaseException | None) -> None:
    """Answer `future` after a sync: `value`, or `-TRYAGAIN` if storage failed."""
    if future.done():
        return
    if error is not None:
        future.set_exception(TryAgainError(f"storage failed; {error}"))
    else:
        future.set_result(value)


def copy(source: asyncio.Future[T], target: asyncio.Future[T]) -> None:
    if target.done():
        return
    if source.cancelled():
        target.cancel()
    elif (exc := source.exception()) is not None:
        target.set_exception(exc)
    else:
        target.set_result(source.result())


def forward(source: asyncio.Future[T], target: asyncio.Future[T]) -> None:
    source.add_done_callback(lambda f: copy(f, target))
    # A consumer that goes away cancels `target`; the waiter behind it must stop waiting too.
    target.add_done_callback(lambda f: source.cancel() if f.cancelled() else None)


def combine(futures: list[asyncio.Future[T]], reduce: Callable[[list[T]], R]) -> asyncio.Future[R]:
    """One future for several partition requests: the first error, or `reduce` of all results."""
    combined: asyncio.Future[R] = futures[0].get_loop().create_future()
    remaining = len(futures)

    def one_done(_: asyncio.Future[T]) -> None:
        nonlocal remaining
        remaining -= 1
        if remaining or combined.done():
            return
        for future in futures:
            if future.cancelled():
                combined.cancel()
                return
            if (exc := future.exception()) is not None:
                combined.set_exception(exc)
                return
        combined.set_result(reduce([f.result() for f in futures]))

    for future in futures:
        future.add_done_callback(one_done)
    # A caller that goes away cancels the combined future; the partitions must learn it too (a lease they
    # answer for nobody is given back).
    combined.add_done_callback(lambda f: [c.cancel() for c in futures] if f.cancelled() else None)
    return combined


def one_or_combined(futures: list[asyncio.Future[T]], reduce: Callable[[list[T]], T]) -> asyncio.Future[T]:
    """The only future itself (no extra hop on the common one-partition path), else `combine`."""
    return futures[0] if len(futures) == 1 else combine(futures, reduce)


def ignore(_: Any) -> None:
    """A `reduce` for requests whose results nobody reads."""
    return None
