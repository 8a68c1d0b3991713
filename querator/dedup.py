"""Producer deduplication (SPEC 7): a queue's remembered `DEDUP` keys, in a key space of their own.

`d`+key holds when the key was first used and where that call's items went (partition, first seq,
count), from which its ids are rebuilt; `t`+first-use+key orders the keys by age so the sweep forgets
expired ones from the front. Keys are queue-wide, so they outlive partition growth; an entry is written
in the same write set as the items it names (one atomic write, like a dead letter, ADR 3), by whichever
partition takes the produce. Steps never interleave and each writes before the next begins, so a
lookup reads every earlier step's keys from storage and its own step's from `_step`. An expired key
counts as absent at once and is deleted by the next sweep, so nothing is kept past its window.
"""

from __future__ import annotations

import struct
from typing import Final

from querator.store.base import KeySpace, WriteSet

_ENTRY = struct.Struct(">qIQI")  # first use (ms), partition, first seq, count
_AGE = struct.Struct(">q")
KEY: Final = b"d"
AGE: Final = b"t"
_AGE_END: Final = b"u"


class DedupEntry:
    __slots__ = ("count", "first_seq", "first_use", "partition")

    def __init__(self, first_use: int, partition: int, first_seq: int, count: int) -> None:
        self.first_use = first_use
        self.partition = partition
        self.first_seq = first_seq
        self.count = count

    def encode(self) -> bytes:
        return _ENTRY.pack(self.first_use, self.partition, self.first_seq, self.count)

    @classmethod
    def decode(cls, raw: bytes) -> DedupEntry:
        return cls(*_ENTRY.unpack(raw))


class DedupKeys:
    """One queue's keys. `window` is read from the queue's options on every use, so a QUPDATE of
    DEDUP-WINDOW applies to keys already remembered."""

    def __init__(self, space: KeySpace) -> None:
        self.space = space
        self._step: dict[bytes, bytes] = {}  # entries remembered in the step being applied, encoded

    def lookup(self, key: bytes, now: int, window: int) -> DedupEntry | None:
        """The live entry of `key`, or None (never used, or its window has passed)."""
        raw = self._step.get(key) or self.space.get(KEY + key)
        if raw is None:
            return None
        entry = DedupEntry.decode(raw)
        return entry if entry.first_use + window > now else None

    def remember(
        self, ws: WriteSet, key: bytes, now: int, partition: int, first_seq: int, count: int
    ) -> None:
        """The key was first used `now` by a call whose `count` items got consecutive seqs from
        `first_seq` in `partition`; written in that call's write set. No object per call: the miss is
        the common path of a DEDUP produce (docs/benchmarks.md, the DEDUP row)."""
        entry = _ENTRY.pack(now, partition, first_seq, count)
        ws.put_many(self.space, [KEY + key, AGE + _AGE.pack(now) + key], [entry, b""])
        self._step[key] = entry

    def written(self) -> None:
        """The step's write went out (or failed): storage now answers for its keys."""
        if self._step:
            self._step.clear()

    def oldest_use(self) -> int | None:
        """When the oldest remembered key was first used (its window ends `window` ms later)."""
        for key, _ in self.space.scan(AGE, _AGE_END):
            return int(_AGE.unpack_from(key, 1)[0])
        return None

    def sweep(self, ws: WriteSet, now: int, window: int, budget: int) -> int:
        """Forget up to `budget` keys whose window has passed; how many index entries it went through."""
        done = 0
        for age_key, _ in self.space.scan(AGE, _AGE_END):
            first_use = int(_AGE.unpack_from(age_key, 1)[0])
            if first_use + window > now or done >= budget:
                break
            done += 1
            key = age_key[1 + _AGE.size :]
            ws.delete(self.space, age_key)
            # The key may have been used again since (its old window passed): then it is not ours.
            raw = self._step.get(key) or self.space.get(KEY + key)
            current = DedupEntry.decode(raw) if raw is not None else None
            if current is not None and current.first_use == first_use:
                ws.delete(self.space, KEY + key)
        return done

    def count(self) -> int:
        """Keys remembered (for tests and the storage-size check): the entries, not the index."""
        return sum(1 for _ in self.space.scan(KEY, AGE))
