"""Item ids: `uid-partition-seq`, formatted and parsed here and nowhere else.

An id names one item at one place in its queue (ADR 3): uid numbers the queue's incarnation, seq is a
partition's never-reused counter. Whatever builds an id in bulk must produce exactly `IdFormat.one(seq)`.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import repeat
from operator import itemgetter
from typing import AnyStr, Final, cast

from querator.errors import CommandError
from querator.model import MAX_ID_BYTES


class IdFormat:
    """The ids of one partition: a fixed `uid-partition-` prefix and the item's seq."""

    __slots__ = ("_format", "partition", "prefix", "uid")

    def __init__(self, uid: int, partition: int) -> None:
        self.uid = uid
        self.partition = partition
        self.prefix = f"{uid}-{partition}-"
        self._format = self.prefix + "%d"

    def one(self, seq: int) -> str:
        return self._format % seq

    def many(self, seqs: Sequence[int]) -> map[str]:
        """The ids of `seqs`, formatted in one C-level pass (no Python code per id)."""
        return map(self._format.__mod__, seqs)

    def run(self, first: int, count: int) -> list[str]:
        """The ids of `count` consecutive seqs from `first`: a produced batch's ids."""
        return prefixed_decimals(self.prefix, first, count)


def seq_of(item_id: str) -> int:
    """The seq of an id this server issued (trusted: it came from a partition, not from a client)."""
    return int(item_id.rsplit("-", 1)[1])


_TWO_DIGITS: Final = tuple(f"{n:02d}" for n in range(100))


def prefixed_decimals(prefix: str, first: int, count: int) -> list[str]:
    """`prefix + str(n)` for `count` consecutive n from `first`.

    Formatting each n costs more than anything else per id, so a run of up to 100 numbers that share all
    but their last two digits is built as one common head plus a two-digit tail from a table: one
    concatenation per id, in C (commit 48e18a9 measured it)."""
    end = first + count
    if first < 100:  # the tails would need leading zeros; only a partition's first items get here
        return [f"{prefix}{n}" for n in range(first, end)]
    ids: list[str] = []
    high, low = divmod(first, 100)
    while first < end:
        take = min(100 - low, end - first)
        ids.extend(map(f"{prefix}{high}".__add__, _TWO_DIGITS[low : low + take]))
        first += take
        high += 1
        low = 0
    return ids


def split_id(raw: str | bytes) -> tuple[int, int, int] | None:
    """(queue uid, partition, seq) of an id `uid-partition-seq`, or None if it is not of that form."""
    data = raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else raw
    if len(data) > MAX_ID_BYTES:
        return None
    parts = data.split(b"-")
    if len(parts) != 3:
        return None
    a, b, c = parts
    # bytes.isdigit() is ASCII-only and false for b"", so no sign, space or underscore reaches int().
    if not (a.isdigit() and b.isdigit() and c.isdigit()):
        return None
    return int(a), int(b), int(c)


def parse_after(raw: str, partitions: int) -> tuple[int, int]:
    """(partition, seq) of a QITEMS `AFTER` id; a malformed one, or one of no partition, fails."""
    parsed = split_id(raw)
    if parsed is None or parsed[1] >= partitions:
        raise CommandError(f"invalid id '{raw}'")
    return parsed[1], parsed[2]


def parse_ids(uid: int, partitions: int, ids: Sequence[str | bytes]) -> dict[int, list[int]]:
    """Well-formed ids grouped by partition, in order and without repeats; a malformed id fails the
    whole call; ids of an earlier queue of the same name are well formed but name nothing (dropped)."""
    same = ids_of_one_partition(uid, partitions, ids)
    return same if same is not None else ids_by_partition(uid, partitions, ids)


def ids_by_partition(uid: int, partitions: int, ids: Sequence[str | bytes]) -> dict[int, list[int]]:
    """The general parser: well-formed ids grouped by partition; the first malformed one fails."""
    groups: dict[int, dict[int, None]] = {}  # dicts keep order and drop repeated ids
    for raw in ids:
        parsed = split_id(raw)
        if parsed is None or parsed[1] >= partitions:
            text = raw.decode("ascii", "replace") if isinstance(raw, bytes) else raw
            raise CommandError(f"invalid id '{text}'")
        if parsed[0] != uid:
            continue  # an id of an earlier queue of this name: well formed, names nothing
        group = groups.get(parsed[1])
        if group is None:
            group = groups[parsed[1]] = {}
        group[parsed[2]] = None
    return {partition: list(seqs) for partition, seqs in groups.items()}


def ids_of_one_partition(
    uid: int, partitions: int, ids: Sequence[str | bytes]
) -> dict[int, list[int]] | None:
    """The common case, checked without Python code per id: ids of one partition of this queue, as one
    lease returns them, all bytes (RESP) or all str (in-process callers of `Service`). None when anything
    differs: the general parser then decides, and names the offending id."""
    if not ids:
        return None
    kinds = set(map(type, ids))
    if kinds == {bytes}:
        return _one_partition(uid, partitions, cast("Sequence[bytes]", ids), b"-")
    if kinds == {str}:
        text = cast("Sequence[str]", ids)
        # str.isdigit and int() accept digits beyond ASCII that split_id refuses: only ASCII ids qualify.
        if not "".join(text).isascii():
            return None
        return _one_partition(uid, partitions, text, "-")
    return None


def _one_partition(
    uid: int, partitions: int, raw: Sequence[AnyStr], dash: AnyStr
) -> dict[int, list[int]] | None:
    first = raw[0]
    parsed = split_id(first)
    if parsed is None or parsed[0] != uid or parsed[1] >= partitions:
        return None
    head = first[: first.rindex(dash) + 1]
    cut = len(head)
    if not (all(map(type(first).startswith, raw, repeat(head))) and max(map(len, raw)) <= MAX_ID_BYTES):
        return None
    tails = list(map(itemgetter(slice(cut, None)), raw))
    if not all(map(type(first).isdigit, tails)):
        return None
    return {parsed[1]: list(dict.fromkeys(map(int, tails)))}
