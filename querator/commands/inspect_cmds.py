"""Looking at and repairing a queue's items (SPEC sections 3 and 7): QITEMS, QGET, QREMOVE, QCLEAR and
QREDRIVE, all in the `admin` group since they see or move other consumers' items."""

from __future__ import annotations

from typing import Any

from querator.clients import ClientState
from querator.commands.cursor import ArgCursor, OptionSpec
from querator.commands.queue_common import (
    BAD_ID_TEXT,
    IDS_ARG,
    NOQUEUE_TEXT,
    TOO_MANY_IDS_TEXT,
    queue_command,
    queue_name,
)
from querator.commands.reply import Deferred
from querator.commands.table import Arg
from querator.model import (
    DEFAULT_REDRIVE_LIMIT,
    StoredItem,
)


def _qremove(client: ClientState, args: list[bytes]) -> Deferred:
    cursor = ArgCursor(args)
    name = queue_name(cursor)
    return Deferred(client.server.service.remove(name, cursor.rest()))


QREMOVE = queue_command(
    "QREMOVE",
    -3,
    "admin",
    "Removes items whatever their state.",
    _qremove,
    ("write",),
    IDS_ARG,
    reply="integer: how many items were removed",
    errors=(NOQUEUE_TEXT, BAD_ID_TEXT, TOO_MANY_IDS_TEXT),
)

_QCLEAR_OPTIONS = OptionSpec(Arg("all", "pure-token", token="ALL", optional=True))


def _qclear(client: ClientState, args: list[bytes]) -> Deferred:
    cursor = ArgCursor(args)
    name = queue_name(cursor)
    include_leased = cursor.options(_QCLEAR_OPTIONS).flag(b"ALL")
    return Deferred(client.server.service.clear(name, include_leased=include_leased))


QCLEAR = queue_command(
    "QCLEAR",
    -2,
    "admin",
    "Removes ready and scheduled items; with ALL, leased ones too.",
    _qclear,
    ("write",),
    *_QCLEAR_OPTIONS.args,
    reply="integer: how many items were removed",
)


def _item_reply(item: StoredItem) -> dict[str, Any]:
    return {
        "id": item.id,
        "state": item.state,
        "attempts": item.attempts,
        "created-at": item.created_at,
        "enqueue-at": item.enqueue_at,
        "lease-deadline": item.lease_deadline,
        "expire-deadline": item.expire_deadline,
        "kind": item.kind,
        "reference": item.reference,
        "encoding": item.encoding,
        "payload": item.payload,
        "reason": item.reason,
        "source-queue": item.source_queue,
        "source-id": item.source_id,
        "dead-reason": item.dead_reason,
    }


_ITEM_FIELDS = (
    "`id state attempts created-at enqueue-at lease-deadline expire-deadline kind reference encoding "
    "payload reason source-queue source-id dead-reason`; state is `ready`, `leased` or `scheduled`; the "
    "last four are empty unless the item was retried with a REASON or reached a dead queue"
)
_QITEMS_OPTIONS = OptionSpec(
    Arg("partition", "integer", token="PARTITION", optional=True),
    Arg("id", token="AFTER", optional=True),
    Arg("count", "integer", token="LIMIT", optional=True),
)


def _qitems(client: ClientState, args: list[bytes]) -> Deferred:
    cursor = ArgCursor(args)
    name = queue_name(cursor)
    options = cursor.options(_QITEMS_OPTIONS)
    limit = options.integer(b"LIMIT")
    future = client.server.service.items(
        name,
        partition=options.integer(b"PARTITION"),
        after=options.text(b"AFTER"),
        limit=100 if limit is None else limit,
    )
    return Deferred(future, lambda items: [_item_reply(i) for i in items])


QITEMS = queue_command(
    "QITEMS",
    -2,
    "admin",
    "Lists items in storage order (partition 0 first), with their state; at most LIMIT (default 100).",
    _qitems,
    ("readonly",),
    *_QITEMS_OPTIONS.args,
    reply="array of items, each a map / flat array: " + _ITEM_FIELDS,
    errors=(
        NOQUEUE_TEXT,
        "`-ERR PARTITION must be between 0 and n`",
        "`-ERR LIMIT must be between 1 and 1000`",
        "`-ERR invalid id 'x'` for a malformed AFTER",
    ),
)


def _qget(client: ClientState, args: list[bytes]) -> Deferred:
    cursor = ArgCursor(args)
    future = client.server.service.get(queue_name(cursor), cursor.next_bytes())
    return Deferred(future, lambda item: None if item is None else _item_reply(item))


QGET = queue_command(
    "QGET",
    3,
    "admin",
    "Returns one item by id, whatever its state.",
    _qget,
    ("readonly", "fast"),
    Arg("id"),
    reply="the item as in QITEMS (map / flat array), or null if no item has that id now",
    errors=(NOQUEUE_TEXT, "`-ERR invalid id 'x'`"),
)


_QREDRIVE_OPTIONS = OptionSpec(
    Arg("target", token="TO", optional=True), Arg("count", "integer", token="LIMIT", optional=True)
)


def _qredrive(client: ClientState, args: list[bytes]) -> Deferred:
    cursor = ArgCursor(args)
    name = queue_name(cursor)
    options = cursor.options(_QREDRIVE_OPTIONS)
    limit = options.integer(b"LIMIT")
    future = client.server.service.redrive(
        name, to=options.text(b"TO"), limit=DEFAULT_REDRIVE_LIMIT if limit is None else limit
    )
    return Deferred(future)


QREDRIVE = queue_command(
    "QREDRIVE",
    -2,
    "admin",
    "Moves ready items of a (dead) queue, oldest first, back to the queues they came from, or TO another.",
    _qredrive,
    ("write", "admin"),
    *_QREDRIVE_OPTIONS.args,
    reply="integer: how many items moved; items whose source queue is gone, and without TO items never "
    "dead-lettered, stay where they are and are not counted",
    errors=(
        NOQUEUE_TEXT,
        "`-ERR LIMIT must be between 1 and 100000`",
        "`-ERR TO may not be the queue itself`",
    ),
)


DECLARATIONS = (QITEMS, QGET, QREMOVE, QCLEAR, QREDRIVE)
