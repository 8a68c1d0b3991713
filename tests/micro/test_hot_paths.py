"""Micro-benchmarks of the hot functions (pytest-benchmark): the parser, the encoder, key and id building,
and one partition step. `make test` runs them once each with benchmarking disabled, so they keep working;
`make bench-micro` measures them and compares with the saved baseline (`--benchmark-compare`). They are
measurements, not tests of speed: nothing here asserts a time."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from querator.clock import ManualClock
from querator.commands.item_cmds import _ids_reply, _lease_reply
from querator.config import Config
from querator.ids import IdFormat
from querator.model import LeasedItem
from querator.records import READY, lease_many, new_record_prefix, ready_keys, seq_keys
from querator.resp import NEED_DATA, RequestParser, encode
from querator.service import Service

ONE_PRODUCE = b"*4\r\n$8\r\nQPRODUCE\r\n$1\r\nq\r\n$5\r\nITEMS\r\n$5\r\nhello\r\n"
HUNDRED_PRODUCE = b"*103\r\n$8\r\nQPRODUCE\r\n$1\r\nq\r\n$5\r\nITEMS\r\n" + b"$5\r\nhello\r\n" * 100


def _parse_all(data: bytes) -> int:
    parser = RequestParser()
    parser.feed(data)
    commands = 0
    while parser.next_command() is not NEED_DATA:
        commands += 1
    return commands


@pytest.mark.parametrize(
    ("name", "data", "commands"), [("one", ONE_PRODUCE, 1), ("hundred", HUNDRED_PRODUCE, 1)]
)
def test_parse_qproduce(benchmark: Any, name: str, data: bytes, commands: int) -> None:
    assert benchmark(_parse_all, data) == commands


def test_parse_pipeline_of_16(benchmark: Any) -> None:
    assert benchmark(_parse_all, ONE_PRODUCE * 16) == 16


def test_encode_lease_reply_of_100(benchmark: Any) -> None:
    items = IdFormat(1, 0).run(1, 100)
    leased = [LeasedItem(i, b"payload", 1, 1_800_000_000_000) for i in items]
    reply = benchmark(_lease_reply, leased)
    assert reply.startswith(b"*100\r\n*7\r\n")


def test_encode_ids_reply_of_100(benchmark: Any) -> None:
    ids = IdFormat(1, 0).run(1, 100)
    assert benchmark(_ids_reply, ids).startswith(b"*100\r\n$5\r\n1-0-1")


def test_encode_generic_map(benchmark: Any) -> None:
    value = {"ready": 1, "leased": 2, "partitions": [{"partition": 0, "ready": 1}]}
    assert benchmark(encode, value, 3).startswith(b"%3\r\n")


def test_build_100_ready_keys(benchmark: Any) -> None:
    keys = benchmark(ready_keys, 1_000, 100)
    assert keys[0] == seq_keys(READY, [1_000])[0]


def test_format_100_ids(benchmark: Any) -> None:
    assert benchmark(IdFormat(7, 3).run, 1, 100)[-1] == "7-3-100"


def test_lease_many_100_records(benchmark: Any) -> None:
    head = new_record_prefix(1, 1, b"", b"", b"")
    values = [head + b"payload-%d" % i for i in range(100)]
    leased = benchmark(lease_many, values, 1_800_000_000_000)
    assert leased is not None and leased[1][0] == 1


def test_one_partition_step_produce_100_then_lease_100(benchmark: Any) -> None:
    """One produce of 100 items and one lease of 100 through the Service on the memory backend: two actor
    steps, everything but the sockets and the disk."""
    loop = asyncio.new_event_loop()
    service = Service(Config(backend="memory"), clock=ManualClock())
    loop.run_until_complete(service.start())
    loop.run_until_complete(service.create_queue("q"))
    payloads = [b"x" * 16] * 100

    async def cycle() -> int:
        await service.produce("q", payloads)
        leased = await service.lease("q", 100)
        await service.complete("q", [item.id for item in leased])
        return len(leased)

    try:
        assert benchmark(lambda: loop.run_until_complete(cycle())) == 100
    finally:
        loop.run_until_complete(service.close())
        loop.close()
