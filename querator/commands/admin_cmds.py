"""Queue administration (SPEC sections 3 and 7): QCREATE, QUPDATE, QDELETE, QLIST, QINFO, QSTATS, QLEN,
QPAUSE, QRESUME. Each handler reads its arguments, calls one `Service` method and says how the result
becomes a reply; each declaration, with its permission group, sits beside its handler."""

from __future__ import annotations

from typing import Any

from querator.clients import ClientState
from querator.commands.cursor import ArgCursor, Options, OptionSpec
from querator.commands.queue_common import (
    NOQUEUE_TEXT,
    ok_reply,
    queue_command,
    queue_name,
)
from querator.commands.reply import Deferred
from querator.commands.table import Arg, Command
from querator.model import (
    QueueInfo,
    QueueOptions,
    QueueStats,
    QueueUpdate,
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
    name = queue_name(cursor)
    options = QueueOptions().updated(_queue_update(cursor.options(_QUEUE_OPTIONS)))
    return Deferred(client.server.service.create_queue(name, options), ok_reply)


QCREATE = queue_command(
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
    name = queue_name(cursor)
    update = _queue_update(cursor.options(_QUEUE_OPTIONS))
    return Deferred(client.server.service.update_queue(name, update), ok_reply)


QUPDATE = queue_command(
    "QUPDATE",
    -2,
    "admin",
    'Changes a queue\'s options (only those given); PARTITIONS may only grow; DEAD-QUEUE "" removes it.',
    _qupdate,
    ("write", "admin"),
    *_QUEUE_OPTIONS.args,
    reply="`+OK`",
    errors=(NOQUEUE_TEXT, "`-ERR PARTITIONS may only grow; the queue has n`", *_OPTION_ERRORS),
)


def _qdelete(client: ClientState, args: list[bytes]) -> Deferred:
    return Deferred(client.server.service.delete_queue(queue_name(ArgCursor(args))), ok_reply)


QDELETE = queue_command(
    "QDELETE",
    2,
    "admin",
    "Deletes a queue and all its items; its storage is dropped.",
    _qdelete,
    ("write", "admin"),
    reply="`+OK`",
    errors=(NOQUEUE_TEXT, "`-ERR ...` naming the queue that uses it as its dead queue"),
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
    return Deferred(client.server.service.queue_info(queue_name(ArgCursor(args))), _info_reply)


QINFO = queue_command(
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
    return Deferred(client.server.service.queue_stats(queue_name(ArgCursor(args))), _stats_reply)


QSTATS = queue_command(
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
    return Deferred(client.server.service.queue_length(queue_name(ArgCursor(args))))


QLEN = queue_command(
    "QLEN",
    2,
    "read",
    "Returns how many items are ready to lease now.",
    _qlen,
    ("readonly", "fast"),
    reply="integer",
)


def _qpause(client: ClientState, args: list[bytes]) -> Deferred:
    return Deferred(client.server.service.pause(queue_name(ArgCursor(args))), ok_reply)


QPAUSE = queue_command(
    "QPAUSE",
    2,
    "admin",
    "Pauses a queue: it takes produces and lease ends but hands out nothing until QRESUME.",
    _qpause,
    ("write", "admin"),
    reply="`+OK` (also when already paused); survives restarts",
)


def _qresume(client: ClientState, args: list[bytes]) -> Deferred:
    return Deferred(client.server.service.resume(queue_name(ArgCursor(args))), ok_reply)


QRESUME = queue_command(
    "QRESUME",
    2,
    "admin",
    "Resumes a paused queue; consumers that waited through the pause are served.",
    _qresume,
    ("write", "admin"),
    reply="`+OK` (also when not paused)",
)


DECLARATIONS = (QCREATE, QUPDATE, QDELETE, QLIST, QINFO, QSTATS, QLEN, QPAUSE, QRESUME)
