"""Storage layout of one partition: keys and item records (ADR 0003).

Keys are ordered so each state is a range scan: `r`+seq ready items in FIFO order; `l`+seq leased
items; `s`+seq scheduled items with `w`+due+seq as their due-time index; `x`+created+seq an expiry index
kept only while the queue has an expire timeout; `m` the partition's counters. A seq is never reused, so
an id (queue uid, partition, seq) names one item at one place in its queue.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import repeat
from operator import itemgetter
from typing import Final

from querator.model import DeadReason

READY: Final = b"r"
LEASED: Final = b"l"
SCHEDULED: Final = b"s"
DUE_INDEX: Final = b"w"
EXPIRY_INDEX: Final = b"x"
META_KEY: Final = b"m"

_SEQ = struct.Struct(">Q")
# A state's one-byte prefix and a seq: packing both at once builds a batch of keys in one C-level pass.
_STATE_SEQ = struct.Struct(">cQ")
_TWO = struct.Struct(">QQ")
# attempts, created_at, enqueue_at, lease_deadline, then the lengths of kind, reference and encoding.
_HEADER = struct.Struct(">IqqqHHH")
_HEADER_SIZE: Final = _HEADER.size
# The record format's version mark (ADR 15): the top bit of `attempts` says an extras block (the lengths of
# reason, source queue and source id, and the dead-reason code, then those bytes) sits between the labels
# and the payload. Records without extras stay exactly as the first format wrote them, so a data directory
# of an earlier version opens unchanged and the bulk lease path keeps its one-struct pass.
_EXTENDED: Final = 0x8000_0000
_ATTEMPTS: Final = _EXTENDED - 1
_EXTRAS = struct.Struct(">HHHB")
_EXTRAS_SIZE: Final = _EXTRAS.size
# The partition's counters: 13 slots in the first format (the last four always 0), 14 since SPEC 8's
# metrics; a shorter record is read with the missing counters at 0, so an earlier data directory opens
# unchanged.
_META = struct.Struct(">14q")
_META_SLOT = struct.Struct(">q")
DEAD_REASONS: Final[tuple[DeadReason, ...]] = ("", "max-attempts", "expired", "retry-dead")
DEAD_MAX_ATTEMPTS: Final = 1
DEAD_EXPIRED: Final = 2
DEAD_RETRY: Final = 3


def seq_key(prefix: bytes, seq: int) -> bytes:
    return prefix + _SEQ.pack(seq)


def seq_keys(prefix: bytes, seqs: Iterable[int]) -> list[bytes]:
    """`seq_key` of each seq (`prefix` is one of the one-byte states), built in one C-level pass."""
    return list(map(_STATE_SEQ.pack, repeat(prefix), seqs))


def key_seq(key: bytes) -> int:
    return int(_SEQ.unpack_from(key, 1)[0])


def index_key(prefix: bytes, when: int, seq: int) -> bytes:
    return prefix + _TWO.pack(when, seq)


def index_entry(key: bytes) -> tuple[int, int]:
    when, seq = _TWO.unpack_from(key, 1)
    return int(when), int(seq)


def prefix_end(prefix: bytes) -> bytes:
    return bytes([prefix[0] + 1])


@dataclass(slots=True)
class Record:
    attempts: int
    created_at: int
    enqueue_at: int
    lease_deadline: int
    kind: bytes
    reference: bytes
    encoding: bytes
    payload: bytes
    # The extras (SPEC 7): the last QRETRY's reason and, in a dead queue, where the item came from.
    reason: bytes = b""
    source_queue: bytes = b""
    source_id: bytes = b""
    dead_reason: int = 0  # an index into DEAD_REASONS

    @property
    def extended(self) -> bool:
        return bool(self.reason or self.source_queue or self.source_id or self.dead_reason)

    def clear_extras(self) -> None:
        self.reason = self.source_queue = self.source_id = b""
        self.dead_reason = 0

    def encode(self) -> bytes:
        extended = self.extended
        head = _HEADER.pack(
            min(self.attempts, _ATTEMPTS) | (_EXTENDED if extended else 0),
            self.created_at,
            self.enqueue_at,
            self.lease_deadline,
            len(self.kind),
            len(self.reference),
            len(self.encoding),
        )
        labels = self.kind + self.reference + self.encoding
        if not extended:
            return head + labels + self.payload
        extras = _EXTRAS.pack(len(self.reason), len(self.source_queue), len(self.source_id), self.dead_reason)
        return head + labels + extras + self.reason + self.source_queue + self.source_id + self.payload

    @classmethod
    def decode(cls, data: bytes) -> Record:
        attempts, created, enqueue, deadline, nk, nr, ne = _HEADER.unpack_from(data)
        a = _HEADER_SIZE
        b = a + nk
        c = b + nr
        d = c + ne
        if not attempts & _EXTENDED:
            return cls(attempts, created, enqueue, deadline, data[a:b], data[b:c], data[c:d], data[d:])
        n_reason, n_source, n_id, dead_reason = _EXTRAS.unpack_from(data, d)
        e = d + _EXTRAS_SIZE
        f = e + n_reason
        g = f + n_source
        h = g + n_id
        return cls(
            attempts & _ATTEMPTS,
            created,
            enqueue,
            deadline,
            data[a:b],
            data[b:c],
            data[c:d],
            data[h:],
            data[e:f],
            data[f:g],
            data[g:h],
            dead_reason,
        )


def lease_view(data: bytes, deadline: int) -> tuple[bytes, int, int, bytes, bytes, bytes, bytes]:
    """The hot path of a lease, without a Record: returns the leased record (attempts + 1, deadline set),
    then attempts, created_at, kind, reference, encoding and payload."""
    attempts, created, enqueue, _, nk, nr, ne = _HEADER.unpack_from(data)
    if attempts & _EXTENDED:  # rare (retried with a reason, or dead-lettered): the general path
        record = Record.decode(data)
        record.attempts += 1
        record.lease_deadline = deadline
        return (
            record.encode(),
            record.attempts,
            created,
            record.kind,
            record.reference,
            record.encoding,
            record.payload,
        )
    attempts += 1
    a = _HEADER_SIZE
    b = a + nk
    c = b + nr
    d = c + ne
    leased = _HEADER.pack(attempts, created, enqueue, deadline, nk, nr, ne) + data[a:]
    return leased, attempts, created, data[a:b], data[b:c], data[c:d], data[d:]


def lease_many(values: list[bytes], deadline: int) -> tuple[list[bytes], list[int], list[bytes]] | None:
    """`lease_view` of many records at once, without Python code per record: the leased records, their
    attempts and their payloads. Only for records without kind, reference, encoding and extras (then the
    payload follows the fixed header); None if any has one."""
    count = len(values)
    layout = ">" + "IqqqHHH" * count
    fields = list(struct.unpack(layout, b"".join(map(itemgetter(slice(0, _HEADER_SIZE)), values))))
    if any(fields[4::7]) or any(fields[5::7]) or any(fields[6::7]) or max(fields[0::7]) & _EXTENDED:
        return None
    attempts = list(map((1).__add__, fields[0::7]))
    fields[0::7] = attempts
    fields[3::7] = [deadline] * count
    heads = struct.unpack(f"{_HEADER_SIZE}s" * count, struct.pack(layout, *fields))
    payloads = list(map(itemgetter(slice(_HEADER_SIZE, None)), values))
    return list(map(bytes.__add__, heads, payloads)), attempts, payloads


def new_record_prefix(
    created_at: int, enqueue_at: int, kind: bytes, reference: bytes, encoding: bytes
) -> bytes:
    """Everything of a new item's record but its payload, which follows it: shared by all the items of one
    QPRODUCE, so the hot path builds it once per call."""
    return (
        _HEADER.pack(0, created_at, enqueue_at, 0, len(kind), len(reference), len(encoding))
        + kind
        + reference
        + encoding
    )


def ready_keys(first_seq: int, count: int) -> list[bytes]:
    """The ready keys of `count` consecutive seqs from `first_seq`."""
    return seq_keys(READY, range(first_seq, first_seq + count))


@dataclass(slots=True)
class PartitionMeta:
    """What a partition must know at start without scanning its items; written with every batch."""

    next_seq: int = 1
    ready: int = 0
    scheduled: int = 0
    ready_head: int = 0
    produced: int = 0
    completed: int = 0
    retried: int = 0
    lease_expired: int = 0
    dead_lettered: int = 0
    # Duplicate QPRODUCE calls answered by this partition (SPEC 7); a slot that was 0 before, so the
    # counters of an earlier version read as none.
    deduplicated: int = 0
    # For the metrics (SPEC 8): items leased, and `dead_lettered` by why (counted since this version).
    leased: int = 0
    dead_max_attempts: int = 0
    dead_expired: int = 0
    dead_retry: int = 0

    def encode(self) -> bytes:
        return _META.pack(
            self.next_seq,
            self.ready,
            self.scheduled,
            self.ready_head,
            self.produced,
            self.completed,
            self.retried,
            self.lease_expired,
            self.dead_lettered,
            self.deduplicated,
            self.leased,
            self.dead_max_attempts,
            self.dead_expired,
            self.dead_retry,
        )

    @classmethod
    def decode(cls, data: bytes) -> PartitionMeta:
        values = [*struct.unpack(f">{len(data) // _META_SLOT.size}q", data), *[0] * _META.size]
        return cls(*values[: _META.size // _META_SLOT.size])

    def count_dead(self, why: int) -> None:
        self.dead_lettered += 1
        if why == DEAD_MAX_ATTEMPTS:
            self.dead_max_attempts += 1
        elif why == DEAD_EXPIRED:
            self.dead_expired += 1
        else:
            self.dead_retry += 1
