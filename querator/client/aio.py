"""`AsyncClient`: `Client`'s methods, awaitable, on redis-py's asyncio connection pool.

Invariant: the same `commands` calls as `Client`, so both send the same bytes and return the same types;
the two classes differ only by `await` (kept apart so each is fully typed for mypy and IDEs).
"""

from __future__ import annotations

from collections.abc import Iterable
from types import TracebackType
from typing import Any, TypeVar

import redis.asyncio
from redis.exceptions import AuthenticationError, ResponseError

from querator.client import commands as cmd
from querator.client.errors import from_redis
from querator.client.options import DEFAULT_URL, redis_options
from querator.client.types import Item, QueueInfo, QueueStats, StoredItem

T = TypeVar("T")


class AsyncClient:
    def __init__(self, url: str = DEFAULT_URL, **redis_kwargs: Any) -> None:
        self.redis: redis.asyncio.Redis = redis.asyncio.Redis.from_url(url, **redis_options(redis_kwargs))

    async def _run(self, call: cmd.Call[T]) -> T:
        try:
            # redis-py's execute_command is untyped; the reply's shape is checked by `call.parse`.
            reply = await self.redis.execute_command(*call.args)  # type: ignore[no-untyped-call]
        except (ResponseError, AuthenticationError) as exc:
            raise from_redis(exc) from None
        return call.parse(reply)

    async def _call(self, call: cmd.Call[T] | None, empty: T) -> T:
        """`empty` answers a call that has nothing to send (no ids), without a round trip."""
        return empty if call is None else await self._run(call)

    async def aclose(self) -> None:
        await self.redis.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # -- queues ---------------------------------------------------------------------------------------

    async def create_queue(self, name: str, **options: Any) -> None:
        await self._run(cmd.create_queue(name, options))

    async def update_queue(self, name: str, **options: Any) -> None:
        await self._run(cmd.update_queue(name, options))

    async def delete_queue(self, name: str) -> None:
        await self._run(cmd.delete_queue(name))

    async def list_queues(self, *, after: str | None = None, limit: int | None = None) -> list[str]:
        return await self._run(cmd.list_queues(after, limit))

    async def info(self, name: str) -> QueueInfo:
        return await self._run(cmd.info(name))

    async def stats(self, name: str) -> QueueStats:
        return await self._run(cmd.stats(name))

    async def length(self, name: str) -> int:
        return await self._run(cmd.length(name))

    async def pause(self, name: str) -> None:
        await self._run(cmd.pause(name))

    async def resume(self, name: str) -> None:
        await self._run(cmd.resume(name))

    async def clear(self, name: str, *, all: bool = False) -> int:
        return await self._run(cmd.clear(name, all))

    async def redrive(self, name: str, *, to: str | None = None, limit: int | None = None) -> int:
        return await self._run(cmd.redrive(name, to, limit))

    # -- items ----------------------------------------------------------------------------------------

    async def produce(
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
        return await self._run(
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

    async def lease(self, queue: str, count: int = 1, block_ms: int | None = None) -> list[Item]:
        return await self._run(cmd.lease(queue, count, block_ms))

    async def complete(self, queue: str, ids: cmd.Ids) -> int:
        return await self._call(cmd.complete(queue, ids), 0)

    async def retry(
        self,
        queue: str,
        ids: cmd.Ids,
        *,
        delay_ms: int | None = None,
        at_ms: int | None = None,
        dead: bool = False,
        reason: str | None = None,
    ) -> int:
        return await self._call(
            cmd.retry(queue, ids, delay_ms=delay_ms, at_ms=at_ms, dead=dead, reason=reason), 0
        )

    async def extend(self, queue: str, ids: cmd.Ids, for_ms: int | None = None) -> int:
        return await self._call(cmd.extend(queue, ids, for_ms), 0)

    async def remove(self, queue: str, ids: cmd.Ids) -> int:
        return await self._call(cmd.remove(queue, ids), 0)

    async def get(self, queue: str, id: str) -> StoredItem | None:
        return await self._run(cmd.get(queue, id))

    async def items(
        self, queue: str, *, partition: int | None = None, after: str | None = None, limit: int | None = None
    ) -> list[StoredItem]:
        return await self._run(cmd.items(queue, partition, after, limit))
