"""The RocksDB store's group sync: a callback is answered only by an fsync that started after it was
requested (its write came before the request), and callbacks that wait together share one fsync."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

from querator.store.rocksdb import _GroupSync


class _GatedFsync:
    """An fsync that tells when it starts and finishes only when the test lets it."""

    def __init__(self) -> None:
        self.calls = 0
        self.started = threading.Semaphore(0)
        self.release = threading.Semaphore(0)

    def __call__(self) -> None:
        self.calls += 1
        self.started.release()
        self.release.acquire()


def _appends(called: list[str], name: str) -> Callable[[BaseException | None], None]:
    return lambda error: called.append(name)


async def _started(fsync: _GatedFsync) -> None:
    assert await asyncio.to_thread(fsync.started.acquire, True, 5)


async def _settle(called: list[str], count: int) -> None:
    for _ in range(500):
        if len(called) >= count:
            return
        await asyncio.sleep(0.01)


def test_a_callback_requested_during_an_fsync_waits_for_the_next_one() -> None:
    async def main() -> None:
        fsync = _GatedFsync()
        sync = _GroupSync(fsync)
        called: list[str] = []
        sync.request(lambda error: called.append("a"))
        await _started(fsync)
        sync.request(lambda error: called.append("b"))  # its write may have missed the running fsync
        fsync.release.release()
        await _settle(called, 1)
        await _started(fsync)  # the next fsync starts without waiting for the loop
        await asyncio.sleep(0.05)
        assert called == ["a"]
        fsync.release.release()
        await _settle(called, 2)
        assert called == ["a", "b"]
        assert fsync.calls == 2
        await sync.drain()

    asyncio.run(main())


def test_callbacks_waiting_together_share_one_fsync() -> None:
    async def main() -> None:
        fsync = _GatedFsync()
        sync = _GroupSync(fsync)
        called: list[str] = []
        for n in range(10):
            sync.request(_appends(called, str(n)))
        await _started(fsync)  # the thread took all ten: they were requested in one turn of the loop
        fsync.release.release()
        await _settle(called, 10)
        assert called == [str(n) for n in range(10)]
        assert fsync.calls == 1
        await sync.drain()

    asyncio.run(main())


def test_a_failed_fsync_is_reported_to_its_callbacks_and_drain_returns() -> None:
    def failing() -> None:
        raise OSError("disk gone")

    async def main() -> None:
        sync = _GroupSync(failing)
        errors: list[BaseException | None] = []
        sync.request(errors.append)
        sync.request(errors.append)
        await asyncio.wait_for(sync.drain(), 5)
        assert [type(e) for e in errors] == [OSError, OSError]

    asyncio.run(main())
