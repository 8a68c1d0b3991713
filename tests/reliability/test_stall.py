"""Lease invariants when a consumer stalls: a frozen (SIGSTOP) consumer's leases come back within the
lease timeout + 1 s, and its stale ids never complete the later delivery."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import redis

from tests.support import ServerProcess

_CONSUMER = """
import json, sys, redis
client = redis.Redis(port=int(sys.argv[1]), protocol=2)
items = client.execute_command("QLEASE", "q", "COUNT", "10")
print(json.dumps([[i[0].decode(), i[1].decode(), i[3]] for i in items]), flush=True)
line = sys.stdin.readline()  # after SIGCONT the test tells us to try completing our (stale) ids
print(client.execute_command("QCOMPLETE", "q", *[i[0] for i in items]), flush=True)
"""


def test_frozen_consumer_leases_expire_in_time_and_its_ids_go_stale(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data").start()
    consumer = None
    try:
        client = redis.Redis(port=server.port, protocol=2)
        client.execute_command("QCREATE", "q", "LEASE-TIMEOUT", "1000")
        client.execute_command("QPRODUCE", "q", "ITEMS", *[f"p{i}" for i in range(5)])
        consumer = subprocess.Popen(
            [sys.executable, "-c", _CONSUMER, str(server.port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert consumer.stdout is not None and consumer.stdin is not None
        leased = json.loads(consumer.stdout.readline())
        assert sorted(p for _, p, _ in leased) == [f"p{i}" for i in range(5)]
        consumer.send_signal(signal.SIGSTOP)

        # Another consumer blocks for them: they must come back, each within its deadline + 1 s.
        deadline_of = {payload: deadline for _, payload, deadline in leased}
        again: dict[str, tuple[str, float]] = {}
        give_up = time.monotonic() + 10
        while len(again) < 5 and time.monotonic() < give_up:
            for item in client.execute_command("QLEASE", "q", "COUNT", "10", "BLOCK", "500"):
                again[item[1].decode()] = (item[0].decode(), time.time() * 1000)
        assert sorted(again) == sorted(deadline_of)
        for payload, (_, seen_at_ms) in again.items():
            assert seen_at_ms <= deadline_of[payload] + 1000 + 200, payload  # 200 ms for the client side

        # The frozen consumer wakes up and completes its old ids: they name nothing any more.
        consumer.send_signal(signal.SIGCONT)
        consumer.stdin.write("go\n")
        consumer.stdin.flush()
        assert int(consumer.stdout.readline()) == 0
        assert client.execute_command("QCOMPLETE", "q", *[new_id for new_id, _ in again.values()]) == 5
        stats = client.execute_command("QSTATS", "q")
        as_dict = dict(zip(stats[::2], stats[1::2], strict=True))
        assert (as_dict[b"total"], as_dict[b"lease-expired"], as_dict[b"completed"]) == (0, 5, 5)
    finally:
        if consumer is not None:
            consumer.kill()
        server.kill()
