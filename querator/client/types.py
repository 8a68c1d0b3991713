"""Typed results of the client, built from replies that differ between RESP2 and RESP3.

Invariant: a reply parses to the same value under both protocols (a RESP3 map and a RESP2 flat
field-value array give one dict first). Fields of SPEC section 7 default when the server does not send
them, so the client also reads a server that predates them. Field names are the wire names, `-` as `_`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")


def text(value: Any) -> str:
    """A bulk string as `str`; bytes that are not UTF-8 survive a round trip (surrogateescape)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    return "" if value is None else str(value)


def fields(reply: Any) -> dict[str, Any]:
    """A map (RESP3 dict) or a flat field-value array (RESP2 list) as one dict with `str` keys."""
    pairs = reply.items() if isinstance(reply, dict) else zip(reply[::2], reply[1::2], strict=True)
    return {text(key): value for key, value in pairs}


@dataclass(slots=True, frozen=True)
class Item:
    """A leased item, as QLEASE returns it."""

    id: str
    payload: bytes
    attempts: int
    lease_deadline: int
    kind: str = ""
    reference: str = ""
    encoding: str = ""


@dataclass(slots=True, frozen=True)
class StoredItem:
    """An item as QITEMS and QGET show it, whatever its state."""

    id: str
    state: str
    attempts: int
    created_at: int
    enqueue_at: int
    lease_deadline: int
    expire_deadline: int
    kind: str
    reference: str
    encoding: str
    payload: bytes
    reason: str = ""
    source_queue: str = ""
    source_id: str = ""
    dead_reason: str = ""


@dataclass(slots=True, frozen=True)
class QueueInfo:
    name: str
    partitions: int
    lease_timeout: int
    expire_timeout: int
    max_attempts: int
    dead_queue: str
    reference: str
    created_at: int
    updated_at: int
    paused: bool = False
    # None when the server does not report it (before SPEC section 7).
    dedup_window: int | None = None


@dataclass(slots=True, frozen=True)
class PartitionStats:
    partition: int
    ready: int
    leased: int
    scheduled: int
    total: int


@dataclass(slots=True, frozen=True)
class QueueStats:
    ready: int
    leased: int
    scheduled: int
    total: int
    produced: int
    completed: int
    retried: int
    lease_expired: int
    dead_lettered: int
    oldest_ready_age: int
    waiting_consumers: int
    partitions: list[PartitionStats] = field(default_factory=list)
    deduplicated: int = 0


def _partitions(value: Any) -> list[PartitionStats]:
    return [build(PartitionStats, fields(entry)) for entry in value or []]


_CONVERT: dict[str, Callable[[Any], Any]] = {
    "int": int,
    "int | None": int,
    "bool": lambda v: bool(int(v)),
    "str": text,
    "bytes": lambda v: b"" if v is None else bytes(v),
    "list[PartitionStats]": _partitions,
}


def build(cls: type[T], values: dict[str, Any]) -> T:
    """An instance of the dataclass `cls` from wire fields; a field the reply lacks takes its default."""
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        wire = f.name.replace("_", "-")
        if wire in values:
            kwargs[f.name] = _CONVERT[str(f.type)](values[wire])
    return cls(**kwargs)


def item(entry: Any) -> Item:
    """One QLEASE entry: `[id, payload, attempts, lease-deadline, kind, reference, encoding]`."""
    id_, payload, attempts, deadline, kind, reference, encoding = entry
    return Item(
        text(id_), bytes(payload), int(attempts), int(deadline), text(kind), text(reference), text(encoding)
    )
