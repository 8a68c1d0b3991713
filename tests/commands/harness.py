"""One connection driven with bytes through a fake transport, over an in-process `Service`: no socket, no
subprocess, so a failing assertion points at one line of parsing or dispatch (as uvicorn's protocol tests
do with their MockTransport)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from querator.auth import Users
from querator.clients import ServerState
from querator.clock import ManualClock
from querator.commands import Dispatcher, build_table
from querator.config import Config
from querator.connection import Connection
from querator.service import Service

START_MS = 1_700_000_000_000


class FakeTransport(asyncio.Transport):
    """Collects what the connection writes; reading and writing flow control are only recorded."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closed = False
        self.reading = True

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 2319)}.get(name, default)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True


class Wire:
    """A client's view: send bytes, get back everything the server wrote since the last call."""

    def __init__(self, connection: Connection, transport: FakeTransport) -> None:
        self.connection = connection
        self.transport = transport

    async def send(self, data: bytes, *, turns: int = 20) -> bytes:
        self.connection.data_received(data)
        for _ in range(turns):  # let partition actors commit and deferred replies go out
            await asyncio.sleep(0)
        out = bytes(self.transport.written)
        self.transport.written.clear()
        return out

    async def call(self, line: bytes) -> bytes:
        """One inline command, its whole reply."""
        return await self.send(line + b"\r\n")


@asynccontextmanager
async def connected(**config: Any) -> AsyncIterator[Wire]:
    """A memory-backed service, the server's state and command table, and one connection to them."""
    cfg = Config(backend="memory", **config)
    service = Service(cfg, clock=ManualClock(START_MS))
    await service.start()
    state = ServerState(config=cfg, service=service, users=Users.from_config(cfg))
    connection = Connection(state, Dispatcher(build_table()))
    transport = FakeTransport()
    connection.connection_made(transport)
    try:
        yield Wire(connection, transport)
    finally:
        connection.connection_lost(None)
        await service.close()
