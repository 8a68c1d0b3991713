"""The bulk helpers of the lease path give the same answers as their one-at-a-time forms."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from querator.records import Record, lease_many, lease_view
from querator.store.memory import MemoryStore
from querator.store.rocksdb import RocksStore

_records = st.builds(
    Record,
    st.integers(0, 1000),
    st.integers(0, 2**40),
    st.integers(0, 2**40),
    st.integers(0, 2**40),
    st.just(b""),
    st.just(b""),
    st.just(b""),
    st.binary(max_size=40),
)


@given(st.lists(_records, min_size=1, max_size=50), st.integers(0, 2**42))
def test_lease_many_matches_lease_view(records: list[Record], deadline: int) -> None:
    values = [r.encode() for r in records]
    one_by_one = [lease_view(v, deadline) for v in values]
    leased, attempts, payloads = lease_many(values, deadline)  # type: ignore[misc]
    assert leased == [view[0] for view in one_by_one]
    assert attempts == [view[1] for view in one_by_one]
    assert payloads == [view[6] for view in one_by_one]


@pytest.mark.parametrize("label", ["kind", "reference", "encoding"])
def test_lease_many_leaves_labelled_records_to_lease_view(label: str) -> None:
    plain = Record(0, 1, 2, 0, b"", b"", b"", b"p")
    labelled = Record(0, 1, 2, 0, b"", b"", b"", b"p")
    setattr(labelled, label, b"x")
    assert lease_many([plain.encode(), labelled.encode()], 9) is None


@pytest.mark.parametrize("backend", ["memory", "rocksdb"])
def test_head_stops_at_the_limit_and_at_the_end_of_the_range(backend: str, tmp_path: Path) -> None:
    async def main() -> None:
        store = MemoryStore() if backend == "memory" else RocksStore(str(tmp_path / "db"))
        space = store.space("a")
        other = store.space("b")  # the next key space: its keys sort right after this one's
        ws = store.new_write_set()
        ws.put_many(space, [b"r%d" % i for i in range(5)], [b"v%d" % i for i in range(5)])
        ws.put(space, b"s0", b"beyond the range")
        ws.put(other, b"r9", b"another space")
        store.write(ws)
        assert space.head(b"r1", b"s", 2) == ([b"r1", b"r2"], [b"v1", b"v2"])
        assert space.head(b"r3", b"s", 10) == ([b"r3", b"r4"], [b"v3", b"v4"])
        assert space.head(b"r5", b"s", 10) == ([], [])
        assert other.head(b"r", b"s", 10) == ([b"r9"], [b"another space"])
        await store.close()

    asyncio.run(main())
