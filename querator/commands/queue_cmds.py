"""Queue commands (SPEC sections 3 and 7): each handler reads its arguments with an `ArgCursor` (its
options from the same `Arg` declarations COMMAND DOCS shows), calls one `Service` method, and says how the
result becomes a RESP reply. Each declaration, with its permission group, sits beside its handler. No queue
logic lives here."""

from __future__ import annotations

from typing import Any

from querator.clients import ClientState
from querator.commands.cursor import ArgCursor, Options, OptionSpec
from querator.commands.reply import Deferred
from querator.commands.table import Arg, Command
from querator.errors import wrong_arity
from querator.model import (
    DEFAULT_REDRIVE_LIMIT,
    LeasedItem,
    QueueInfo,
    QueueOptions,
    QueueStats,
    QueueUpdate,
    StoredItem,
)
from querator.resp import Encoded, SimpleString

OK = SimpleString("OK")
_QUEUE = Arg("queue", "key")
_IDS = Arg("id", multiple=True)
_NOQUEUE = "`-NOQUEUE no such queue 'name'`"
_BAD_ID = "`-ERR invalid id 'x'` (a malformed id fails the whole call)"
_TOO_MANY_IDS = "`-ERR too many ids; at most 1000 per call` (`max-batch`)"


def _ok(_: object) -> SimpleString:
    return OK


def _queue_name(cursor: ArgCursor) -> str:
    return cursor.next_str()


def _queue_command(
    name: str,
    arity: int,
    acl: str,
    summary: str,
    handler: Any,
    flags: tuple[str, ...],
    *args: Arg,
    reply: str,
    errors: tuple[str, ...] = (_NOQUEUE,),
) -> Command:
    """A command whose first argument is a queue (its "key" for COMMAND INFO and the ACL check)."""
    return Command(
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
        acl=acl,
        reply=reply,
        errors=errors,
    )


# -- administration -------------------------------------------------------------------------------------

_QUEUE_OPTIONS = OptionSpec(
    Arg("partitions", "integer", token="PARTITIONS", optional=True),
    Arg("lease-timeout", "integer", token="LEASE-TIMEOUT", optional=True),
    Arg("expire-timeout", "integer", token="EXPIRE-TIMEOUT", optional=True),
    Arg("max-attempts", "integer", token="MAX-ATTEMPTS", optional=True),
    Arg("dead-queue", token="DEAD-QUEUE", optional=True),
    Arg("reference", token="REFERENCE", optional=True),
    Arg("dedup-window", "integer", token="DEDUP-WINDOW", optional=True),
)
_OPTION_ERRORS = (
    "`-ERR PARTITIONS must be between 1 and 1024`, and likewise for every option out of its range",
    "`-ERR EXPIRE-TIMEOUT must be 0 or at least the lease timeout (ms)`",
    "`-NOQUEUE no such queue 'dead'` for a missing DEAD-QUEUE; `-ERR DEAD-QUEUE ...` when it is the queue "
    "itself or has a dead queue of its own",
)


def _queue_update(options: Options) -> QueueUpdate:
    return QueueUpdate(
        partitions=options.integer(b"PARTITIONS"),
        lease_timeout=options.integer(b"LEASE-TIMEOUT"),
        expire_timeout=options.integer(b"EXPIRE-TIMEOUT"),
        max_attempts=options.integer(b"MAX-ATTEMPTS"),
        dead_queue=options.text(b"DEAD-QUEUE"),
        reference=options.text(b"REFERENCE"),
        dedup_window=options.integer(b"DEDUP-WINDOW"),
    )


def _qcreate(client: ClientState, args: list[bytes]) -> Deferred:
    cursor = ArgCursor(args)
    name = _queue_name(cursor)
    options = QueueOptions().updated(_queue_update(cursor.options(_QUEUE_OPTIONS)))
    return Deferred(client.server.service.create_queue(name, options), _ok)


QCREATE = _queue_command(
    "QCREATE",
    -2,
    "admin",
    "Creates a queue.",
    _qcreate,
    ("write", "admin"),
    *_QUEUE_OPTIONS.args,
    reply="`+OK`",
    errors=(
        "`-EXISTS queue 'name' already exists`",
        "`-ERR invalid queue name; ...` (1-512 bytes of visible ASCII, no whitespace)",
        *_OPTION_ERRORS,
    ),
)


def _qupdate(client: ClientState, args: list[bytes]) -> Deferred:
    cursor = ArgCursor(args)
    name = _queue_name(cursor)
    update = _queue_update(cursor.options(_QUEUE_OPTIONS))
    return Deferred(client.server.service.update_queue(name, update), _ok)


QUPDATE = _queue_command(
    "QUPDATE",
    -2,
    "admin",
    'Changes a queue\'s options (only those given); PARTITIONS may only grow; DEAD-QUEUE "" removes it.',
    _qupdate,
    ("write", "admin"),
    *_QUEUE_OPTIONS.args,
    reply="`+OK`",
    errors=(_NOQUEUE, "`-ERR PARTITIONS may only grow; the queue has n`", *_OPTION_ERRORS),
)


def _qdelete(client: ClientState, args: list[bytes]) -> Deferred:
    return Deferred(client.server.service.delete_queue(_queue_name(ArgCursor(args))), _ok)


QDELETE = _queue_command(
    "QDELETE",
    2,
    "admin",
    "Deletes a queue and all its items; its storage is dropped.",
    _qdelete,
    ("write", "admin"),
    reply="`+OK`",
    errors=(_NOQUEUE, "`-ERR ...` naming the queue that uses it as its dead queue"),
)

_QLIST_OPTIONS = OptionSpec(
    Arg("after", token="AFTER", optional=True), Arg("limit", "integer", token="LIMIT", optional=True)
)


def _qlist(client: ClientState, args: list[bytes]) -> Deferred:
    options = ArgCursor(args).options(_QLIST_OPTIONS)
    after = options.text(b"AFTER") or ""
    limit = options.integer(b"LIMIT")
    limit = 1000 if limit is None else limit
    user = client.acl
    if user.unrestricted:
        return Deferred(client.server.service.list_queues(after, limit))
    # A restricted user sees only the queues its patterns allow.
    names = client.server.service.list_queues(after, 100_000)
    return Deferred(names, lambda found: [n for n in found if user.may_access(n)][:limit])


QLIST = Command(
    "QLIST",
    -1,
    "queue",
    "Lists queue names in byte order, after AFTER, at most LIMIT (default 1000).",
    _qlist,
    ("readonly",),
    _QLIST_OPTIONS.args,
    acl="read",
    reply="array of queue names",
    errors=("`-ERR LIMIT must be between 1 and 100000`",),
)


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
        "paused": int(info.paused),
        "dedup-window": info.dedup_window,
    }


def _qinfo(client: ClientState, args: list[bytes]) -> Deferred:
    return Deferred(client.server.service.queue_info(_queue_name(ArgCursor(args))), _info_reply)


QINFO = _queue_command(
    "QINFO",
    2,
    "read",
    "Returns a queue's options.",
    _qinfo,
    ("readonly",),
    reply="map (RESP3) / flat field-value array (RESP2): `name partitions lease-timeout expire-timeout "
    "max-attempts dead-queue reference created-at updated-at paused dedup-window` (paused is 0 or 1)",
)


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
        "deduplicated": stats.deduplicated,
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


def _qstats(client: ClientState, args: list[bytes]) -> Deferred:
    return Deferred(client.server.service.queue_stats(_queue_name(ArgCursor(args))), _stats_reply)


QSTATS = _queue_command(
    "QSTATS",
    2,
    "read",
    "Returns a queue's counters, overall and per partition.",
    _qstats,
    ("readonly",),
    reply="map / flat array: `ready leased scheduled total produced completed retried lease-expired "
    "dead-lettered deduplicated oldest-ready-age waiting-consumers partitions`; `partitions` is an array "
    "of one map per partition: `partition ready leased scheduled total`",
)


def _qlen(client: ClientState, args: list[bytes]) -> Deferred:
    return Deferred(client.server.service.queue_length(_queue_name(ArgCursor(args))))


QLEN = _queue_command(
    "QLEN",
    2,
    "read",
    "Returns how many items are ready to lease now.",
    _qlen,
    ("readonly", "fast"),
    reply="integer",
)


# -- items ------------------------------------------------------------------------------------------------

_WHEN = Arg(
    "when",
    "oneof",
    optional=True,
    children=(Arg("delay", "integer", token="DELAY"), Arg("at", "integer", token="AT")),
)
_QPRODUCE_OPTIONS = OptionSpec(
    Arg("key", token="DEDUP", optional=True),
    _WHEN,
    Arg("kind", token="KIND", optional=True),
    Arg("reference", token="REFERENCE", optional=True),
    Arg("encoding", token="ENCODING", optional=True),
    Arg("payload", token="ITEMS", multiple=True),
)


def _qproduce(client: ClientState, args: list[bytes]) -> Deferred:
    cursor = ArgCursor(args)
    name = _queue_name(cursor)
    options = cursor.options(_QPRODUCE_OPTIONS)
    payloads = cursor.rest()
    if not payloads:
        raise wrong_arity("qproduce")
    future = client.server.service.produce(
        name,
        payloads,
        delay_ms=options.integer(b"DELAY"),
        at_ms=options.integer(b"AT"),
        kind=options.raw(b"KIND") or b"",
        reference=options.raw(b"REFERENCE") or b"",
        encoding=options.raw(b"ENCODING") or b"",
        dedup=options.raw(b"DEDUP"),
    )
    return Deferred(future, _ids_reply)


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


QPRODUCE = _queue_command(
    "QPRODUCE",
    -4,
    "produce",
    "Adds items at the tail of the queue, now or at a scheduled time; every argument after ITEMS is a "
    "payload, even one that looks like an option.",
    _qproduce,
    ("write", "fast"),
    *_QPRODUCE_OPTIONS.args,
    reply="array of the new ids, in order; with DEDUP, a repeat of a call whose key was used on this queue "
    "within its dedup window stores nothing and returns the first call's ids",
    errors=(
        _NOQUEUE,
        "`-ERR DEDUP key must be 1-256 bytes`",
        "`-ERR syntax error; ITEMS is missing: ...` when no ITEMS comes before the payloads",
        "`-ERR item payload too large; max-item-bytes is n` (nothing of the call is stored)",
        "`-ERR too many items; at most 1000 per QPRODUCE` (`max-batch`)",
        "`-ERR DELAY and AT are mutually exclusive`",
        "`-ERR AT must be a Unix time in milliseconds; ...` for an AT that can only be seconds",
    ),
)


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


_QLEASE_OPTIONS = OptionSpec(
    Arg("count", "integer", token="COUNT", optional=True),
    Arg("timeout", "integer", token="BLOCK", optional=True),
)


def _qlease(client: ClientState, args: list[bytes]) -> Deferred:
    cursor = ArgCursor(args)
    name = _queue_name(cursor)
    options = cursor.options(_QLEASE_OPTIONS)
    count = options.integer(b"COUNT")
    block = options.integer(b"BLOCK")
    future = client.server.service.lease(name, 1 if count is None else count, block)
    return Deferred(future, _lease_reply, blocking=block is not None)


QLEASE = _queue_command(
    "QLEASE",
    -2,
    "consume",
    "Leases up to COUNT ready items (default 1), optionally blocking up to BLOCK ms (0: no limit) until one "
    "is ready.",
    _qlease,
    ("write", "fast", "blocking"),
    *_QLEASE_OPTIONS.args,
    reply="array of items, each `[id, payload, attempts, lease-deadline, kind, reference, encoding]`; "
    "empty when nothing is ready (or BLOCK ran out)",
    errors=(_NOQUEUE, "`-ERR COUNT must be between 1 and 1000`", "`-ERR BLOCK must be at least 0`"),
)


def _ids(cursor: ArgCursor, command: str) -> list[bytes]:
    ids = cursor.rest()
    if not ids:
        raise wrong_arity(command)
    return ids


def _qcomplete(client: ClientState, args: list[bytes]) -> Deferred:
    cursor = ArgCursor(args)
    name = _queue_name(cursor)
    return Deferred(client.server.service.complete(name, cursor.rest()))


QCOMPLETE = _queue_command(
    "QCOMPLETE",
    -3,
    "consume",
    "Completes leased items: they are deleted.",
    _qcomplete,
    ("write", "fast"),
    _IDS,
    reply="integer: how many of the ids were leased and are now completed",
    errors=(_NOQUEUE, _BAD_ID, _TOO_MANY_IDS),
)

_QRETRY_OPTIONS = OptionSpec(
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
    Arg("text", token="REASON", optional=True),
)


def _qretry(client: ClientState, args: list[bytes]) -> Deferred:
    cursor = ArgCursor(args)
    name = _queue_name(cursor)
    options = cursor.options(_QRETRY_OPTIONS, then_tail=True)
    ids = _ids(cursor, "qretry")
    future = client.server.service.retry(
        name,
        ids,
        delay_ms=options.integer(b"DELAY"),
        at_ms=options.integer(b"AT"),
        dead=options.flag(b"DEAD"),
        reason=options.raw(b"REASON"),
    )
    return Deferred(future)


QRETRY = _queue_command(
    "QRETRY",
    -3,
    "consume",
    "Hands leased items back: now, later (DELAY / AT) or to the dead queue (DEAD); REASON is kept on the "
    "item as its last failure reason.",
    _qretry,
    ("write", "fast"),
    *_QRETRY_OPTIONS.args,
    _IDS,
    reply="integer: how many leased items were retried",
    errors=(
        _NOQUEUE,
        _BAD_ID,
        _TOO_MANY_IDS,
        "`-ERR DEAD, DELAY and AT are mutually exclusive`",
        "`-ERR REASON must be at most 4096 bytes`",
    ),
)

_QEXTEND_OPTIONS = OptionSpec(Arg("ms", "integer", token="FOR", optional=True))


def _qextend(client: ClientState, args: list[bytes]) -> Deferred:
    cursor = ArgCursor(args)
    name = _queue_name(cursor)
    options = cursor.options(_QEXTEND_OPTIONS, then_tail=True)
    ids = _ids(cursor, "qextend")
    return Deferred(client.server.service.extend(name, ids, lease_for_ms=options.integer(b"FOR")))


QEXTEND = _queue_command(
    "QEXTEND",
    -3,
    "consume",
    "Extends leases to now + FOR ms (default: the queue's lease timeout; FOR 0 ends them now).",
    _qextend,
    ("write", "fast"),
    *_QEXTEND_OPTIONS.args,
    _IDS,
    reply="integer: how many leases were extended",
    errors=(_NOQUEUE, _BAD_ID, _TOO_MANY_IDS, "`-ERR FOR must be between 0 and 604800000`"),
)


def _qremove(client: ClientState, args: list[bytes]) -> Deferred:
    cursor = ArgCursor(args)
    name = _queue_name(cursor)
    return Deferred(client.server.service.remove(name, cursor.rest()))


QREMOVE = _queue_command(
    "QREMOVE",
    -3,
    "admin",
    "Removes items whatever their state.",
    _qremove,
    ("write",),
    _IDS,
    reply="integer: how many items were removed",
    errors=(_NOQUEUE, _BAD_ID, _TOO_MANY_IDS),
)

_QCLEAR_OPTIONS = OptionSpec(Arg("all", "pure-token", token="ALL", optional=True))


def _qclear(client: ClientState, args: list[bytes]) -> Deferred:
    cursor = ArgCursor(args)
    name = _queue_name(cursor)
    include_leased = cursor.options(_QCLEAR_OPTIONS).flag(b"ALL")
    return Deferred(client.server.service.clear(name, include_leased=include_leased))


QCLEAR = _queue_command(
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
    name = _queue_name(cursor)
    options = cursor.options(_QITEMS_OPTIONS)
    limit = options.integer(b"LIMIT")
    future = client.server.service.items(
        name,
        partition=options.integer(b"PARTITION"),
        after=options.text(b"AFTER"),
        limit=100 if limit is None else limit,
    )
    return Deferred(future, lambda items: [_item_reply(i) for i in items])


QITEMS = _queue_command(
    "QITEMS",
    -2,
    "admin",
    "Lists items in storage order (partition 0 first), with their state; at most LIMIT (default 100).",
    _qitems,
    ("readonly",),
    *_QITEMS_OPTIONS.args,
    reply="array of items, each a map / flat array: " + _ITEM_FIELDS,
    errors=(
        _NOQUEUE,
        "`-ERR PARTITION must be between 0 and n`",
        "`-ERR LIMIT must be between 1 and 1000`",
        "`-ERR invalid id 'x'` for a malformed AFTER",
    ),
)


def _qget(client: ClientState, args: list[bytes]) -> Deferred:
    cursor = ArgCursor(args)
    future = client.server.service.get(_queue_name(cursor), cursor.next_bytes())
    return Deferred(future, lambda item: None if item is None else _item_reply(item))


QGET = _queue_command(
    "QGET",
    3,
    "admin",
    "Returns one item by id, whatever its state.",
    _qget,
    ("readonly", "fast"),
    Arg("id"),
    reply="the item as in QITEMS (map / flat array), or null if no item has that id now",
    errors=(_NOQUEUE, "`-ERR invalid id 'x'`"),
)


def _qpause(client: ClientState, args: list[bytes]) -> Deferred:
    return Deferred(client.server.service.pause(_queue_name(ArgCursor(args))), _ok)


QPAUSE = _queue_command(
    "QPAUSE",
    2,
    "admin",
    "Pauses a queue: it takes produces and lease ends but hands out nothing until QRESUME.",
    _qpause,
    ("write", "admin"),
    reply="`+OK` (also when already paused); survives restarts",
)


def _qresume(client: ClientState, args: list[bytes]) -> Deferred:
    return Deferred(client.server.service.resume(_queue_name(ArgCursor(args))), _ok)


QRESUME = _queue_command(
    "QRESUME",
    2,
    "admin",
    "Resumes a paused queue; consumers that waited through the pause are served.",
    _qresume,
    ("write", "admin"),
    reply="`+OK` (also when not paused)",
)

_QREDRIVE_OPTIONS = OptionSpec(
    Arg("target", token="TO", optional=True), Arg("count", "integer", token="LIMIT", optional=True)
)


def _qredrive(client: ClientState, args: list[bytes]) -> Deferred:
    cursor = ArgCursor(args)
    name = _queue_name(cursor)
    options = cursor.options(_QREDRIVE_OPTIONS)
    limit = options.integer(b"LIMIT")
    future = client.server.service.redrive(
        name, to=options.text(b"TO"), limit=DEFAULT_REDRIVE_LIMIT if limit is None else limit
    )
    return Deferred(future)


QREDRIVE = _queue_command(
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
        _NOQUEUE,
        "`-ERR LIMIT must be between 1 and 100000`",
        "`-ERR TO may not be the queue itself`",
    ),
)

DECLARATIONS = (
    QCREATE,
    QUPDATE,
    QDELETE,
    QLIST,
    QINFO,
    QSTATS,
    QLEN,
    QPRODUCE,
    QLEASE,
    QCOMPLETE,
    QRETRY,
    QEXTEND,
    QITEMS,
    QREMOVE,
    QCLEAR,
    QGET,
    QPAUSE,
    QRESUME,
    QREDRIVE,
)
