"""Shutdown order: stop accepting, answer every command already received, then close storage."""

from __future__ import annotations

import asyncio
from pathlib import Path

import hiredis

from querator.config import Config
from querator.server import Server
from querator.service import Service
from tests.support import HOST, run

PIPELINE = 2000  # several connection turns (256 commands each) and partition batches


def test_stop_answers_every_command_already_received_then_closes_storage(tmp_path: Path) -> None:
    data = tmp_path / "data"

    async def main() -> tuple[list[object], int]:
        server = Server(Config(port=0, http_port=0, data=str(data)))
        await server.start()
        reader, writer = await asyncio.open_connection(HOST, server.port)
        writer.write(b"QCREATE q\r\n")
        assert await reader.readline() == b"+OK\r\n"
        writer.write(b"".join(b"QPRODUCE q ITEMS item-%d\r\n" % i for i in range(PIPELINE)))
        await writer.drain()
        # Stop as soon as the server has begun on the pipeline, with most of it still to run.
        while server.state.stats.commands_processed < 2:
            await asyncio.sleep(0)
        stopping = asyncio.create_task(server.stop())
        parsed = hiredis.Reader()
        replies: list[object] = []
        while chunk := await reader.read(65536):
            parsed.feed(chunk)
            while (reply := parsed.gets()) is not False:
                replies.append(reply)
        await stopping
        writer.close()
        async with Service(Config(data=str(data))) as service:
            stored = (await service.queue_stats("q")).ready
        return replies, stored

    replies, stored = run(main())
    # Every reply is a real one (no SHUTDOWN, no error), and exactly the answered produces are stored.
    assert [r for r in replies if not (isinstance(r, list) and len(r) == 1)] == []
    assert len(replies) > 256, "shutdown cut the pipeline at the first turn"
    assert stored == len(replies)


def test_a_blocked_consumer_and_the_commands_behind_it_are_answered_shutdown(tmp_path: Path) -> None:
    async def main() -> list[object]:
        server = Server(Config(port=0, http_port=0, backend="memory"))
        await server.start()
        reader, writer = await asyncio.open_connection(HOST, server.port)
        writer.write(b"QCREATE q\r\nQLEASE q BLOCK 0\r\nQLEN q\r\n")
        assert await reader.readline() == b"+OK\r\n"
        while not server.service.waiting_consumers():
            await asyncio.sleep(0.001)
        await server.stop()
        parsed = hiredis.Reader()
        parsed.feed(await reader.read(65536))
        writer.close()
        replies = []
        while (reply := parsed.gets()) is not False:
            replies.append(reply)
        return replies

    replies = run(main())
    assert [str(r) for r in replies] == ["SHUTDOWN server is shutting down"] * 2
