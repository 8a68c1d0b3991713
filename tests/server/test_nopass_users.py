"""`nopass = true` is the only way to a user whom any password logs in, and each such user is logged."""

from __future__ import annotations

import socket
from pathlib import Path

from tests.support import ServerProcess


def _auth(port: int, line: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(line)
        return sock.recv(200)


def test_a_nopass_user_takes_any_password_and_is_warned_about(tmp_path: Path) -> None:
    config = tmp_path / "users.toml"
    config.write_text(
        'requirepass = "default-pass"\n'
        '[[user]]\nname = "guest"\nnopass = true\ncommands = ["consume"]\n'
        '[[user]]\nname = "writer"\npassword = "writer-pass"\n'
    )
    server = ServerProcess(tmp_path / "data", "--config", str(config), backend="memory").start()
    try:
        assert _auth(server.port, b"AUTH guest whatever\r\n") == b"+OK\r\n"
        assert _auth(server.port, b"AUTH writer whatever\r\n") == (
            b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"
        )
        assert _auth(server.port, b"AUTH writer writer-pass\r\n") == b"+OK\r\n"
        warnings = [line for line in server.read_log().splitlines() if "level=warning" in line]
        nopass = [line for line in warnings if "nopass" in line]
        assert len(nopass) == 1, warnings
        assert nopass[0].endswith("msg=\"user 'guest' has nopass = true: any password logs in as this user\"")
    finally:
        server.kill()
