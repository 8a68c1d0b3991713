"""Queue commands (SPEC section 3): each parses its arguments with an `ArgCursor`, calls one `Service`
method, and says how the result becomes a RESP reply. No queue logic lives here."""

from __future__ import annotations

from typing import Any

from querator.clients import ClientState
from querator.commands.reply import Deferred
from querator.commands.table import Arg, ArgCursor, Command, register
from querator.errors import SYNTAX_ERROR, CommandError
from querator.model import (
    LeasedItem,
    QueueInfo,
    QueueOptions,
    QueueStats,
    QueueUpdate,
    StoredItem,
)
from querator.resp import Encoded, SimpleString

OK = SimpleString("OK")


def _ok(_: Any) -> Any:
    return OK


def _queue_name(cursor: ArgCursor) -> str:
    return cursor.next_bytes().decode("utf-8", "surrogateescape")


# -- administration -------------------------------------------------------------------------------------


def _parse_queue_options(cursor: ArgCursor) -> QueueUpdate:
    update = QueueUpdate()
    while cursor:
        option = cursor.next_bytes().upper()
        if option == b"PARTITIONS":
            update.partitions = cursor.next_int()
        elif option == b"LEASE-TIMEOUT":
            update.lease_timeout = cursor.next_int()
        elif option == b"EXPIRE-TIMEOUT":
            update.expire_timeout = cursor.next_int()
        elif option == b"MAX-ATTEMPTS":
            update.max_attempts = cursor.next_int()
        elif option == b"DEAD-QUEUE":
            update.dead_queue = cursor.next_str()
        elif option == b"REFERENCE":
            update.reference = cursor.next_str()
        else:
            raise CommandError(SYNTAX_ERROR)
    return update


def _qcreate(client: ClientState, args: list[bytes]) -> Any:
    cursor = ArgCursor(args)
    name = _queue_name(cursor)
    update = _parse_queue_options(cursor)
    defaults = QueueOptions()
    options = QueueOptions(
        **{
            f: getattr(update, f) if getattr(update, f) is not None else getattr(defaults, f)
            for f in QueueOptions.__slots__
        }
    )
    return Deferred(client.server.service.create_queue(name, options), _ok)


def _qupdate(client: ClientState, args: list[bytes]) -> Any:
    cursor = ArgCursor(args)
    name = _queue_name(cursor)
    update = _parse_queue_options(cursor)
    return Deferred(client.server.service.update_queue(name, update), _ok)


def _qdelete(client: ClientState, args: list[bytes]) -> Any:
    return Deferred(client.server.service.delete_queue(_queue_name(ArgCursor(args))), _ok)


def _qlist(client: ClientState, args: list[bytes]) -> Any:
    cursor = ArgCursor(args)
    after, limit = "", 1000
    while cursor:
        option = cursor.next_bytes().upper()
        if option == b"AFTER":
            after = cursor.next_str()
        elif option == b"LIMIT":
            limit = cursor.next_int()
        else:
            raise CommandError(SYNTAX_ERROR)
    user = client.acl
    if user.unrestricted:
        return Deferred(client.server.service.list_queues(after, limit))
    # A restricted user sees only the queues its patterns allow.
    names = client.server.service.list_queues(after, 100_000)
    return Deferred(names, lambda found: [n for n in found if user.may_access(n)][:limit])


def _info_reply(info: QueueInfo) -> dict[str, Any]:
    return {
        "name": info.name,
        "partitions": info.partitions,
        "lease-timeout": info.lease_timeout,
        "expire-timeout": info.expire_timeout,
        "max-attempts": info.max_attempts,
        "dead-queue": info.dead_queue,
        "reference": info.reference,
        "created-at": info.created_at,
        "updated-at": info.updated_at,
    }


def _qinfo(client: ClientState, args: list[bytes]) -> Any:
    return Deferred(client.server.service.queue_info(_queue_name(ArgCursor(args))), _info_reply)


def _stats_reply(stats: QueueStats) -> dict[str, Any]:
    return {
        "ready": stats.ready,
        "leased": stats.leased,
        "scheduled": stats.scheduled,
        "total": stats.total,
        "produced": stats.produced,
        "completed": stats.completed,
        "retried": stats.retried,
        "lease-expired": stats.lease_expired,
        "dead-lettered": stats.dead_lettered,
        "oldest-ready-age": stats.oldest_ready_age,
        "waiting-consumers": stats.waiting_consumers,
        "partitions": [
            {
                "partition": p.partition,
                "ready": p.ready,
                "leased": p.leased,
                "scheduled": p.scheduled,
                "total": p.total,
            }
            for p in stats.partitions
        ],
    }


def _qstats(client: ClientState, args: list[bytes]) -> Any:
    return Deferred(client.server.service.queue_stats(_queue_name(ArgCursor(args))), _stats_reply)


def _qlen(client: ClientState, args: list[bytes]) -> Any:
    return Deferred(client.server.service.queue_length(_queue_name(ArgCursor(args))))


# -- items ------------------------------------------------------------------------------------------------


def _qproduce(client: ClientState, args: list[bytes]) -> Any:
    cursor = ArgCursor(args)
    name = _queue_name(cursor)
    delay = at = None
    kind = reference = encoding = b""
    while True:
        option = cursor.next_bytes().upper()
        if option == b"ITEMS":
            break
        if option == b"DELAY":
            delay = cursor.next_int()
        elif option == b"AT":
            at = cursor.next_int()
        elif option == b"KIND":
            kind = cursor.next_bytes()
        elif option == b"REFERENCE":
            reference = cursor.next_bytes()
        elif option == b"ENCODING":
            encoding = cursor.next_bytes()
        else:
            raise CommandError(SYNTAX_ERROR)
    payloads = cursor.rest()
    if not payloads:
        raise CommandError("wrong number of arguments for 'qproduce' command")
    service = client.server.service
    future = service.produce(
        name, payloads, delay_ms=delay, at_ms=at, kind=kind, reference=reference, encoding=encoding
    )
    return Deferred(future, _ids_reply)


_LEASED_ITEM = b"*7\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n:%d\r\n:%d\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n"


def _lease_reply(items: list[LeasedItem]) -> Encoded:
    """[[id, payload, attempts, lease-deadline, kind, reference, encoding], ...], encoded in one pass:
    the items are tuples, so they are transposed into columns and formatted by C-level maps."""
    if not items:
        return Encoded(b"*0\r\n")
    ids, payloads, attempts, deadlines, kinds, references, encodings = zip(*items, strict=True)
    id_bytes = list(map(str.encode, ids))
    rows = zip(
        map(len, id_bytes),
        id_bytes,
        map(len, payloads),
        payloads,
        attempts,
        deadlines,
        map(len, kinds),
        kinds,
        map(len, references),
        references,
        map(len, encodings),
        encodings,
        strict=True,
    )
    return Encoded(b"*%d\r\n%b" % (len(items), b"".join(map(_LEASED_ITEM.__mod__, rows))))


def _ids_reply(ids: list[str]) -> Encoded:
    """The ids of a QPRODUCE, encoded in one pass (ids are ASCII)."""
    if len(ids) == 1:
        only = ids[0]
        return Encoded(b"*1\r\n$%d\r\n%b\r\n" % (len(only), only.encode()))
    if len(set(map(len, ids))) == 1:
        # The usual case: one partition's consecutive seqs, so every id has the same length and one join
        # builds the whole reply.
        header = f"${len(ids[0])}\r\n"
        body = header + ("\r\n" + header).join(ids) + "\r\n"
        return Encoded(b"*%d\r\n%b" % (len(ids), body.encode()))
    parts = [b"*%d\r\n" % len(ids)]
    parts.extend(b"$%d\r\n%b\r\n" % (len(i), i.encode()) for i in ids)
    return Encoded(b"".join(parts))


def _qlease(client: ClientState, args: list[bytes]) -> Any:
    cursor = ArgCursor(args)
    name = _queue_name(cursor)
    count = 1
    block: int | None = None
    while cursor:
        option = cursor.next_bytes().upper()
        if option == b"COUNT":
            count = cursor.next_int()
        elif option == b"BLOCK":
            block = cursor.next_int()
        else:
            raise CommandError(SYNTAX_ERROR)
    future = client.server.service.lease(name, count, block)
    return Deferred(future, _lease_reply, blocking=block is not None)


def _ids(cursor: ArgCursor, command: str) -> list[bytes]:
    ids = cursor.rest()
    if not ids:
        raise CommandError(f"wrong number of arguments for '{command}' command")
    return ids


def _qcomplete(client: ClientState, args: list[bytes]) -> Any:
    cursor = ArgCursor(args)
    name = _queue_name(cursor)
    return Deferred(client.server.service.complete(name, cursor.rest()))


def _qretry(client: ClientState, args: list[bytes]) -> Any:
    cursor = ArgCursor(args)
    name = _queue_name(cursor)
    delay = at = None
    dead = False
    while cursor.remaining() > 1:
        option = cursor.peek_upper()
        if option == b"DELAY":
            cursor.next_bytes()
            delay = cursor.next_int()
        elif option == b"AT":
            cursor.next_bytes()
            at = cursor.next_int()
        elif option == b"DEAD":
            cursor.next_bytes()
            dead = True
        else:
            break
    ids = _ids(cursor, "qretry")
    service = client.server.service
    return Deferred(service.retry(name, ids, delay_ms=delay, at_ms=at, dead=dead))


def _qextend(client: ClientState, args: list[bytes]) -> Any:
    cursor = ArgCursor(args)
    name = _queue_name(cursor)
    lease_for = None
    if cursor.remaining() > 1 and cursor.peek_upper() == b"FOR":
        cursor.next_bytes()
        lease_for = cursor.next_int()
    ids = _ids(cursor, "qextend")
    return Deferred(client.server.service.extend(name, ids, lease_for_ms=lease_for))


def _qremove(client: ClientState, args: list[bytes]) -> Any:
    cursor = ArgCursor(args)
    name = _queue_name(cursor)
    return Deferred(client.server.service.remove(name, cursor.rest()))


def _qclear(client: ClientState, args: list[bytes]) -> Any:
    cursor = ArgCursor(args)
    name = _queue_name(cursor)
    include_leased = False
    if cursor:
        if cursor.next_bytes().upper() != b"ALL" or cursor:
            raise CommandError(SYNTAX_ERROR)
        include_leased = True
    return Deferred(client.server.service.clear(name, include_leased=include_leased))


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
    }


def _qitems(client: ClientState, args: list[bytes]) -> Any:
    cursor = ArgCursor(args)
    name = _queue_name(cursor)
    partition: int | None = None
    after: str | None = None
    limit = 100
    while cursor:
        option = cursor.next_bytes().upper()
        if option == b"PARTITION":
            partition = cursor.next_int()
        elif option == b"AFTER":
            after = cursor.next_str()
        elif option == b"LIMIT":
            limit = cursor.next_int()
        else:
            raise CommandError(SYNTAX_ERROR)
    future = client.server.service.items(name, partition=partition, after=after, limit=limit)
    return Deferred(future, lambda items: [_item_reply(i) for i in items])


# -- the table ------------------------------------------------------------------------------------------

_QUEUE = Arg("queue", "key")
_ID = Arg("id", multiple=True)
_QUEUE_OPTIONS = (
    Arg("partitions", "integer", token="PARTITIONS", optional=True),
    Arg("lease-timeout", "integer", token="LEASE-TIMEOUT", optional=True),
    Arg("expire-timeout", "integer", token="EXPIRE-TIMEOUT", optional=True),
    Arg("max-attempts", "integer", token="MAX-ATTEMPTS", optional=True),
    Arg("dead-queue", token="DEAD-QUEUE", optional=True),
    Arg("reference", token="REFERENCE", optional=True),
)
_WHEN = Arg(
    "when",
    "oneof",
    optional=True,
    children=(Arg("delay", "integer", token="DELAY"), Arg("at", "integer", token="AT")),
)


_ACL_GROUP = {
    "QPRODUCE": "produce",
    "QLEASE": "consume",
    "QCOMPLETE": "consume",
    "QRETRY": "consume",
    "QEXTEND": "consume",
    "QINFO": "read",
    "QSTATS": "read",
    "QLEN": "read",
}


def _queue_command(
    name: str, arity: int, summary: str, handler: Any, flags: tuple[str, ...], *args: Arg
) -> None:
    register(
        Command(
            name,
            arity,
            "queue",
            summary,
            handler,
            flags,
            (_QUEUE, *args),
            first_key=1,
            last_key=1,
            key_step=1,
            acl=_ACL_GROUP.get(name, "admin"),
        )
    )


_queue_command("QCREATE", -2, "Creates a queue.", _qcreate, ("write", "admin"), *_QUEUE_OPTIONS)
_queue_command(
    "QUPDATE",
    -2,
    "Changes a queue's options; PARTITIONS may only grow.",
    _qupdate,
    ("write", "admin"),
    *_QUEUE_OPTIONS,
)
_queue_command("QDELETE", 2, "Deletes a queue and all its items.", _qdelete, ("write", "admin"))
register(
    Command(
        "QLIST",
        -1,
        "queue",
        "Lists queue names in byte order.",
        _qlist,
        ("readonly",),
        (Arg("after", token="AFTER", optional=True), Arg("limit", "integer", token="LIMIT", optional=True)),
        acl="read",
    )
)
_queue_command("QINFO", 2, "Returns a queue's options.", _qinfo, ("readonly",))
_queue_command("QSTATS", 2, "Returns a queue's counters, overall and per partition.", _qstats, ("readonly",))
_queue_command("QLEN", 2, "Returns how many items are ready to lease now.", _qlen, ("readonly", "fast"))
_queue_command(
    "QPRODUCE",
    -4,
    "Adds items at the tail of the queue, now or at a scheduled time; returns their ids.",
    _qproduce,
    ("write", "fast"),
    _WHEN,
    Arg("kind", token="KIND", optional=True),
    Arg("reference", token="REFERENCE", optional=True),
    Arg("encoding", token="ENCODING", optional=True),
    Arg("payload", token="ITEMS", multiple=True),
)
_queue_command(
    "QLEASE",
    -2,
    "Leases up to COUNT ready items, optionally blocking until one is ready.",
    _qlease,
    ("write", "fast", "blocking"),
    Arg("count", "integer", token="COUNT", optional=True),
    Arg("timeout", "integer", token="BLOCK", optional=True),
)
_queue_command(
    "QCOMPLETE", -3, "Completes leased items: they are deleted.", _qcomplete, ("write", "fast"), _ID
)
_queue_command(
    "QRETRY",
    -3,
    "Hands leased items back: now, later (DELAY / AT) or to the dead queue (DEAD).",
    _qretry,
    ("write", "fast"),
    Arg(
        "when",
        "oneof",
        optional=True,
        children=(
            Arg("delay", "integer", token="DELAY"),
            Arg("at", "integer", token="AT"),
            Arg("dead", "pure-token", token="DEAD"),
        ),
    ),
    _ID,
)
_queue_command(
    "QEXTEND",
    -3,
    "Extends leases to now + FOR ms (default: the queue's lease timeout).",
    _qextend,
    ("write", "fast"),
    Arg("ms", "integer", token="FOR", optional=True),
    _ID,
)
_queue_command(
    "QITEMS",
    -2,
    "Lists items in storage order, with their state.",
    _qitems,
    ("readonly",),
    Arg("partition", "integer", token="PARTITION", optional=True),
    Arg("id", token="AFTER", optional=True),
    Arg("count", "integer", token="LIMIT", optional=True),
)
_queue_command("QREMOVE", -3, "Removes items whatever their state.", _qremove, ("write",), _ID)
_queue_command(
    "QCLEAR",
    -2,
    "Removes ready and scheduled items; with ALL, leased ones too.",
    _qclear,
    ("write",),
    Arg("all", "pure-token", token="ALL", optional=True),
)
