"""Named homes for the data path's speed tricks, so the code that uses them reads plainly.

Each helper says what it replaces and cites the measurement that made it worth it; a trick that stops
paying off is changed here, once.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator


def consume(calls: Iterator[object]) -> None:
    """Run a lazy `map` of calls to its end inside C: no Python bytecode per item. Adding a 100-item
    produce's keys to a RocksDB batch this way is part of what commit 731bffc measured ("one C-level
    pass each"). A zero-length deque keeps nothing."""
    deque(calls, maxlen=0)


def first_byte_is(key: bytes, byte: int) -> bool:
    """`key[:1] == prefix` for a one-byte prefix given as an int: `key[0] == 114` skips the slice's new
    bytes object (timeit on this machine: 25 ns against 42 ns for the slice, 57 ns for startswith)."""
    return key[0] == byte
