"""The least a Python asyncio RESP server can do per request: uvloop, hiredis, and `+PONG` to anything.

    python -m bench.floor_server --port P

`bench.limits` measures its CPU per request next to Querator's and Redis's: what it costs is what any
server built like Querator (Python on uvloop) pays before it does anything at all. It is not a server to
use: it answers every command, whatever it is, with PONG.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from typing import cast

import hiredis
import uvloop

_PONG = b"+PONG\r\n"


class FloorProtocol(asyncio.Protocol):
    def __init__(self) -> None:
        self._reader = hiredis.Reader()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        replies = 0
        while reader.gets() is not False:
            replies += 1
        if replies and self._transport is not None:
            self._transport.write(_PONG * replies)


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(FloorProtocol, "127.0.0.1", port, reuse_address=True)
    # The line bench.servers waits for before it sends PING.
    print(f"floor server ready to accept connections on 127.0.0.1:{port}", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    summary = __doc__.split("\n\n")[0]
    parser = argparse.ArgumentParser(prog="python -m bench.floor_server", description=summary)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(serve(args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
