"""Crash durability through real connections: what the server acknowledged survives SIGKILL and restart."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import redis

from tests.support import ServerProcess


def _produce_until_killed(port: int, worker: int, acked: set[bytes], stop: threading.Event) -> None:
    client = redis.Redis(port=port, socket_timeout=5)
    n = 0
    while not stop.is_set():
        payloads = [f"w{worker}-{n}-{k}".encode() for k in range(3)]
        n += 1
        try:
            client.execute_command("QPRODUCE", "q", "ITEMS", *payloads)
        except (redis.ConnectionError, redis.TimeoutError):
            return  # outcome unknown: neither acknowledged nor counted
        acked.update(payloads)


def _drain(port: int) -> list[bytes]:
    client = redis.Redis(port=port)
    seen: list[bytes] = []
    while True:
        items = client.execute_command("QLEASE", "q", "COUNT", "1000")
        if not items:
            return seen
        seen.extend(item[1] for item in items)
        client.execute_command("QCOMPLETE", "q", *[item[0] for item in items])


@pytest.mark.parametrize("durability", ["fsync", "flush"])
def test_sigkill_while_20_clients_produce_loses_no_acknowledged_item(tmp_path: Path, durability: str) -> None:
    server = ServerProcess(tmp_path / "data", durability=durability).start()
    try:
        redis.Redis(port=server.port).execute_command("QCREATE", "q", "PARTITIONS", "4")
        acked: set[bytes] = set()
        stop = threading.Event()
        workers = [
            threading.Thread(target=_produce_until_killed, args=(server.port, w, acked, stop))
            for w in range(20)
        ]
        for worker in workers:
            worker.start()
        deadline = time.monotonic() + 10
        while len(acked) < 3000 and time.monotonic() < deadline:
            time.sleep(0.05)
        server.kill()
        stop.set()
        for worker in workers:
            worker.join(10)
        assert len(acked) >= 300, "the producers barely ran; the test proves nothing"
        server.restart()
        found = _drain(server.port)
        missing = acked - set(found)
        assert not missing, f"{len(missing)} acknowledged items lost, e.g. {sorted(missing)[:3]}"
        assert len(found) == len(set(found)), "an item came back twice"
    finally:
        server.kill()


def test_completed_items_are_not_delivered_again_after_sigkill(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data").start()
    try:
        client = redis.Redis(port=server.port)
        client.execute_command("QCREATE", "q", "LEASE-TIMEOUT", "1000")
        client.execute_command("QPRODUCE", "q", "ITEMS", *[f"p{i}".encode() for i in range(200)])
        completed: set[bytes] = set()
        for _ in range(10):
            items = client.execute_command("QLEASE", "q", "COUNT", "10")
            assert client.execute_command("QCOMPLETE", "q", *[i[0] for i in items]) == len(items)
            completed.update(i[1] for i in items)
        server.kill()
        server.restart()
        # Leases taken but not completed would come back after 1 s; wait past that so all remaining show.
        time.sleep(1.2)
        found = set(_drain(server.port))
        assert not (found & completed)
        assert found == {f"p{i}".encode() for i in range(200)} - completed
    finally:
        server.kill()


def test_leases_attempts_and_schedules_survive_sigkill(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data").start()
    try:
        client = redis.Redis(port=server.port)
        client.execute_command("QCREATE", "q", "LEASE-TIMEOUT", "600000")
        client.execute_command("QPRODUCE", "q", "ITEMS", "a", "b")
        client.execute_command("QPRODUCE", "q", "DELAY", "600000", "ITEMS", "later")
        leased = client.execute_command("QLEASE", "q")
        server.kill()
        server.restart()
        client = redis.Redis(port=server.port)
        stats = client.execute_command("QSTATS", "q")  # RESP3 (redis-py 8 default): a map
        assert (stats[b"ready"], stats[b"leased"], stats[b"scheduled"]) == (1, 1, 1)
        # The lease held before the crash is still exclusive and still completes with its id.
        assert client.execute_command("QLEASE", "q", "COUNT", "10")[0][1] == b"b"
        assert client.execute_command("QCOMPLETE", "q", leased[0][0]) == 1
    finally:
        server.kill()


def test_ids_issued_after_a_crash_never_repeat_earlier_ones(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data").start()
    try:
        client = redis.Redis(port=server.port)
        client.execute_command("QCREATE", "q")
        before = client.execute_command("QPRODUCE", "q", "ITEMS", "a", "b")
        items = client.execute_command("QLEASE", "q", "COUNT", "2")
        client.execute_command("QCOMPLETE", "q", *[i[0] for i in items])
        server.kill()
        server.restart()
        after = redis.Redis(port=server.port).execute_command("QPRODUCE", "q", "ITEMS", "c")
        assert not set(after) & set(before)
    finally:
        server.kill()
