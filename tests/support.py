"""Helpers shared by the test suites: a real server process on a free port, and an event-loop runner."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
_READY = re.compile(rb"ready to accept connections on [^ ]+:(\d+)")


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on a fresh event loop (the suites use no pytest plugin for asyncio)."""
    return asyncio.run(coro)


class ServerProcess:
    """`python -m querator serve` in a child process; `port` is known once it logs that it is ready."""

    def __init__(
        self, data_dir: Path, *args: str, backend: str = "rocksdb", durability: str = "fsync"
    ) -> None:
        self.data_dir = data_dir
        self.args = list(args)
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
