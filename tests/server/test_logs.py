"""What an operator finds in the log: failed logins (user and address, never the password), clients
refused at max-clients, connections opening and closing at debug level; as key=value text or JSON."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import redis

from tests.support import ServerProcess, connect, recv_line


def start(tmp_path: Path, config: str, *args: str) -> ServerProcess:
    path = tmp_path / "querator.toml"
    path.write_text(config)
    return ServerProcess(tmp_path / "data", "--config", str(path), *args, backend="memory").start()


def send(sock: socket.socket, line: bytes) -> bytes:
    sock.sendall(line + b"\r\n")
    return recv_line(sock)


def test_failed_login_and_rejected_client_as_key_value_text(tmp_path: Path) -> None:
    server = start(tmp_path, 'requirepass = "s3cret-pass"\nmax-clients = 1\n')
    try:
        with connect(server.port) as sock:
            assert send(sock, b"AUTH wrong-guess").startswith(b"-WRONGPASS")
            local = "{}:{}".format(*sock.getsockname())
            with connect(server.port) as refused:
                assert recv_line(refused) == b"-ERR max number of clients reached\r\n"
        assert server.stop() == 0
        lines = server.read_log().splitlines()
        failed = [line for line in lines if 'msg="failed login"' in line]
        assert len(failed) == 1, lines
        assert " level=warning " in failed[0] and " user=default " in failed[0]
        assert failed[0].endswith(f" addr={local}")
        rejected = [line for line in lines if "max number of clients reached" in line]
        assert len(rejected) == 1 and " max_clients=1 rejected=1" in rejected[0], lines
        assert "wrong-guess" not in server.read_log() and "s3cret-pass" not in server.read_log()
    finally:
        server.kill()


def test_json_log_lines_with_connection_events_at_debug(tmp_path: Path) -> None:
    server = start(tmp_path, 'log-format = "json"\n', "--log-level", "debug")
    try:
        with connect(server.port) as sock:
            assert send(sock, b"PING") == b"+PONG\r\n"
            local = "{}:{}".format(*sock.getsockname())
            assert send(sock, b"HELLO 3 AUTH nobody pw").startswith(b"-WRONGPASS")
        assert server.stop() == 0
        records = [json.loads(line) for line in server.read_log().splitlines() if line.strip()]
        by_msg = {record["msg"]: record for record in records}
        assert by_msg["client connected"]["addr"] == local
        assert by_msg["client connected"]["level"] == "debug"
        assert by_msg["client disconnected"]["addr"] == local
        assert by_msg["failed login"]["user"] == "nobody"
        assert any(record["msg"].startswith("Querator ready to accept") for record in records)
        assert all({"time", "level", "logger", "msg"} <= record.keys() for record in records)
    finally:
        server.kill()


def test_dead_lettering_is_one_line_per_step_and_reason(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data", backend="memory").start()
    try:
        client = redis.Redis(port=server.port)
        client.execute_command("QCREATE", "dlq")
        client.execute_command("QCREATE", "jobs", "DEAD-QUEUE", "dlq")
        client.execute_command("QPRODUCE", "jobs", "ITEMS", "a", "b", "c")
        ids = [item[0] for item in client.execute_command("QLEASE", "jobs", "COUNT", "3")]
        assert client.execute_command("QRETRY", "jobs", "DEAD", *ids) == 3
        lines = [line for line in server.read_log().splitlines() if "items dead-lettered" in line]
        assert len(lines) == 1, lines
        assert lines[0].endswith(
            'msg="items dead-lettered" queue=jobs partition=0 count=3 reason=retry-dead dead_queue=dlq'
        )
    finally:
        server.kill()
