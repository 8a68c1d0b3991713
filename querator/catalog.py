"""The queue catalog: every queue's metadata (name, incarnation uid, options, times) in the `meta` key
space, the uid counter, and the rules a queue's name and options must follow. A saved change is answered
only once it is synced, whatever the durability mode: a power cut in `flush` mode may lose recent items,
never a queue or its options."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Protocol

from querator.errors import CommandError, NoQueueError
from querator.futures import settle
from querator.model import (
    MAX_ATTEMPTS_LIMIT,
    MAX_DEDUP_WINDOW,
    MAX_LEASE_TIMEOUT,
    MAX_PARTITIONS,
    MAX_QUEUE_NAME_BYTES,
    QueueOptions,
)
from querator.store.base import Store

log = logging.getLogger("querator.service")

META_SPACE = "meta"
_QUEUE_PREFIX = b"q:"
_QUEUE_END = b"q;"
_NEXT_UID_KEY = b"next-uid"


@dataclass(slots=True)
class QueueEntry:
    """What the catalog keeps of one queue."""

    name: str
    uid: int
    options: QueueOptions
    created_at: int
    updated_at: int
    paused: bool = False


# Told the whole catalog as another node left it (postgres only): the Service makes its queues match.
CatalogChanged = Callable[[list[QueueEntry]], None]


class Catalog:
    def __init__(self, store: Store, loop: asyncio.AbstractEventLoop) -> None:
        self._store = store
        self._loop = loop
        self._meta = store.space(META_SPACE)
        self._next_uid = 1

    def load(self) -> list[QueueEntry]:
        raw_uid = self._meta.get(_NEXT_UID_KEY)
        if raw_uid is not None:
            self._next_uid = int(raw_uid)
        entries = []
        for key, value in self._meta.scan(_QUEUE_PREFIX, _QUEUE_END):
            doc = json.loads(value)
            name = key[len(_QUEUE_PREFIX) :].decode()
            options = QueueOptions(**doc["options"])
            # Keys an earlier version did not write (`paused`, `dedup_window`) take their defaults.
            entries.append(
                QueueEntry(
                    name, doc["uid"], options, doc["created_at"], doc["updated_at"], doc.get("paused", False)
                )
            )
        return entries

    def drop_orphans(self, wanted: Iterable[str]) -> None:
        """Key spaces left by a create or delete that crashed half way belong to no queue: drop them."""
        keep = {META_SPACE, *wanted}
        for name in self._store.space_names():
            if name not in keep:
                log.info("dropping orphaned key space %s", name)
                self._store.drop_space(name)

    def new_uid(self) -> int:
        """A uid never given before: a re-created queue's ids never name the earlier queue's items."""
        uid = self._next_uid
        self._next_uid += 1
        return uid

    def save(self, entry: QueueEntry) -> asyncio.Future[None]:
        return self._write(
            {_QUEUE_PREFIX + entry.name.encode(): _doc(entry), _NEXT_UID_KEY: str(self._next_uid).encode()}
        )

    def forget(self, name: str) -> asyncio.Future[None]:
        return self._write({}, [_QUEUE_PREFIX + name.encode()])

    def _write(self, puts: dict[bytes, bytes], deletes: Iterable[bytes] = ()) -> asyncio.Future[None]:
        ws = self._store.new_write_set()
        for key, value in puts.items():
            ws.put(self._meta, key, value)
        for key in deletes:
            ws.delete(self._meta, key)
        self._store.write(ws)
        future: asyncio.Future[None] = self._loop.create_future()
        # Synced in every durability mode: `flush` may lose recent items at a power cut, never a queue or
        # its options (memory's sync answers at once).
        self._store.after_sync(lambda error: settle(future, None, error))
        return future


def _doc(entry: QueueEntry) -> bytes:
    return json.dumps(
        {
            "uid": entry.uid,
            "created_at": entry.created_at,
            "updated_at": entry.updated_at,
            "paused": entry.paused,
            "options": asdict(entry.options),
        }
    ).encode()


def validate_queue_name(name: str) -> None:
    raw = name.encode("utf-8", "surrogateescape")
    if not raw:
        raise CommandError("invalid queue name; it may not be empty")
    if len(raw) > MAX_QUEUE_NAME_BYTES:
        raise CommandError(f"invalid queue name; at most {MAX_QUEUE_NAME_BYTES} bytes")
    if any(b <= 32 or b >= 127 for b in raw):
        raise CommandError("invalid queue name; only visible ASCII characters, no whitespace")


class _HasOptions(Protocol):
    @property
    def options(self) -> QueueOptions: ...


def validate_options(name: str, o: QueueOptions, queues: Mapping[str, _HasOptions]) -> None:
    """The options `o` of queue `name`, checked against the ranges and the other queues (`queues`: by
    name, the queue itself included if it exists)."""
    check_range("PARTITIONS", o.partitions, 1, MAX_PARTITIONS)
    check_range("LEASE-TIMEOUT", o.lease_timeout, 1, MAX_LEASE_TIMEOUT)
    if o.expire_timeout < 0:
        raise CommandError("EXPIRE-TIMEOUT must be at least 0")
    if o.expire_timeout and o.expire_timeout < o.lease_timeout:
        raise CommandError(f"EXPIRE-TIMEOUT must be 0 or at least the lease timeout ({o.lease_timeout})")
    check_range("MAX-ATTEMPTS", o.max_attempts, 0, MAX_ATTEMPTS_LIMIT)
    check_range("DEDUP-WINDOW", o.dedup_window, 0, MAX_DEDUP_WINDOW)
    if o.dead_queue:
        if o.dead_queue == name:
            raise CommandError("DEAD-QUEUE may not be the queue itself")
        dead = queues.get(o.dead_queue)
        if dead is None:
            raise NoQueueError(o.dead_queue)
        if dead.options.dead_queue:
            raise CommandError(f"DEAD-QUEUE '{o.dead_queue}' has a dead queue of its own")
        for other, queue in queues.items():
            if queue.options.dead_queue == name and other != name:
                raise CommandError(f"queue '{name}' is the dead queue of '{other}' and may not have one")


def check_range(option: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise CommandError(f"{option} must be between {low} and {high}")
