"""The client and worker on SPEC section 7 (DEDUP, DEDUP-WINDOW, REASON, QPAUSE / QRESUME, QREDRIVE, QGET
and the new QINFO / QSTATS / QITEMS fields).

Every test here needs a server that implements section 7; against one that does not they fail (the
server answers `-ERR syntax error` or `-ERR unknown command`). The worker sends REASON with every
failure, unconditionally, because it is the contract: its retry and dead-letter tests are here too."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable

from querator.client import Client, Dead, Item, Worker
from tests.client.conftest import running, wait_until


def test_retry_keeps_the_reason_on_the_item(client: Client, new_queue: Callable[..., str]) -> None:
    name = new_queue()
    client.produce(name, [b"x"])
    [item] = client.lease(name)
    assert client.retry(name, [item.id], delay_ms=60_000, reason="boom") == 1
    [stored] = client.items(name)
    assert (stored.state, stored.reason) == ("scheduled", "boom")


def test_get_returns_one_item_or_none(client: Client, new_queue: Callable[..., str]) -> None:
    name = new_queue()
    [id_] = client.produce(name, [b"payload"], kind="k")
    stored = client.get(name, id_)
    assert stored is not None
    assert (stored.id, stored.state, stored.payload, stored.kind, stored.attempts) == (
        id_,
        "ready",
        b"payload",
        "k",
        0,
    )
    assert client.get(name, id_.rsplit("-", 1)[0] + "-999999") is None


def test_pause_and_resume(client: Client, new_queue: Callable[..., str]) -> None:
    name = new_queue()
    client.produce(name, [b"x"])
    client.pause(name)
    assert client.info(name).paused is True
    assert client.lease(name) == []
    client.resume(name)
    assert client.info(name).paused is False
    assert len(client.lease(name)) == 1


def test_dedup_returns_the_first_ids_and_counts(client: Client, new_queue: Callable[..., str]) -> None:
    name = new_queue(dedup_window=60_000)
    assert client.info(name).dedup_window == 60_000
    first = client.produce(name, [b"a", b"b"], dedup="order-1")
    assert client.produce(name, [b"c"], dedup="order-1") == first
    stats = client.stats(name)
    assert (stats.produced, stats.deduplicated) == (2, 1)


def test_redrive_moves_dead_items_back_with_provenance_gone(
    client: Client, new_queue: Callable[..., str]
) -> None:
    dead = new_queue()
    name = new_queue(dead_queue=dead)
    client.produce(name, [b"a", b"b"])
    items = client.lease(name, count=2)
    client.retry(name, [i.id for i in items], dead=True, reason="bad")
    [first, _] = client.items(dead)
    assert (first.source_queue, first.dead_reason, first.reason) == (name, "retry-dead", "bad")
    assert first.source_id == items[0].id
    assert client.redrive(dead, limit=1) == 1
    assert client.redrive(dead) == 1
    assert client.length(name) == 2
    assert {i.payload for i in client.lease(name, count=2)} == {b"a", b"b"}


def test_worker_failure_then_success_backs_off_with_the_reason(
    url: str, admin: Client, new_queue: Callable[..., str]
) -> None:
    name = new_queue()
    admin.produce(name, [b"flaky"])
    attempts: list[tuple[int, float]] = []
    failures: list[str] = []

    def handler(item: Item) -> None:
        attempts.append((item.attempts, time.monotonic()))
        if item.attempts == 1:
            raise ValueError("first try fails")

    worker = Worker(
        url,
        name,
        handler,
        backoff_base_ms=400,
        backoff_cap_ms=10_000,
        on_failure=lambda item, exc, seconds: failures.append(str(exc)),
    )
    with running(worker):
        wait_until(lambda: admin.stats(name).scheduled == 1, timeout=10)
        [stored] = admin.items(name)
        assert stored.reason == "first try fails"
        wait_until(lambda: admin.stats(name).completed == 1, timeout=10)
    assert [a for a, _ in attempts] == [1, 2]
    assert attempts[1][1] - attempts[0][1] >= 0.2  # at least half the base delay: 400 ms * [0.5, 1]
    assert failures == ["first try fails"]
    stats = admin.stats(name)
    assert (stats.retried, stats.lease_expired) == (1, 0)


def test_worker_dead_sends_the_item_to_the_dead_queue_at_once(
    url: str, admin: Client, new_queue: Callable[..., str]
) -> None:
    dead = new_queue()
    name = new_queue(dead_queue=dead, max_attempts=10)

    def handler(item: Item) -> None:
        raise Dead("cannot parse")

    admin.produce(name, [b"poison"])
    worker = Worker(url, name, handler)
    with running(worker):
        wait_until(lambda: admin.length(dead) == 1, timeout=10)
    [stored] = admin.items(dead)
    assert (stored.payload, stored.reason, stored.dead_reason, stored.source_queue) == (
        b"poison",
        "cannot parse",
        "retry-dead",
        name,
    )
    assert admin.stats(name).dead_lettered == 1


def test_admin_redrive_moves_everything_and_says_how_many(
    url: str, admin: Client, new_queue: Callable[..., str]
) -> None:
    dead = new_queue()
    name = new_queue(dead_queue=dead)
    admin.produce(name, [f"{i}".encode() for i in range(2500)][:1000])
    admin.produce(name, [f"{i}".encode() for i in range(1000, 2500)][:1000])
    for _ in range(2):
        items = admin.lease(name, count=1000)
        admin.retry(name, [i.id for i in items], dead=True)
    out = subprocess.run(
        [sys.executable, "-m", "querator", "redrive", dead, "--url", url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "moved 2000 items"
    assert admin.length(name) == 2000
