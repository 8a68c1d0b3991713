"""Helpers shared by the test suites: a real server process on a free port, and an event-loop runner."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
_READY = re.compile(rb"ready to accept connections on [^ ]+:(\d+)")

HOST = "127.0.0.1"
# The long-running variants of the reliability tests run only when this is set.
SLOW = os.environ.get("QUERATOR_SLOW") == "1"
# Redis's exact replies, shared by the protocol tests.
PONG = b"+PONG\r\n"
INVALID_MULTIBULK = b"-ERR Protocol error: invalid multibulk length\r\n"
INVALID_BULK = b"-ERR Protocol error: invalid bulk length\r\n"
# The field order of QINFO, QSTATS and QITEMS / QGET replies (SPEC sections 3 and 7).
INFO_FIELDS = [
    "name", "partitions", "lease-timeout", "expire-timeout", "max-attempts", "dead-queue", "reference",
    "created-at", "updated-at", "paused", "dedup-window",
]  # fmt: skip
STATS_FIELDS = [
    "ready", "leased", "scheduled", "total", "produced", "completed", "retried", "lease-expired",
    "dead-lettered", "deduplicated", "oldest-ready-age", "waiting-consumers", "partitions",
]  # fmt: skip
ITEM_FIELDS = [
    "id", "state", "attempts", "created-at", "enqueue-at", "lease-deadline", "expire-deadline", "kind",
    "reference", "encoding", "payload", "reason", "source-queue", "source-id", "dead-reason",
]  # fmt: skip


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on a fresh event loop (the suites use no pytest plugin for asyncio)."""
    return asyncio.run(coro)


class ServerProcess:
    """`python -m querator serve` in a child process; `port` is known once it logs that it is ready.

    HTTP is off (`--http-port 0`) unless `http_port` is given, so servers started side by side do not
    compete for the default HTTP port."""

    def __init__(
        self,
        data_dir: Path,
        *args: str,
        backend: str = "rocksdb",
        durability: str = "fsync",
        http_port: int = 0,
    ) -> None:
        self.data_dir = data_dir
        self.args = list(args)
        self.http_port = http_port
        self.backend = backend
        self.durability = durability
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.log = b""

    def start(self, timeout: float = 20.0) -> ServerProcess:
        # Reuse the port across restarts so clients can reconnect to the same address.
        cmd = [
            sys.executable,
            "-m",
            "querator",
            "serve",
            "--port",
            str(self.port),
            "--data",
            str(self.data_dir),
            "--backend",
            self.backend,
            "--durability",
            self.durability,
            "--http-port",
            str(self.http_port),
            *self.args,
        ]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        assert self.proc.stderr is not None
        os.set_blocking(self.proc.stderr.fileno(), False)
        deadline = time.monotonic() + timeout
        self.log = b""
        while time.monotonic() < deadline:
            chunk = self.proc.stderr.read() or b""
            self.log += chunk
            match = _READY.search(self.log)
            if match:
                self.port = int(match.group(1))
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"server exited with {self.proc.returncode}: {self.log.decode(errors='replace')}"
                )
            time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"server did not become ready: {self.log.decode(errors='replace')}")

    def read_log(self) -> str:
        if self.proc is not None and self.proc.stderr is not None:
            with contextlib.suppress(OSError, ValueError):
                self.log += self.proc.stderr.read() or b""
        return self.log.decode(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout)
        self.read_log()
        return code

    def kill(self) -> None:
        """SIGKILL: the crash the durability promises are about."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def restart(self) -> ServerProcess:
        return self.start()


# -- raw sockets, for tests that assert exact bytes --------------------------------------------------------


def free_port() -> int:
    """A TCP port nobody listens on now (the OS's choice), for a listener that needs a fixed port."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def connect(port: int, timeout: float = 5.0) -> socket.socket:
    sock = socket.create_connection((HOST, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def resp(*args: bytes) -> bytes:
    """A multibulk request, as a client library sends it."""
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%b\r\n" % (len(a), a) for a in args)


def recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise AssertionError(f"connection closed after {data!r}, expected {n} bytes")
        data += chunk
    return data


def recv_line(sock: socket.socket, limit: int = 1 << 20) -> bytes:
    data = b""
    while not data.endswith(b"\r\n"):
        chunk = sock.recv(1)
        if not chunk:
            raise AssertionError(f"connection closed after {data!r}")
        data += chunk
        assert len(data) < limit, "reply line too long"
    return data


def request(sock: socket.socket, payload: bytes, expected: bytes) -> None:
    """Send `payload` and assert the reply is exactly `expected` (and nothing more so far)."""
    sock.sendall(payload)
    assert recv_exact(sock, len(expected)) == expected


def closed_by_server(sock: socket.socket, timeout: float = 2.0) -> bool:
    """True when the server closes (EOF or reset) within `timeout`, discarding anything else it sends."""
    sock.settimeout(timeout)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not sock.recv(65536):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False
    return False


def ping_ok(port: int, timeout: float = 2.0) -> bool:
    """A fresh connection gets +PONG within `timeout`: the server still serves."""
    try:
        with connect(port, timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return recv_exact(sock, 7) == b"+PONG\r\n"
    except (OSError, AssertionError):
        return False


def alive(server: ServerProcess) -> bool:
    return server.proc is not None and server.proc.poll() is None
