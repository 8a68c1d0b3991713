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
_META = struct.Struct(">13q")


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

    def encode(self) -> bytes:
        return (
            _HEADER.pack(
                self.attempts,
                self.created_at,
                self.enqueue_at,
                self.lease_deadline,
                len(self.kind),
                len(self.reference),
                len(self.encoding),
            )
            + self.kind
            + self.reference
            + self.encoding
            + self.payload
        )

    @classmethod
    def decode(cls, data: bytes) -> Record:
        attempts, created, enqueue, deadline, nk, nr, ne = _HEADER.unpack_from(data)
        a = _HEADER_SIZE
        b = a + nk
        c = b + nr
        d = c + ne
        return cls(attempts, created, enqueue, deadline, data[a:b], data[b:c], data[c:d], data[d:])


def lease_view(data: bytes, deadline: int) -> tuple[bytes, int, int, bytes, bytes, bytes, bytes]:
    """The hot path of a lease, without a Record: returns the leased record (attempts + 1, deadline set),
    then attempts, created_at, kind, reference, encoding and payload."""
    attempts, created, enqueue, _, nk, nr, ne = _HEADER.unpack_from(data)
    attempts += 1
    a = _HEADER_SIZE
    b = a + nk
    c = b + nr
    d = c + ne
    leased = _HEADER.pack(attempts, created, enqueue, deadline, nk, nr, ne) + data[a:]
    return leased, attempts, created, data[a:b], data[b:c], data[c:d], data[d:]


def lease_many(values: list[bytes], deadline: int) -> tuple[list[bytes], list[int], list[bytes]] | None:
    """`lease_view` of many records at once, without Python code per record: the leased records, their
    attempts and their payloads. Only for records without kind, reference and encoding (then the payload
    follows the fixed header); None if any has one."""
    count = len(values)
    layout = ">" + "IqqqHHH" * count
    fields = list(struct.unpack(layout, b"".join(map(itemgetter(slice(0, _HEADER_SIZE)), values))))
    if any(fields[4::7]) or any(fields[5::7]) or any(fields[6::7]):
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
            0,
            0,
            0,
            0,
        )

    @classmethod
    def decode(cls, data: bytes) -> PartitionMeta:
        values = _META.unpack(data)
        return cls(*values[:9])
