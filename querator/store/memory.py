"""In-memory backend: the same ordered key spaces as RocksDB, in sorted dicts; for tests and ephemeral
queues (`--backend memory`). Nothing is durable, so `after_sync` answers at once."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from itertools import islice
from typing import cast

from sortedcontainers import SortedDict

from querator.store.base import KeySpace, WriteSet


class MemoryKeySpace:
    __slots__ = ("data", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self.data: SortedDict = SortedDict()

    def get(self, key: bytes) -> bytes | None:
        value: bytes | None = self.data.get(key)
        return value

    def scan(self, start: bytes, end: bytes) -> Iterator[tuple[bytes, bytes]]:
        # Lazy, like a RocksDB iterator: callers stop after a few keys at the head of a large range. Writes
        # go to a write set and are applied only between scans, never while one is running.
        data = self.data
        for key in data.irange(start, end, inclusive=(True, False)):
            yield key, data[key]

    def head(self, start: bytes, end: bytes, limit: int) -> tuple[list[bytes], list[bytes]]:
        keys = list(islice(self.data.irange(start, end, inclusive=(True, False)), limit))
        return keys, list(map(self.data.__getitem__, keys))

    def last_key(self, start: bytes, end: bytes) -> bytes | None:
        for key in self.data.irange(start, end, inclusive=(True, False), reverse=True):
            return bytes(key)
        return None


class MemoryWriteSet:
    """Key spaces come typed as the Protocol and are narrowed with `cast` (free of checks): a write set
    only ever gets key spaces of the store that made it."""

    __slots__ = ("ops",)

    def __init__(self) -> None:
        self.ops: list[tuple[MemoryKeySpace, bytes, bytes | None]] = []

    def put(self, space: KeySpace, key: bytes, value: bytes) -> None:
        # put and delete run once per item on the unbatched paths: one cast, no helper call.
        self.ops.append((cast(MemoryKeySpace, space), key, value))

    def delete(self, space: KeySpace, key: bytes) -> None:
        self.ops.append((cast(MemoryKeySpace, space), key, None))

    def put_many(self, space: KeySpace, keys: list[bytes], values: list[bytes]) -> None:
        own = cast(MemoryKeySpace, space)
        self.ops.extend((own, key, value) for key, value in zip(keys, values, strict=True))

    def delete_many(self, space: KeySpace, keys: list[bytes]) -> None:
        own = cast(MemoryKeySpace, space)
        self.ops.extend((own, key, None) for key in keys)

    def __len__(self) -> int:
        return len(self.ops)


class MemoryStore:
    durable = False

    def __init__(self) -> None:
        self._spaces: dict[str, MemoryKeySpace] = {}

    def space(self, name: str) -> MemoryKeySpace:
        space = self._spaces.get(name)
        if space is None:
            space = self._spaces[name] = MemoryKeySpace(name)
        return space

    def space_names(self) -> list[str]:
        return list(self._spaces)

    def drop_space(self, name: str) -> None:
        space = self._spaces.pop(name, None)
        if space is not None:
            space.data.clear()

    def new_write_set(self) -> MemoryWriteSet:
        return MemoryWriteSet()

    def write(self, batch: WriteSet) -> None:
        ops = cast(MemoryWriteSet, batch).ops
        for space, key, value in ops:
            if value is None:
                space.data.pop(key, None)
            else:
                space.data[key] = value
        ops.clear()

    def after_sync(self, callback: Callable[[BaseException | None], None]) -> None:
        callback(None)

    async def close(self) -> None:
        self._spaces.clear()
