"""Fixtures of the client suite: one memory-backend server per module (each test uses its own queues),
and a `Client` per protocol, so every client test runs under RESP2 and RESP3."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
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
def new_queue(client: Client) -> Callable[..., str]:
    """Creates a queue with a fresh name (and the given options) and returns its name."""

    def make(**options: object) -> str:
        name = f"q-{uuid.uuid4().hex[:10]}"
        client.create_queue(name, **options)
        return name

    return make


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, step: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(step)


def start(worker: Worker) -> threading.Thread:
    """Runs a worker in a thread (so the test can stop it); join the thread to wait for its return."""
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    return thread
