"""CLIENT LIST and CLIENT KILL over real sockets: the real fd, the b flag of a blocked QLEASE, and a
killed connection really closed."""

from __future__ import annotations

import time

import redis

from querator.commandstats import OpsMeter
from tests.support import ServerProcess, closed_by_server, connect, recv_line


def test_client_list_fd_and_blocked_flag_then_kill_by_id(memory_server: ServerProcess) -> None:
    admin = redis.Redis(port=memory_server.port)
    admin.execute_command("QCREATE", "jobs")
    with connect(memory_server.port) as blocked:
        blocked.sendall(b"CLIENT ID\r\n")
        blocked_id = int(recv_line(blocked)[1:])
        blocked.sendall(b"QLEASE jobs BLOCK 0\r\n")
        deadline = time.monotonic() + 5
        while True:
            entries = {int(e["id"]): e for e in admin.client_list()}
            if "b" in str(entries[blocked_id]["flags"]) or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        assert str(entries[blocked_id]["flags"]) == "b"
        assert int(entries[blocked_id]["fd"]) > 2
        mine = entries[int(admin.client_id())]
        assert str(mine["flags"]) == "N" and int(mine["fd"]) > 2
        assert admin.execute_command("CLIENT", "KILL", "ID", str(blocked_id)) == 1
        assert closed_by_server(blocked)
    assert blocked_id not in {int(e["id"]) for e in admin.client_list()}
    assert admin.execute_command("CLIENT", "KILL", "ID", str(blocked_id)) == 0


def test_instantaneous_ops_per_sec_is_the_rate_over_the_samples() -> None:
    meter = OpsMeter()
    assert meter.per_second() == 0
    for tick in range(20):
        meter.sample(tick * 0.1, tick * 50)  # 500 commands a second
    assert meter.per_second() == 500
