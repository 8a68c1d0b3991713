"""The slow log: commands whose handler took at least `slowlog-log-slower-than` microseconds.

Kept as Redis keeps it, so `SLOWLOG GET` replies in Redis's shape: newest first, at most `slowlog-max-len`
entries, at most 32 arguments per entry and 128 bytes per argument (the rest summarised).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

_MAX_ARGS = 32
_MAX_ARG_BYTES = 128


@dataclass(slots=True, frozen=True)
class SlowEntry:
    id: int
    at: int  # unix time, seconds
    duration_us: int
    args: list[bytes]
    addr: str
    name: str

    def reply(self) -> list[object]:
        return [self.id, self.at, self.duration_us, self.args, self.addr.encode(), self.name.encode()]


class SlowLog:
    __slots__ = ("_entries", "_next_id", "max_len", "threshold_ns")

    def __init__(self, slower_than_us: int, max_len: int) -> None:
        # A negative threshold turns the log off (as in Redis): no duration reaches it.
        self.threshold_ns = slower_than_us * 1000 if slower_than_us >= 0 else 1 << 62
        self.max_len = max_len
        self._entries: deque[SlowEntry] = deque(maxlen=max(max_len, 0))
        self._next_id = 0

    def add(self, args: list[bytes], duration_ns: int, addr: str, name: str) -> None:
        if self.max_len <= 0:
            return
        self._entries.appendleft(
            SlowEntry(self._next_id, int(time.time()), duration_ns // 1000, _shown(args), addr, name)
        )
        self._next_id += 1

    def get(self, count: int) -> list[SlowEntry]:
        entries = list(self._entries)
        return entries if count < 0 else entries[:count]

    def __len__(self) -> int:
        return len(self._entries)

    def reset(self) -> None:
        self._entries.clear()


def _shown(args: list[bytes]) -> list[bytes]:
    """Redis's summary: past 32 arguments the last shown says how many more; a long one says how many
    more bytes it had."""
    count = min(len(args), _MAX_ARGS)
    shown = []
    for i in range(count):
        if i == _MAX_ARGS - 1 and len(args) > _MAX_ARGS:
            shown.append(b"... (%d more arguments)" % (len(args) - _MAX_ARGS + 1))
            break
        arg = args[i]
        if len(arg) > _MAX_ARG_BYTES:
            arg = arg[:_MAX_ARG_BYTES] + b"... (%d more bytes)" % (len(arg) - _MAX_ARG_BYTES)
        shown.append(arg)
    return shown
