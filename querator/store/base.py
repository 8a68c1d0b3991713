"""The storage interface the engine is typed against; every backend satisfies it (mypy checks it where
`open_store` returns one). Writes are applied with `write()` (visible at once, in the OS but not yet
fsync'd for a durable backend); `after_sync` calls back once everything written before it is durable,
and concurrent callers share one sync (group commit, ADR 4). A write set and the key spaces it names
always come from the same store."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Protocol


class WriteSet(Protocol):
    """One atomic batch of puts and deletes, possibly across key spaces."""

    def put(self, space: KeySpace, key: bytes, value: bytes) -> None: ...

    def delete(self, space: KeySpace, key: bytes) -> None: ...

    def put_many(self, space: KeySpace, keys: list[bytes], values: list[bytes]) -> None: ...

    def delete_many(self, space: KeySpace, keys: list[bytes]) -> None: ...

    def __len__(self) -> int: ...


class KeySpace(Protocol):
    name: str

    def get(self, key: bytes) -> bytes | None: ...

    def scan(self, start: bytes, end: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Pairs with start <= key < end, in key order."""
        ...

    def head(self, start: bytes, end: bytes, limit: int) -> tuple[list[bytes], list[bytes]]:
        """The first `limit` keys with start <= key < end, and their values, in key order."""
        ...

    def last_key(self, start: bytes, end: bytes) -> bytes | None: ...


class Store(Protocol):
    durable: bool

    def space(self, name: str) -> KeySpace:
        """The key space `name`, created when missing."""
        ...

    def space_names(self) -> list[str]: ...

    def drop_space(self, name: str) -> None: ...

    def new_write_set(self) -> WriteSet: ...

    def write(self, batch: WriteSet) -> None: ...

    def after_sync(self, callback: Callable[[BaseException | None], None]) -> None:
        """Call `callback` once all that was written before this call is durable (or the sync failed)."""
        ...

    async def close(self) -> None: ...
