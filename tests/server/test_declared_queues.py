"""Declared queues through a real server: a changed `[[queue]]` table takes effect at the next start."""

from __future__ import annotations

from pathlib import Path

import redis

from tests.support import ServerProcess


def test_a_changed_table_applies_at_restart_and_logs_each_change(tmp_path: Path) -> None:
    config = tmp_path / "querator.toml"
    # The dead queue is declared after the queue that names it: the order in the file does not matter.
    config.write_text(
        '[[queue]]\nname = "emails"\nlease-timeout = 60000\ndead-queue = "emails-dead"\n'
        '[[queue]]\nname = "emails-dead"\n'
    )
    server = ServerProcess(tmp_path / "data", "--config", str(config)).start()
    try:
        client = redis.Redis(port=server.port, protocol=3)
        info = client.execute_command("QINFO", "emails")
        assert (info[b"lease-timeout"], info[b"dead-queue"]) == (60000, b"emails-dead")
        client.execute_command("QPRODUCE", "emails", "ITEMS", "hello")
        client.execute_command("QUPDATE", "emails", "MAX-ATTEMPTS", "5")  # not named by the table
        client.close()
        assert server.stop() == 0

        config.write_text(
            '[[queue]]\nname = "emails"\nlease-timeout = 5000\ndead-queue = "emails-dead"\n'
            '[[queue]]\nname = "emails-dead"\n'
        )
        server.restart()
        assert "declared queue 'emails': lease-timeout 60000 -> 5000" in server.read_log()
        client = redis.Redis(port=server.port, protocol=3)
        info = client.execute_command("QINFO", "emails")
        assert (info[b"lease-timeout"], info[b"max-attempts"]) == (5000, 5)
        assert client.execute_command("QLEN", "emails") == 1
        client.close()
    finally:
        server.kill()
