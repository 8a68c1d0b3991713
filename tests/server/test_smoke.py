from __future__ import annotations

import redis

from tests.support import ServerProcess


def test_redis_py_resp3_ping_and_produce(server: ServerProcess) -> None:
    client = redis.Redis(port=server.port, protocol=3)
    assert client.ping() is True
    assert client.execute_command("QCREATE", "q") == b"OK"
    ids = client.execute_command("QPRODUCE", "q", "ITEMS", "a", "b")
    assert len(ids) == 2
    leased = client.execute_command("QLEASE", "q", "COUNT", "2")
    assert [item[1] for item in leased] == [b"a", b"b"]
    assert client.execute_command("QCOMPLETE", "q", *[item[0] for item in leased]) == 2
