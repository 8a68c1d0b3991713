"""The line that says the server is ready tells only what applies to its backend."""

from __future__ import annotations

from pathlib import Path

from tests.support import ServerProcess


def test_the_memory_backend_start_line_claims_no_durability(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data", backend="memory").start()
    try:
        ready = next(line for line in server.read_log().splitlines() if "ready to accept" in line)
        assert ready.endswith(f'127.0.0.1:{server.port} (backend memory, nothing survives a restart)"')
        assert "durability" not in ready
    finally:
        server.kill()
    server = ServerProcess(tmp_path / "data", durability="flush").start()
    try:
        ready = next(line for line in server.read_log().splitlines() if "ready to accept" in line)
        assert ready.endswith(f'127.0.0.1:{server.port} (backend rocksdb, durability flush)"')
    finally:
        server.kill()
