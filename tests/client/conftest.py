"""Fixtures of the client suite: one memory-backend server per module (each test uses its own queues),
and a `Client` per protocol, so every client test runs under RESP2 and RESP3."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from querator.client import Client, Worker
from tests.support import HOST, ServerProcess


@pytest.fixture(scope="module")
def qserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(Path(tmp_path_factory.mktemp("data")), backend="memory").start()
    yield proc
    proc.kill()


@pytest.fixture
def url(qserver: ServerProcess) -> str:
    return f"redis://{HOST}:{qserver.port}"


@pytest.fixture(params=[2, 3], ids=["resp2", "resp3"])
def protocol(request: pytest.FixtureRequest) -> int:
    return int(request.param)


@pytest.fixture
def client(url: str, protocol: int) -> Iterator[Client]:
    with Client(url, protocol=protocol) as c:
        yield c


@pytest.fixture
def admin(url: str) -> Iterator[Client]:
    """A client on redis-py's default protocol, for set-up and checks that are not the point of a test."""
    with Client(url) as c:
        yield c


@pytest.fixture
def new_queue(admin: Client) -> Callable[..., str]:
    """Creates a queue with a fresh name (and the given options) and returns its name."""

    def make(**options: object) -> str:
        name = f"q-{uuid.uuid4().hex[:10]}"
        admin.create_queue(name, **options)
        return name

    return make


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, step: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(step)


@contextmanager
def running(worker: Worker, timeout: float = 10.0) -> Iterator[threading.Thread]:
    """Runs a worker in a thread for the block, then stops it and waits for `run()` to return, also when
    the block failed (a worker left running would lease from the next test's server)."""
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        yield thread
    finally:
        worker.stop()
        thread.join(timeout)
    assert not thread.is_alive(), "the worker did not stop"
