"""`Client`: the queue commands as typed, blocking methods on a redis-py connection pool.

Invariant: every server error reply leaves as a `QueratorError` subclass; connection errors stay
redis-py's (`redis.ConnectionError`), and pooling and reconnection are redis-py's own (ADR 14).
"""

from __future__ import annotations

from collections.abc import Iterable
from types import TracebackType
from typing import Any, TypeVar

import redis
from redis.exceptions import AuthenticationError, ResponseError

from querator.client import commands as cmd
from querator.client.errors import from_redis
from querator.client.options import DEFAULT_URL, redis_options
from querator.client.types import Item, QueueInfo, QueueStats, StoredItem

T = TypeVar("T")


class Client:
    def __init__(self, url: str = DEFAULT_URL, **redis_kwargs: Any) -> None:
        self.redis: redis.Redis = redis.Redis.from_url(url, **redis_options(redis_kwargs))

    def _run(self, call: cmd.Call[T]) -> T:
        try:
            # redis-py's execute_command is untyped; the reply's shape is checked by `call.parse`.
            reply = self.redis.execute_command(*call.args)  # type: ignore[no-untyped-call]
        except (ResponseError, AuthenticationError) as exc:
            raise from_redis(exc) from None
        return call.parse(reply)

    def _call(self, call: cmd.Call[T] | None, empty: T) -> T:
        """`empty` answers a call that has nothing to send (no ids), without a round trip."""
        return empty if call is None else self._run(call)

    def close(self) -> None:
        self.redis.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- queues ---------------------------------------------------------------------------------------

    def create_queue(self, name: str, **options: Any) -> None:
        self._run(cmd.create_queue(name, options))

    def update_queue(self, name: str, **options: Any) -> None:
        self._run(cmd.update_queue(name, options))

    def delete_queue(self, name: str) -> None:
        self._run(cmd.delete_queue(name))

    def list_queues(self, *, after: str | None = None, limit: int | None = None) -> list[str]:
        return self._run(cmd.list_queues(after, limit))

    def info(self, name: str) -> QueueInfo:
        return self._run(cmd.info(name))

    def stats(self, name: str) -> QueueStats:
        return self._run(cmd.stats(name))

    def length(self, name: str) -> int:
        return self._run(cmd.length(name))

    def pause(self, name: str) -> None:
        self._run(cmd.pause(name))

    def resume(self, name: str) -> None:
        self._run(cmd.resume(name))

    def clear(self, name: str, *, all: bool = False) -> int:
        return self._run(cmd.clear(name, all))

    def redrive(self, name: str, *, to: str | None = None, limit: int | None = None) -> int:
        return self._run(cmd.redrive(name, to, limit))

    # -- items ----------------------------------------------------------------------------------------

    def produce(
        self,
        queue: str,
        payloads: Iterable[cmd.Payload] | cmd.Payload,
        *,
        kind: str | None = None,
        reference: str | None = None,
        encoding: str | None = None,
        delay_ms: int | None = None,
        at_ms: int | None = None,
        dedup: str | None = None,
    ) -> list[str]:
        return self._run(
            cmd.produce(
                queue,
                payloads,
                kind=kind,
                reference=reference,
                encoding=encoding,
                delay_ms=delay_ms,
                at_ms=at_ms,
                dedup=dedup,
            )
        )

    def lease(self, queue: str, count: int = 1, block_ms: int | None = None) -> list[Item]:
        return self._run(cmd.lease(queue, count, block_ms))

    def complete(self, queue: str, ids: cmd.Ids) -> int:
        return self._call(cmd.complete(queue, ids), 0)

    def retry(
        self,
        queue: str,
        ids: cmd.Ids,
        *,
        delay_ms: int | None = None,
        at_ms: int | None = None,
        dead: bool = False,
        reason: str | None = None,
    ) -> int:
        return self._call(cmd.retry(queue, ids, delay_ms=delay_ms, at_ms=at_ms, dead=dead, reason=reason), 0)

    def extend(self, queue: str, ids: cmd.Ids, for_ms: int | None = None) -> int:
        return self._call(cmd.extend(queue, ids, for_ms), 0)

    def remove(self, queue: str, ids: cmd.Ids) -> int:
        return self._call(cmd.remove(queue, ids), 0)

    def get(self, queue: str, id: str) -> StoredItem | None:
        return self._run(cmd.get(queue, id))

    def items(
        self, queue: str, *, partition: int | None = None, after: str | None = None, limit: int | None = None
    ) -> list[StoredItem]:
        return self._run(cmd.items(queue, partition, after, limit))
