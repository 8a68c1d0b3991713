"""`Client` and `AsyncClient` against a real server: every queue command of SPEC sections 3 as a typed
method, errors with their wire codes, and the same results under RESP2 and RESP3."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from typing import Any

import pytest

from querator.client import (
    AsyncClient,
    Client,
    Item,
    NoQueue,
    PartitionStats,
    QueratorError,
    QueueExists,
    QueueInfo,
    QueueStats,
    StoredItem,
)
from tests.client.conftest import wait_until
from tests.support import ServerProcess


def test_create_queue_takes_the_services_option_names(client: Client, new_queue: Callable[..., str]) -> None:
    dead = new_queue()
    name = new_queue(
        partitions=2,
        lease_timeout=5000,
        expire_timeout=60_000,
        max_attempts=3,
        dead_queue=dead,
        reference="ref",
    )
    info = client.info(name)
    assert isinstance(info, QueueInfo)
    assert (info.name, info.partitions, info.lease_timeout, info.expire_timeout, info.max_attempts) == (
        name,
        2,
        5000,
        60_000,
        3,
    )
    assert (info.dead_queue, info.reference, info.paused) == (dead, "ref", False)
    assert info.created_at > 0 and info.updated_at >= info.created_at


def test_update_queue_changes_only_the_options_given(client: Client, new_queue: Callable[..., str]) -> None:
    name = new_queue(lease_timeout=5000, reference="a")
    client.update_queue(name, max_attempts=7)
    info = client.info(name)
    assert (info.lease_timeout, info.max_attempts, info.reference) == (5000, 7, "a")


def test_unknown_option_is_a_type_error_before_any_call(client: Client) -> None:
    with pytest.raises(TypeError, match="lease_timout"):
        client.create_queue("never", lease_timout=5)


def test_list_and_delete_queues(client: Client, new_queue: Callable[..., str]) -> None:
    a, b = sorted([new_queue(), new_queue()])
    assert [q for q in client.list_queues() if q in (a, b)] == [a, b]
    [after_a] = client.list_queues(after=a, limit=1)
    assert a < after_a <= b
    client.delete_queue(a)
    assert a not in client.list_queues()


def test_errors_carry_the_wire_code(client: Client, new_queue: Callable[..., str]) -> None:
    name = new_queue()
    with pytest.raises(NoQueue) as missing:
        client.info("no-such-queue")
    assert missing.value.code == "NOQUEUE" and missing.value.message == "no such queue 'no-such-queue'"
    with pytest.raises(QueueExists) as exists:
        client.create_queue(name)
    assert exists.value.code == "EXISTS"
    with pytest.raises(QueratorError) as bad:
        client.lease(name, count=1001)
    assert type(bad.value) is QueratorError
    assert bad.value.code == "ERR" and bad.value.message == "COUNT must be between 1 and 1000"
    assert str(bad.value) == "ERR COUNT must be between 1 and 1000"


def test_produce_then_lease_gives_typed_items(client: Client, new_queue: Callable[..., str]) -> None:
    name = new_queue()
    ids = client.produce(name, [b"\x00\xffbinary", "text"], kind="k", reference="r", encoding="e")
    assert len(ids) == 2 and all(isinstance(i, str) for i in ids)
    items = client.lease(name, count=5)
    assert [i.id for i in items] == ids
    first = items[0]
    assert isinstance(first, Item)
    assert (first.payload, first.attempts, first.kind, first.reference, first.encoding) == (
        b"\x00\xffbinary",
        1,
        "k",
        "r",
        "e",
    )
    assert first.lease_deadline > 0
    assert client.complete(name, ids) == 2
    assert client.stats(name).completed == 2


def test_a_single_payload_and_a_single_id_are_not_split(
    client: Client, new_queue: Callable[..., str]
) -> None:
    name = new_queue()
    [id_] = client.produce(name, b"one")
    [item] = client.lease(name)
    assert item.payload == b"one"
    assert client.complete(name, id_) == 1


def test_empty_id_lists_answer_zero_without_a_call(client: Client, new_queue: Callable[..., str]) -> None:
    name = new_queue()
    assert client.complete(name, []) == 0
    assert client.retry(name, []) == 0
    assert client.extend(name, []) == 0
    assert client.remove(name, []) == 0


def test_lease_block_waits_then_returns_empty(client: Client, new_queue: Callable[..., str]) -> None:
    name = new_queue()
    assert client.lease(name, count=3, block_ms=50) == []


def test_scheduled_produce_and_length(client: Client, new_queue: Callable[..., str]) -> None:
    name = new_queue()
    client.produce(name, [b"later"], delay_ms=60_000)
    client.produce(name, [b"now"])
    assert client.length(name) == 1
    stats = client.stats(name)
    assert (stats.ready, stats.scheduled, stats.total) == (1, 1, 2)


def test_retry_extend_remove_clear(client: Client, new_queue: Callable[..., str]) -> None:
    name = new_queue(lease_timeout=60_000)
    client.produce(name, [b"a", b"b", b"c", b"d"])
    a, b, c = client.lease(name, count=3)
    assert client.extend(name, [a.id], for_ms=120_000) == 1
    assert client.retry(name, [a.id]) == 1
    assert client.retry(name, [b.id], delay_ms=60_000) == 1
    assert client.stats(name).retried == 2
    assert client.remove(name, [c.id]) == 1
    assert client.clear(name) == 3  # a (ready again), b (scheduled), d
    assert client.stats(name).total == 0


def test_clear_all_removes_leased_items_too(client: Client, new_queue: Callable[..., str]) -> None:
    name = new_queue()
    client.produce(name, [b"a", b"b"])
    client.lease(name)
    assert client.clear(name, all=True) == 2


def test_retry_dead_moves_to_the_dead_queue(client: Client, new_queue: Callable[..., str]) -> None:
    dead = new_queue()
    name = new_queue(dead_queue=dead)
    client.produce(name, [b"x"], kind="k")
    [item] = client.lease(name)
    assert client.retry(name, [item.id], dead=True) == 1
    assert client.stats(name).dead_lettered == 1
    [moved] = client.lease(dead)
    assert (moved.payload, moved.kind, moved.attempts) == (b"x", "k", 1)


def test_items_lists_stored_items_with_their_state(client: Client, new_queue: Callable[..., str]) -> None:
    name = new_queue(partitions=2)
    client.produce(name, [b"a", b"b"], kind="k")
    client.lease(name)
    listed = client.items(name)
    assert all(isinstance(i, StoredItem) for i in listed)
    assert sorted(i.state for i in listed) == ["leased", "ready"]
    assert {i.payload for i in listed} == {b"a", b"b"}
    assert listed[0].kind == "k" and listed[0].created_at > 0
    assert client.items(name, limit=1) == listed[:1]
    assert client.items(name, after=listed[0].id) == listed[1:]


def test_stats_has_one_entry_per_partition(client: Client, new_queue: Callable[..., str]) -> None:
    name = new_queue(partitions=3)
    client.produce(name, [b"a"])
    stats = client.stats(name)
    assert isinstance(stats, QueueStats)
    assert [p.partition for p in stats.partitions] == [0, 1, 2]
    assert all(isinstance(p, PartitionStats) for p in stats.partitions)
    assert sum(p.ready for p in stats.partitions) == stats.ready == 1


def _scenario(client: Client, name: str) -> list[Any]:
    """One sequence of calls; its results, with what differs between two queues (names, times, ids)
    blanked, must not depend on the protocol."""
    client.create_queue(name, partitions=2, lease_timeout=30_000, max_attempts=4)
    client.produce(name, [b"a", b"b", b"c"], kind="k", reference="r")
    leased = client.lease(name, count=2)
    client.retry(name, [leased[0].id], delay_ms=60_000)

    def blank(value: Any) -> Any:
        if isinstance(value, list):
            return [blank(v) for v in value]
        fields = dataclasses.asdict(value)
        for key in (
            "name",
            "id",
            "created_at",
            "updated_at",
            "enqueue_at",
            "lease_deadline",
            "oldest_ready_age",
        ):
            fields.pop(key, None)
        return (type(value).__name__, fields)

    return [
        blank(leased),
        blank(client.info(name)),
        blank(client.stats(name)),
        blank(client.items(name)),
        client.length(name),
    ]


def test_resp2_and_resp3_give_equal_results(url: str, qserver: ServerProcess) -> None:
    with Client(url, protocol=2) as two, Client(url, protocol=3) as three:
        assert _scenario(two, "same-resp2") == _scenario(three, "same-resp3")


def test_decode_responses_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="decode_responses"):
        Client(url, decode_responses=True)


def test_client_reconnects_after_the_server_restarts(tmp_path: Any) -> None:
    proc = ServerProcess(tmp_path / "data").start()
    try:
        with Client(f"redis://127.0.0.1:{proc.port}") as c:
            c.create_queue("durable")
            c.produce("durable", [b"x"])
            proc.stop()
            proc.start()
            wait_until(lambda: proc.port > 0)
            # The pooled connection died with the server; redis-py reconnects on the next call.
            assert c.length("durable") == 1
    finally:
        proc.kill()


def test_async_client_has_the_same_methods(url: str, protocol: int) -> None:
    async def main() -> tuple[Any, ...]:
        async with AsyncClient(url, protocol=protocol) as c:
            name = f"async-{protocol}"
            await c.create_queue(name, lease_timeout=10_000)
            ids = await c.produce(name, [b"a", b"b"])
            items = await c.lease(name, count=2)
            extended = await c.extend(name, [items[0].id])
            completed = await c.complete(name, [i.id for i in items])
            with pytest.raises(NoQueue):
                await c.stats("missing")
            stats = await c.stats(name)
            info = await c.info(name)
            await c.delete_queue(name)
            return ids, [i.payload for i in items], extended, completed, stats.completed, info.lease_timeout

    ids, payloads, extended, completed, stats_completed, lease_timeout = asyncio.run(main())
    assert len(ids) == 2 and payloads == [b"a", b"b"]
    assert (extended, completed, stats_completed, lease_timeout) == (1, 2, 2, 10_000)
