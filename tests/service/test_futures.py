"""`futures.mapped`: the library's `Service.produce` converts the engine's answer through it, so errors
and cancellation must cross it both ways, as `forward` does."""

from __future__ import annotations

import asyncio

import pytest

from querator.futures import mapped
from tests.support import run


def test_the_result_is_converted_and_errors_pass_through() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        source: asyncio.Future[int] = loop.create_future()
        target = mapped(source, str)
        source.set_result(7)
        assert await target == "7"
        failing: asyncio.Future[int] = loop.create_future()
        failed = mapped(failing, str)
        failing.set_exception(ValueError("storage"))
        with pytest.raises(ValueError, match="storage"):
            await failed

    run(main())


def test_cancellation_crosses_both_ways() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        source: asyncio.Future[int] = loop.create_future()
        target = mapped(source, str)
        target.cancel()  # the caller went away: the partition's request is withdrawn
        await asyncio.sleep(0)
        assert source.cancelled()
        inner: asyncio.Future[int] = loop.create_future()
        outer = mapped(inner, str)
        inner.cancel()
        await asyncio.sleep(0)
        assert outer.cancelled()

    run(main())
