"""Sans-IO command building: each queue command as (arguments, reply parser), shared by `Client` and
`AsyncClient` so both send the same bytes and return the same types.

Invariant: option names are the Service's (`lease_timeout`); the wire keyword is the name upper-cased with
`_` as `-`. An option left at None is not sent, so the server's default (or the current value) holds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from querator.client.types import Item, QueueInfo, QueueStats, StoredItem, build, fields, item, text

T = TypeVar("T")
Payload = bytes | str
Ids = Iterable[str] | str

# QCREATE / QUPDATE options, in the order the SPEC lists them.
QUEUE_OPTIONS = (
    "partitions",
    "lease_timeout",
    "expire_timeout",
    "max_attempts",
    "dead_queue",
    "reference",
    "dedup_window",
)


@dataclass(slots=True, frozen=True)
class Call(Generic[T]):
    args: tuple[Any, ...]
    parse: Callable[[Any], T]


def _ok(reply: Any) -> None:
    return None


def _int(reply: Any) -> int:
    return int(reply)


def _ids(ids: Ids) -> list[str]:
    # A lone id is a common slip (`complete(q, item.id)`); iterating it would send one id per character.
    return [ids] if isinstance(ids, str) else list(ids)


def _options(options: dict[str, Any]) -> list[Any]:
    unknown = set(options) - set(QUEUE_OPTIONS)
    if unknown:
        raise TypeError(f"unknown queue option(s): {', '.join(sorted(unknown))}")
    args: list[Any] = []
    for name in QUEUE_OPTIONS:
        value = options.get(name)
        if value is not None:
            args += [name.upper().replace("_", "-"), value]
    return args


def create_queue(name: str, options: dict[str, Any]) -> Call[None]:
    return Call(("QCREATE", name, *_options(options)), _ok)


def update_queue(name: str, options: dict[str, Any]) -> Call[None]:
    return Call(("QUPDATE", name, *_options(options)), _ok)


def delete_queue(name: str) -> Call[None]:
    return Call(("QDELETE", name), _ok)


def list_queues(after: str | None, limit: int | None) -> Call[list[str]]:
    args: list[Any] = ["QLIST"]
    if after is not None:
        args += ["AFTER", after]
    if limit is not None:
        args += ["LIMIT", limit]
    return Call(tuple(args), lambda reply: [text(name) for name in reply])


def info(name: str) -> Call[QueueInfo]:
    return Call(("QINFO", name), lambda reply: build(QueueInfo, fields(reply)))


def stats(name: str) -> Call[QueueStats]:
    return Call(("QSTATS", name), lambda reply: build(QueueStats, fields(reply)))


def length(name: str) -> Call[int]:
    return Call(("QLEN", name), _int)


def produce(
    queue: str,
    payloads: Iterable[Payload] | Payload,
    *,
    kind: str | None,
    reference: str | None,
    encoding: str | None,
    delay_ms: int | None,
    at_ms: int | None,
    dedup: str | None,
) -> Call[list[str]]:
    if isinstance(payloads, bytes | str):
        payloads = [payloads]
    args: list[Any] = ["QPRODUCE", queue]
    for keyword, value in (
        ("DEDUP", dedup),
        ("DELAY", delay_ms),
        ("AT", at_ms),
        ("KIND", kind),
        ("REFERENCE", reference),
        ("ENCODING", encoding),
    ):
        if value is not None:
            args += [keyword, value]
    return Call((*args, "ITEMS", *payloads), lambda reply: [text(id_) for id_ in reply])


def lease(queue: str, count: int, block_ms: int | None) -> Call[list[Item]]:
    args: tuple[Any, ...] = ("QLEASE", queue, "COUNT", count)
    if block_ms is not None:
        args += ("BLOCK", block_ms)
    return Call(args, lambda reply: [item(entry) for entry in reply or []])


def complete(queue: str, ids: Ids) -> Call[int] | None:
    """None when there is nothing to send (the command needs at least one id): the answer is 0."""
    id_list = _ids(ids)
    return Call(("QCOMPLETE", queue, *id_list), _int) if id_list else None


def retry(
    queue: str, ids: Ids, *, delay_ms: int | None, at_ms: int | None, dead: bool, reason: str | None
) -> Call[int] | None:
    id_list = _ids(ids)
    if not id_list:
        return None
    args: list[Any] = ["QRETRY", queue]
    if dead:
        args.append("DEAD")
    if delay_ms is not None:
        args += ["DELAY", delay_ms]
    if at_ms is not None:
        args += ["AT", at_ms]
    if reason is not None:
        args += ["REASON", reason]
    return Call((*args, *id_list), _int)


def extend(queue: str, ids: Ids, for_ms: int | None) -> Call[int] | None:
    id_list = _ids(ids)
    if not id_list:
        return None
    args: tuple[Any, ...] = ("QEXTEND", queue) if for_ms is None else ("QEXTEND", queue, "FOR", for_ms)
    return Call((*args, *id_list), _int)


def remove(queue: str, ids: Ids) -> Call[int] | None:
    id_list = _ids(ids)
    return Call(("QREMOVE", queue, *id_list), _int) if id_list else None


def clear(queue: str, all: bool) -> Call[int]:
    return Call(("QCLEAR", queue, "ALL") if all else ("QCLEAR", queue), _int)


def pause(queue: str) -> Call[None]:
    return Call(("QPAUSE", queue), _ok)


def resume(queue: str) -> Call[None]:
    return Call(("QRESUME", queue), _ok)


def redrive(queue: str, to: str | None, limit: int | None) -> Call[int]:
    args: list[Any] = ["QREDRIVE", queue]
    if to is not None:
        args += ["TO", to]
    if limit is not None:
        args += ["LIMIT", limit]
    return Call(tuple(args), _int)


def _stored(reply: Any) -> StoredItem:
    return build(StoredItem, fields(reply))


def get(queue: str, id: str) -> Call[StoredItem | None]:
    return Call(("QGET", queue, id), lambda reply: None if reply is None else _stored(reply))


def items(queue: str, partition: int | None, after: str | None, limit: int | None) -> Call[list[StoredItem]]:
    args: list[Any] = ["QITEMS", queue]
    for keyword, value in (("PARTITION", partition), ("AFTER", after), ("LIMIT", limit)):
        if value is not None:
            args += [keyword, value]
    return Call(tuple(args), lambda reply: [_stored(entry) for entry in reply])
