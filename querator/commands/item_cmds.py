"""The item commands of producers and consumers (SPEC sections 3 and 7): QPRODUCE, QLEASE, QCOMPLETE,
QRETRY, QEXTEND, with the hot replies (ids, leased items) encoded in one pass. Each declaration, with its
permission group, sits beside its handler; no queue logic lives here."""

from __future__ import annotations

from querator.clients import ClientState
from querator.commands.cursor import ArgCursor, OptionSpec
from querator.commands.queue_common import (
    BAD_ID_TEXT,
    IDS_ARG,
    NOQUEUE_TEXT,
    TOO_MANY_IDS_TEXT,
    queue_command,
    queue_name,
    required_ids,
)
from querator.commands.reply import Deferred
from querator.commands.table import Arg
from querator.errors import wrong_arity
from querator.model import (
    LeasedItem,
)
from querator.resp import Encoded

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
    name = queue_name(cursor)
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


QPRODUCE = queue_command(
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
        NOQUEUE_TEXT,
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
    name = queue_name(cursor)
    options = cursor.options(_QLEASE_OPTIONS)
    count = options.integer(b"COUNT")
    block = options.integer(b"BLOCK")
    future = client.server.service.lease(name, 1 if count is None else count, block)
    return Deferred(future, _lease_reply, blocking=block is not None)


QLEASE = queue_command(
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
    errors=(NOQUEUE_TEXT, "`-ERR COUNT must be between 1 and 1000`", "`-ERR BLOCK must be at least 0`"),
)


def _qcomplete(client: ClientState, args: list[bytes]) -> Deferred:
    cursor = ArgCursor(args)
    name = queue_name(cursor)
    return Deferred(client.server.service.complete(name, cursor.rest()))


QCOMPLETE = queue_command(
    "QCOMPLETE",
    -3,
    "consume",
    "Completes leased items: they are deleted.",
    _qcomplete,
    ("write", "fast"),
    IDS_ARG,
    reply="integer: how many of the ids were leased and are now completed",
    errors=(NOQUEUE_TEXT, BAD_ID_TEXT, TOO_MANY_IDS_TEXT),
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
    name = queue_name(cursor)
    options = cursor.options(_QRETRY_OPTIONS, then_tail=True)
    ids = required_ids(cursor, "qretry")
    future = client.server.service.retry(
        name,
        ids,
        delay_ms=options.integer(b"DELAY"),
        at_ms=options.integer(b"AT"),
        dead=options.flag(b"DEAD"),
        reason=options.raw(b"REASON"),
    )
    return Deferred(future)


QRETRY = queue_command(
    "QRETRY",
    -3,
    "consume",
    "Hands leased items back: now, later (DELAY / AT) or to the dead queue (DEAD); REASON is kept on the "
    "item as its last failure reason.",
    _qretry,
    ("write", "fast"),
    *_QRETRY_OPTIONS.args,
    IDS_ARG,
    reply="integer: how many leased items were retried",
    errors=(
        NOQUEUE_TEXT,
        BAD_ID_TEXT,
        TOO_MANY_IDS_TEXT,
        "`-ERR DEAD, DELAY and AT are mutually exclusive`",
        "`-ERR REASON must be at most 4096 bytes`",
    ),
)

_QEXTEND_OPTIONS = OptionSpec(Arg("ms", "integer", token="FOR", optional=True))


def _qextend(client: ClientState, args: list[bytes]) -> Deferred:
    cursor = ArgCursor(args)
    name = queue_name(cursor)
    options = cursor.options(_QEXTEND_OPTIONS, then_tail=True)
    ids = required_ids(cursor, "qextend")
    return Deferred(client.server.service.extend(name, ids, lease_for_ms=options.integer(b"FOR")))


QEXTEND = queue_command(
    "QEXTEND",
    -3,
    "consume",
    "Extends leases to now + FOR ms (default: the queue's lease timeout; FOR 0 ends them now).",
    _qextend,
    ("write", "fast"),
    *_QEXTEND_OPTIONS.args,
    IDS_ARG,
    reply="integer: how many leases were extended",
    errors=(NOQUEUE_TEXT, BAD_ID_TEXT, TOO_MANY_IDS_TEXT, "`-ERR FOR must be between 0 and 604800000`"),
)


DECLARATIONS = (QPRODUCE, QLEASE, QCOMPLETE, QRETRY, QEXTEND)
