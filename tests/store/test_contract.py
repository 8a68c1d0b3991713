"""The storage contract (`querator.store.base`): what the engine relies on, run against every backend.

Each test talks to the backend only through the `Store`, `KeySpace` and `WriteSet` Protocols, so a new
backend that passes this suite can carry the key-value engine.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from querator.config import Config
from querator.store import KeySpace, Store, open_store
from tests.support import run


@pytest.fixture
def store(backend: str, tmp_path: Path) -> Iterator[Store]:
    opened = open_store(Config(backend=backend, data=str(tmp_path / "data")))
    yield opened
    run(opened.close())


def _write(store: Store, space: KeySpace, puts: dict[bytes, bytes], deletes: tuple[bytes, ...] = ()) -> None:
    ws = store.new_write_set()
    for key, value in puts.items():
        ws.put(space, key, value)
    for key in deletes:
        ws.delete(space, key)
    store.write(ws)


def test_a_write_is_visible_at_once_and_not_before(store: Store) -> None:
    space = store.space("p")
    ws = store.new_write_set()
    ws.put(space, b"a", b"1")
    assert space.get(b"a") is None  # a write set is nothing until written
    store.write(ws)
    assert space.get(b"a") == b"1"


def test_one_write_set_spans_key_spaces_and_counts_its_operations(store: Store) -> None:
    one, two = store.space("one"), store.space("two")
    _write(store, one, {b"gone": b"x"})
    ws = store.new_write_set()
    ws.put(one, b"k", b"1")
    ws.put(two, b"k", b"2")
    ws.delete(one, b"gone")
    ws.put_many(two, [b"m", b"n"], [b"3", b"4"])
    ws.delete_many(two, [b"n"])
    assert len(ws) == 6
    store.write(ws)
    assert (one.get(b"k"), two.get(b"k"), one.get(b"gone")) == (b"1", b"2", None)
    assert (two.get(b"m"), two.get(b"n")) == (b"3", None)


def test_later_operations_in_one_write_set_win(store: Store) -> None:
    space = store.space("p")
    ws = store.new_write_set()
    ws.put(space, b"a", b"1")
    ws.delete(space, b"a")
    ws.put(space, b"b", b"1")
    ws.put(space, b"b", b"2")
    store.write(ws)
    assert (space.get(b"a"), space.get(b"b")) == (None, b"2")


def test_put_many_needs_as_many_values_as_keys(store: Store) -> None:
    with pytest.raises(ValueError):
        store.new_write_set().put_many(store.space("p"), [b"a", b"b"], [b"1"])


def test_key_spaces_are_isolated(store: Store) -> None:
    """Neighbouring spaces (created one after the other) never see each other's keys, at either edge."""
    first, second = store.space("first"), store.space("second")
    _write(store, first, {b"\x00": b"low", b"\xff" * 9: b"high"})
    _write(store, second, {b"\x00": b"other"})
    assert list(first.scan(b"", b"\xff" * 10)) == [(b"\x00", b"low"), (b"\xff" * 9, b"high")]
    assert list(second.scan(b"", b"\xff" * 10)) == [(b"\x00", b"other")]
    assert second.last_key(b"", b"\xff" * 10) == b"\x00"
    assert first.get(b"\x00") == b"low"


def test_scan_is_ordered_from_start_inclusive_to_end_exclusive(store: Store) -> None:
    space = store.space("p")
    _write(store, space, {b"r\x03": b"3", b"r\x01": b"1", b"r\x02": b"2", b"s\x00": b"s", b"q\xff": b"q"})
    assert list(space.scan(b"r", b"s")) == [(b"r\x01", b"1"), (b"r\x02", b"2"), (b"r\x03", b"3")]
    assert list(space.scan(b"r\x02", b"r\x03")) == [(b"r\x02", b"2")]
    assert list(space.scan(b"t", b"u")) == []


def test_scan_is_lazy(store: Store) -> None:
    """Callers take a few keys from the head of a large range and stop."""
    space = store.space("p")
    _write(store, space, {b"r%05d" % n: b"v" for n in range(2000)})
    scan = space.scan(b"r", b"s")
    assert next(scan) == (b"r00000", b"v")
    assert isinstance(scan, Iterator)


def test_head_returns_at_most_limit_pairs_inside_the_range(store: Store) -> None:
    space = store.space("p")
    _write(store, space, {b"r\x01": b"1", b"r\x02": b"2", b"r\x03": b"3", b"s\x00": b"s"})
    assert space.head(b"r", b"s", 2) == ([b"r\x01", b"r\x02"], [b"1", b"2"])
    assert space.head(b"r\x02", b"s", 10) == ([b"r\x02", b"r\x03"], [b"2", b"3"])
    assert space.head(b"t", b"u", 5) == ([], [])


def test_last_key_is_the_highest_in_the_range(store: Store) -> None:
    space = store.space("p")
    _write(store, space, {b"l\x01": b"", b"l\x09": b"", b"r\x05": b""})
    assert space.last_key(b"l", b"m") == b"l\x09"
    assert space.last_key(b"r", b"s") == b"r\x05"
    assert space.last_key(b"s", b"t") is None


def test_space_is_created_once_and_listed(store: Store) -> None:
    space = store.space("p")
    _write(store, space, {b"a": b"1"})
    again = store.space("p")
    assert again.name == "p"
    assert again.get(b"a") == b"1"
    assert sorted(store.space_names()) == ["p"]


def test_drop_space_removes_its_keys_and_its_name(store: Store) -> None:
    keep, drop = store.space("keep"), store.space("drop")
    _write(store, keep, {b"a": b"1"})
    _write(store, drop, {b"a": b"2", b"b": b"3"})
    store.drop_space("drop")
    store.drop_space("never-made")  # dropping a missing space is nothing
    assert store.space_names() == ["keep"]
    assert keep.get(b"a") == b"1"
    assert list(store.space("drop").scan(b"", b"\xff")) == []


def test_after_sync_calls_back_once_with_no_error(store: Store) -> None:
    async def main() -> list[BaseException | None]:
        space = store.space("p")
        _write(store, space, {b"a": b"1"})
        calls: list[BaseException | None] = []
        synced = asyncio.get_running_loop().create_future()

        def callback(error: BaseException | None) -> None:
            calls.append(error)
            synced.set_result(None)

        store.after_sync(callback)
        await asyncio.wait_for(synced, 5)
        await asyncio.sleep(0.01)
        return calls

    assert run(main()) == [None]


def test_only_durable_backends_say_so(store: Store, backend: str) -> None:
    assert store.durable is (backend == "rocksdb")
