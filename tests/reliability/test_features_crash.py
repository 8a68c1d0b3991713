"""SPEC section 7 across SIGKILL: a redrive moves each item exactly once (the same rule as dead-lettering),
a deduplicated produce stays deduplicated, and a pause stays paused.

Each test runs a real server on RocksDB (fsync), kills it with SIGKILL while (or right after) the feature
works, restarts it on the same data directory and checks what the SPEC promises. Clients make no retries
of their own: a call cut by the kill has an unknown outcome, and the checks allow for either.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.support import ServerProcess

CUT = (redis.ConnectionError, redis.TimeoutError)


def _client(port: int) -> redis.Redis:
    """RESP3 (maps for QITEMS), no client-side retry: an interrupted call is reported, not replayed."""
    return redis.Redis(port=port, protocol=3, socket_timeout=10, retry=Retry(NoBackoff(), 0))


def _fill_dead_queue(client: redis.Redis, n: int) -> set[bytes]:
    """`src` (dead queue `dlq`), `target`, and `n` items dead-lettered from `src` by QRETRY DEAD; their
    payloads."""
    client.execute_command("QCREATE", "dlq", "PARTITIONS", "2")
    client.execute_command(
        "QCREATE", "src", "DEAD-QUEUE", "dlq", "PARTITIONS", "2", "LEASE-TIMEOUT", "600000"
    )
    client.execute_command("QCREATE", "target")
    payloads: set[bytes] = set()
    for start in range(0, n, 1000):
        chunk = [b"item-%d" % i for i in range(start, min(n, start + 1000))]
        client.execute_command("QPRODUCE", "src", "ITEMS", *chunk)
        leased = client.execute_command("QLEASE", "src", "COUNT", str(len(chunk)))
        assert len(leased) == len(chunk)
        assert client.execute_command("QRETRY", "src", "DEAD", *[i[0] for i in leased]) == len(chunk)
        payloads.update(chunk)
    assert client.execute_command("QLEN", "dlq") == n
    return payloads


def _items(client: redis.Redis, queue: str) -> list[dict[bytes, Any]]:
    """Every item of `queue`, paged through QITEMS."""
    found: list[dict[bytes, Any]] = []
    after: list[Any] = []
    while True:
        page = client.execute_command("QITEMS", queue, "LIMIT", "1000", *after)
        if not page:
            return found
        found.extend(page)
        after = ["AFTER", page[-1][b"id"]]


def _wait(predicate: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.001)


def _check_exactly_once(
    client: redis.Redis, payloads: set[bytes], destination: str, acked_moves: int
) -> tuple[int, int]:
    """Every item is in the dead queue or at its destination, never both, never lost, never twice; every
    acknowledged move is there. How many arrived and how many stayed."""
    arrived = _items(client, destination)
    stayed = _items(client, "dlq")
    arrived_payloads = [i[b"payload"] for i in arrived]
    stayed_payloads = [i[b"payload"] for i in stayed]
    assert len(arrived_payloads) == len(set(arrived_payloads)), "an item arrived twice"
    assert len(stayed_payloads) == len(set(stayed_payloads)), "an item is twice in the dead queue"
    assert not set(arrived_payloads) & set(stayed_payloads), "an item is both moved and not moved"
    assert set(arrived_payloads) | set(stayed_payloads) == payloads, "an item was lost"
    assert len(arrived) >= acked_moves, "an acknowledged move was lost"
    # Moved items arrived as fresh produces; the others kept their provenance.
    assert all((i[b"attempts"], i[b"source-queue"], i[b"dead-reason"]) == (0, b"", b"") for i in arrived)
    assert all((i[b"source-queue"], i[b"dead-reason"]) == (b"src", b"retry-dead") for i in stayed)
    return len(arrived), len(stayed)


# -- redrive ------------------------------------------------------------------------------------------------


def _redrive_until_cut(port: int, args: list[str], acked: list[int], cut: list[int]) -> None:
    client = _client(port)
    while True:
        try:
            moved = client.execute_command("QREDRIVE", "dlq", *args, "LIMIT", "20")
        except CUT:
            cut.append(1)
            return
        acked.append(moved)
        if moved == 0:
            return


@pytest.mark.parametrize("destination", ["src", "target"])
def test_sigkill_during_redrives_moves_each_item_exactly_once(tmp_path: Path, destination: str) -> None:
    server = ServerProcess(tmp_path / "data").start()
    try:
        payloads = _fill_dead_queue(_client(server.port), 4000)
        args = [] if destination == "src" else ["TO", "target"]
        acked: list[int] = []
        cut: list[int] = []
        for kill_after in (600, 1800):  # items acknowledged as moved before each SIGKILL
            workers = [
                threading.Thread(target=_redrive_until_cut, args=(server.port, args, acked, cut))
                for _ in range(4)
            ]
            for worker in workers:
                worker.start()
            _wait(lambda n=kill_after: sum(acked) >= n)
            server.kill()
            for worker in workers:
                worker.join(10)
            server.restart()
            _check_exactly_once(_client(server.port), payloads, destination, sum(acked))
        assert cut, "no redrive was cut by the kills: the test proves nothing"
        # The rest moves after the crashes as if nothing had happened.
        client = _client(server.port)
        while client.execute_command("QREDRIVE", "dlq", *args, "LIMIT", "100000"):
            pass
        assert _check_exactly_once(client, payloads, destination, sum(acked)) == (4000, 0)
    finally:
        server.kill()


def test_sigkill_during_one_large_redrive_moves_each_item_exactly_once(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data").start()
    try:
        payloads = _fill_dead_queue(_client(server.port), 10_000)
        acked = 0
        for delay in (0.005, 0.03, 0.1):
            client = _client(server.port)
            outcome: list[Any] = []

            def redrive(c: redis.Redis = client, out: list[Any] = outcome) -> None:
                try:
                    out.append(c.execute_command("QREDRIVE", "dlq", "LIMIT", "100000"))
                except CUT as exc:
                    out.append(exc)

            worker = threading.Thread(target=redrive)
            worker.start()
            time.sleep(delay)  # the kill lands at a different point of the redrive each round
            server.kill()
            worker.join(10)
            server.restart()
            assert outcome, "the redrive failed with an error reply"
            acked += outcome[0] if isinstance(outcome[0], int) else 0
            _check_exactly_once(_client(server.port), payloads, "src", acked)
        client = _client(server.port)
        client.execute_command("QREDRIVE", "dlq", "LIMIT", "100000")
        assert _check_exactly_once(client, payloads, "src", acked) == (10_000, 0)
    finally:
        server.kill()


# -- deduplication ------------------------------------------------------------------------------------------


def test_deduplicated_produce_stays_deduplicated_after_sigkill(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data").start()
    try:
        client = _client(server.port)
        client.execute_command("QCREATE", "q", "PARTITIONS", "2")
        first = client.execute_command("QPRODUCE", "q", "DEDUP", "k", "ITEMS", "a", "b")
        server.kill()
        server.restart()
        client = _client(server.port)
        assert client.execute_command("QPRODUCE", "q", "DEDUP", "k", "ITEMS", "a", "b") == first
        stats = client.execute_command("QSTATS", "q")
        assert (stats[b"total"], stats[b"produced"], stats[b"deduplicated"]) == (2, 2, 1)
        server.kill()
        server.restart()
        assert _client(server.port).execute_command("QSTATS", "q")[b"deduplicated"] == 1
    finally:
        server.kill()


def _produce_with_keys(
    port: int, worker: int, invoked: dict[str, list[bytes]], acked: dict[str, list[bytes]]
) -> None:
    client = _client(port)
    for n in range(1_000_000):
        key = f"w{worker}-{n}"
        payloads = [f"{key}-{k}".encode() for k in range(3)]
        invoked[key] = payloads
        try:
            acked[key] = client.execute_command("QPRODUCE", "q", "DEDUP", key, "ITEMS", *payloads)
        except CUT:
            return


def test_every_produce_repeated_after_sigkill_is_stored_exactly_once(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data").start()
    try:
        _client(server.port).execute_command("QCREATE", "q", "PARTITIONS", "4")
        invoked: dict[str, list[bytes]] = {}
        acked: dict[str, list[bytes]] = {}
        workers = [
            threading.Thread(target=_produce_with_keys, args=(server.port, w, invoked, acked))
            for w in range(8)
        ]
        for worker in workers:
            worker.start()
        _wait(lambda: len(acked) >= 1000)
        server.kill()
        for worker in workers:
            worker.join(10)
        assert len(acked) >= 300, "the producers barely ran; the test proves nothing"
        server.restart()
        client = _client(server.port)
        stored = client.execute_command("QSTATS", "q")[b"total"]
        # A repeat of an acknowledged call returns its ids and stores nothing.
        for key, ids in acked.items():
            assert client.execute_command("QPRODUCE", "q", "DEDUP", key, "ITEMS", *invoked[key]) == ids
        stats = client.execute_command("QSTATS", "q")
        assert (stats[b"total"], stats[b"deduplicated"]) == (stored, len(acked))
        # A repeat of a call cut by the kill stores it only if the cut call was not applied.
        for key in invoked.keys() - acked.keys():
            client.execute_command("QPRODUCE", "q", "DEDUP", key, "ITEMS", *invoked[key])
        found = [i[b"payload"] for i in _items(client, "q")]
        expected = [p for payloads in invoked.values() for p in payloads]
        assert sorted(found) == sorted(expected), "an item is missing or stored twice"
    finally:
        server.kill()


# -- pause --------------------------------------------------------------------------------------------------


def test_pause_and_resume_acknowledged_survive_sigkill(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data").start()
    try:
        client = _client(server.port)
        client.execute_command("QCREATE", "q")
        client.execute_command("QPRODUCE", "q", "ITEMS", "a")
        client.execute_command("QPAUSE", "q")
        server.kill()
        server.restart()
        client = _client(server.port)
        assert client.execute_command("QINFO", "q")[b"paused"] == 1
        assert client.execute_command("QLEASE", "q") == []
        client.execute_command("QRESUME", "q")
        server.kill()
        server.restart()
        client = _client(server.port)
        assert client.execute_command("QINFO", "q")[b"paused"] == 0
        assert [i[1] for i in client.execute_command("QLEASE", "q")] == [b"a"]
    finally:
        server.kill()
