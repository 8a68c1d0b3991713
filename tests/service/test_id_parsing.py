"""Id parsing for QCOMPLETE / QRETRY / QEXTEND / QREMOVE: the one-partition fast path must agree with the
general parser on every input it accepts, bytes (RESP) and str (in-process callers) alike, and hand
everything else to it."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from querator.errors import CommandError
from querator.ids import ids_by_partition, ids_of_one_partition, prefixed_decimals
from querator.model import MAX_ID_BYTES

UID, PARTITIONS = 7, 3  # the queue the ids are parsed for

# Pieces that make well-formed ids of this queue, of an earlier queue, of a missing partition, and
# malformed ones (signs, spaces, empty parts, non-ASCII digits, extra dashes).
_uid = st.sampled_from(["7", "8", "07", "", "x", "-7", "7 "])
_partition = st.sampled_from(["0", "1", "2", "3", "00", "", "+1"])
_seq = st.one_of(
    st.integers(min_value=0, max_value=10**12).map(str),
    st.sampled_from(["", "1-2", " 5", "\u0663", "9" * (MAX_ID_BYTES + 1)]),
)
_text_id = st.builds(lambda u, p, s: f"{u}-{p}-{s}", _uid, _partition, _seq)
_id = _text_id.map(str.encode)


def _general(ids: list[Any]) -> dict[int, list[int]] | str:
    try:
        return ids_by_partition(UID, PARTITIONS, ids)
    except CommandError as exc:
        return str(exc)


@given(st.one_of(st.lists(_id, min_size=1, max_size=30), st.lists(_text_id, min_size=1, max_size=30)))
def test_fast_path_agrees_with_the_general_parser(ids: list[Any]) -> None:
    fast = ids_of_one_partition(UID, PARTITIONS, ids)
    if fast is not None:
        assert fast == _general(ids)


@given(st.integers(0, 2), st.lists(st.integers(0, 10**9), min_size=1, max_size=200), st.booleans())
def test_fast_path_takes_one_partitions_ids(partition: int, seqs: list[int], as_text: bool) -> None:
    ids: list[Any] = [f"7-{partition}-{seq}" for seq in seqs]
    if not as_text:
        ids = [raw.encode() for raw in ids]
    expected = {partition: list(dict.fromkeys(seqs))}
    assert ids_of_one_partition(UID, PARTITIONS, ids) == expected
    assert _general(ids) == expected


@pytest.mark.parametrize(
    "ids",
    [
        [b"7-0-1", b"7-1-2"],  # two partitions
        [b"8-0-1", b"8-0-2"],  # an earlier queue of this name
        [b"7-0-1", b"7-0-x"],  # a malformed id after a good one
        [b"7-0-1", "7-0-2"],  # str and bytes mixed (in-process callers)
        ["7-0-1", "7-0-\u0663"],  # a non-ASCII digit, which int() would read
        ["7-0-1", "7-0-1 "],
        [b"7-0-1", b"7-0-"],
        [b"7-3-1"],  # no such partition
    ],
)
def test_anything_unusual_goes_to_the_general_parser(ids: list[Any]) -> None:
    assert ids_of_one_partition(UID, PARTITIONS, ids) is None


def test_the_general_parser_names_the_first_malformed_id() -> None:
    assert _general([b"7-0-1", b"7-0-x", b"bad"]) == "invalid id '7-0-x'"
    assert _general([b"8-0-1", b"7-1-2", b"7-1-2"]) == {1: [2]}


def test_rocksdb_put_many_refuses_mismatched_lists(tmp_path: Any) -> None:
    from querator.store.rocksdb import RocksWriteSet

    space: Any = SimpleNamespace(prefix=b"\0" * 8)
    with pytest.raises(ValueError):
        RocksWriteSet().put_many(space, [b"a", b"b"], [b"1"])


@given(first=st.integers(1, 10**15), count=st.integers(1, 1000))
def test_prefixed_decimals_match_formatting_each_number(first: int, count: int) -> None:
    """The ids of a produced batch, built from shared heads and a table of two-digit tails, are exactly
    prefix + str(seq) for each seq, whatever the batch crosses (hundreds, thousands, a new digit)."""
    assert prefixed_decimals("7-3-", first, count) == [f"7-3-{n}" for n in range(first, first + count)]
