"""Helpers for the tests that run several `querator serve --backend postgres` nodes on one database (SPEC 9):
starting and stopping the nodes, redis-py clients on them, and the reply shapes read back as dicts.

Nodes are `bench.servers.QueratorServer` processes, so a test and a benchmark start a node the same way.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from bench.servers import HOST, QueratorServer, ping
from tests.support import INFO_FIELDS, ITEM_FIELDS, STATS_FIELDS

T = TypeVar("T")


def start_nodes(dsn: str, count: int = 3, *, notify: bool = True) -> list[QueratorServer]:
    """`count` nodes on `dsn`, started side by side (each start waits for its PING); all stopped on error."""
    nodes = [
        QueratorServer(backend="postgres", postgres_dsn=dsn, postgres_notify=notify) for _ in range(count)
    ]
    try:
        with ThreadPoolExecutor(count) as pool:
            for started in pool.map(lambda node: node.start(timeout=60), nodes):
                assert started.alive()
    except BaseException:
        stop_nodes(nodes)
        raise
    return nodes


def stop_nodes(nodes: list[QueratorServer]) -> list[str]:
    """SIGTERM every node; what went wrong in any of them (exit code, warnings in its log)."""
    problems: list[str] = []
    for node in nodes:
        with contextlib.suppress(Exception):
            node.stop()
        problems += node.problems
    return problems


@contextlib.contextmanager
def running_nodes(dsn: str, count: int = 3, *, notify: bool = True) -> Iterator[list[QueratorServer]]:
    nodes = start_nodes(dsn, count, notify=notify)
    try:
        yield nodes
    finally:
        stop_nodes(nodes)


def client(port: int, timeout: float = 10.0) -> Any:
    """A redis-py client (RESP2, bytes) on one node; no client-side retries, so an error is seen as such."""
    return redis.Redis(host=HOST, port=port, protocol=2, socket_timeout=timeout, retry=Retry(NoBackoff(), 0))


def restart_node(node: QueratorServer, sig: int, timeout: float = 60.0) -> float:
    """Stop a node with `sig` and start it again on its port; seconds until it answers PING."""
    started = float(node.restart(sig)["t0"])
    deadline = started + timeout
    while time.perf_counter() < deadline:
        assert node.alive(), f"{node.describe()} exited on restart: {node.read_log()[-2000:]}"
        if ping(node.port):
            return time.perf_counter() - started
        time.sleep(0.02)
    raise AssertionError(
        f"{node.describe()} not serving {timeout}s after a restart: {node.read_log()[-2000:]}"
    )


def fields(reply: Any, names: list[str]) -> dict[str, Any]:
    """A RESP2 flat field-value array as a dict, bytes values decoded; checks the field order too."""
    keys = [k.decode() for k in reply[::2]]
    assert keys == names[: len(keys)], keys
    return {k: v.decode() if isinstance(v, bytes) else v for k, v in zip(keys, reply[1::2], strict=True)}


def stats(r: Any, queue: str) -> dict[str, Any]:
    """QSTATS without the per-partition list (the counters and the totals)."""
    out = fields(r.execute_command("QSTATS", queue), STATS_FIELDS)
    out.pop("partitions")
    return out


def queue_info(r: Any, queue: str) -> dict[str, Any] | None:
    """QINFO as a dict, or None where this node does not know the queue (yet)."""
    try:
        return fields(r.execute_command("QINFO", queue), INFO_FIELDS)
    except redis.ResponseError as exc:
        if "no such queue" in str(exc):
            return None
        raise


def create_queue(rs: list[Any], queue: str, *options: Any) -> float:
    """QCREATE through the first client, then wait until every node shows the same QINFO (SPEC 9 gives an
    admin change 1 s to reach every node, so a test that used the queue elsewhere at once could fail by
    the rules); the seconds that took."""
    rs[0].execute_command("QCREATE", queue, *options)
    created = queue_info(rs[0], queue)
    _, took = wait_until(
        lambda: all(queue_info(r, queue) == created for r in rs), 1.0, what=f"QCREATE {queue} on every node"
    )
    return took


def get_item(r: Any, queue: str, item_id: str) -> dict[str, Any] | None:
    reply = r.execute_command("QGET", queue, item_id)
    return None if reply is None else fields(reply, ITEM_FIELDS)


def list_items(r: Any, queue: str) -> list[dict[str, Any]]:
    """Every item of `queue` (QITEMS pages of 1000)."""
    items: list[dict[str, Any]] = []
    after: list[str] = []
    for _ in range(1000):
        page = [fields(it, ITEM_FIELDS) for it in r.execute_command("QITEMS", queue, *after, "LIMIT", 1000)]
        items += page
        if len(page) < 1000:
            return items
        after = ["AFTER", page[-1]["id"]]
    raise AssertionError(f"QITEMS {queue} did not end")


def lease(r: Any, queue: str, count: int = 1, block_ms: int | None = None) -> list[tuple[str, str, int, int]]:
    """QLEASE as `(id, payload, attempts, lease_deadline)` tuples."""
    args: list[Any] = ["QLEASE", queue, "COUNT", count]
    if block_ms is not None:
        args += ["BLOCK", block_ms]
    return [(it[0].decode(), it[1].decode(), int(it[2]), int(it[3])) for it in r.execute_command(*args)]


def wait_until(check: Callable[[], T], within: float, step: float = 0.02, what: str = "") -> tuple[T, float]:
    """Call `check` until it returns something true or `within` seconds have passed since the call began;
    the last result and the seconds it took. The time is measured from this call, so a test that calls it
    right after a change measures the change's reach."""
    started = time.monotonic()
    result = check()
    while not result:
        elapsed = time.monotonic() - started
        if elapsed >= within:
            raise AssertionError(f"{what or 'condition'} not true within {within}s; last: {result!r}")
        time.sleep(step)
        result = check()
    return result, time.monotonic() - started
