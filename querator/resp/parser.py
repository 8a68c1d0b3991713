"""Incremental parser for client requests: multibulk (`*2\r\n$4\r\nPING\r\n...`) and inline (`PING\r\n`).

Feed bytes with `feed()`, then call `next_command()` until it returns `NEED_DATA`. The parser keeps Redis's
limits and exact error texts (see `processMultibulkBuffer` / `processInlineBuffer` in Redis's networking.c):
a request that breaks them raises `ProtocolError`, after which the parser must not be used again (the
server replies and closes the connection, as Redis does). Parsing is resumable: a large command arriving
in many chunks is walked once, not re-parsed from its start on every chunk (ADR 0002).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

# Redis's PROTO_INLINE_MAX_SIZE: the longest inline request, and the longest header line.
INLINE_MAX_BYTES: Final = 64 * 1024
# Redis's limits for a client that has not authenticated yet (so an anonymous peer cannot make us buffer).
UNAUTHENTICATED_MAX_MULTIBULK: Final = 10
UNAUTHENTICATED_MAX_BULK: Final = 16384
_INT_MAX: Final = 2**31 - 1
# The fast path (`_complete_small_multibulk`) looks headers up in these tables instead of parsing them. It
# reads at most this much of the buffer per attempt, so its cost does not grow with a deep pipeline behind
# the command, or with an incomplete command (which the exact parser then holds until it is complete).
_FAST_PATH_MAX_BYTES: Final = 16 * 1024
_FAST_PATH_WINDOW: Final = 1024
# The longest table entry is 5 bytes (`*1024`, `$4095`): a header's CRLF is looked for only that far.
_HEADER_SEARCH: Final = 8
_FIND_LOOP_MAX_ARGS: Final = 2
_COUNT_HEADERS: Final = {b"*%d" % n: n for n in range(1, 1025)}
_BULK_HEADERS: Final = {b"$%d" % n: n for n in range(4096)}


class _NeedData:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = _NeedData()


class ProtocolError(Exception):
    """The request breaks the protocol; `str(error)` is the text after `-ERR `."""


@dataclass(slots=True)
class ParserLimits:
    max_bulk_bytes: int = 512 * 1024 * 1024  # Redis's proto-max-bulk-len
    max_query_buffer_bytes: int = 1024 * 1024 * 1024  # Redis's client-query-buffer-limit


class RequestParser:
    """Turns a client's byte stream into commands (lists of bytes arguments)."""

    __slots__ = (
        "_args",
        "_authenticated",
        "_buf",
        "_bulk_len",
        "_limits",
        "_pos",
        "_remaining",
    )

    def __init__(self, limits: ParserLimits | None = None, *, authenticated: bool = True) -> None:
        self._limits = limits or ParserLimits()
        self._authenticated = authenticated
        self._buf = bytearray()
        self._pos = 0
        # State of a multibulk command in progress: the arguments read so far, how many are still to come
        # (-1: no multibulk in progress) and the length of the bulk whose header was read (-1: none).
        self._args: list[bytes] = []
        self._remaining = -1
        self._bulk_len = -1

    @property
    def authenticated(self) -> bool:
        return self._authenticated

    @authenticated.setter
    def authenticated(self, value: bool) -> None:
        self._authenticated = value

    def buffered_bytes(self) -> int:
        """Bytes received but not yet returned as commands."""
        return len(self._buf) - self._pos

    def command_in_progress(self) -> bool:
        """Part of a command has arrived (bytes still buffered, or arguments already taken from them)."""
        return self._remaining >= 0 or len(self._buf) > self._pos

    def feed(self, data: bytes) -> None:
        buf = self._buf
        if self._pos and self._pos >= len(buf) >> 1:
            # Drop consumed bytes once they are at least half the buffer: amortised linear time.
            del buf[: self._pos]
            self._pos = 0
        buf += data
        if len(buf) - self._pos > self._limits.max_query_buffer_bytes:
            raise ProtocolError("query buffer limit reached")

    def next_command(self) -> list[bytes] | _NeedData:
        """The next complete command, or NEED_DATA. Empty requests (blank lines, `*0`) are skipped."""
        if self._remaining < 0:
            if self._pos >= len(self._buf):
                return NEED_DATA
            command = self._complete_small_multibulk()
            if command is not None:
                return command
        while True:
            if self._remaining < 0:
                buf = self._buf
                pos = self._pos
                if pos >= len(buf):
                    return NEED_DATA
                if buf[pos] == 42:  # b"*"
                    started = self._start_multibulk()
                    if started is None:
                        return NEED_DATA
                    if not started:
                        continue  # `*0` or a negative count: an empty request, as Redis skips it
                else:
                    inline = self._parse_inline()
                    if inline is None:
                        return NEED_DATA
                    if not inline:
                        continue
                    return inline
            command = self._continue_multibulk()
            if command is None:
                return NEED_DATA
            return command

    # -- multibulk ------------------------------------------------------------------------------------------

    def _complete_small_multibulk(self) -> list[bytes] | None:
        """The common case in one pass: a complete, small, well-formed multibulk command at the head of the
        buffer, its headers looked up in tables of their canonical forms. Anything else (incomplete, large,
        unusual or invalid) returns None without consuming input, and the exact parser below decides."""
        buf = self._buf
        pos = self._pos
        if buf[pos] != 42:  # b"*"
            return None
        eol = buf.find(b"\r\n", pos, pos + _HEADER_SEARCH)
        if eol < 0:
            return None
        count = _COUNT_HEADERS.get(bytes(buf[pos:eol]))
        if count is None or (count > UNAUTHENTICATED_MAX_MULTIBULK and not self._authenticated):
            return None
        if count <= _FIND_LOOP_MAX_ARGS:
            return self._small_by_find(eol + 2, count)
        return self._small_by_split(eol + 2, count)

    def _small_by_find(self, start: int, count: int) -> list[bytes] | None:
        """Few arguments: walk the headers one by one (cheapest for PING, QLEN q and the like)."""
        buf = self._buf
        end = len(buf)
        max_bulk = self._limits.max_bulk_bytes
        p = start
        args = []
        for _ in range(count):
            eol = buf.find(b"\r\n", p, p + _HEADER_SEARCH)
            if eol < 0:
                return None
            size = _BULK_HEADERS.get(bytes(buf[p:eol]))
            if size is None or size > max_bulk:
                return None
            p = eol + 2
            if p + size + 2 > end:
                return None
            args.append(bytes(buf[p : p + size]))
            p += size + 2
        self._pos = p
        return args

    def _small_by_split(self, start: int, count: int) -> list[bytes] | None:
        """More arguments: one C-level split on CRLF yields every header and payload at once, accepted only
        if each header is canonical and each payload has the declared length (a payload that contains CRLF
        fails that check and goes to the exact parser). A small window is split first, so a deep pipeline
        of small commands is not copied once per command, then at most `_FAST_PATH_MAX_BYTES`."""
        buf = self._buf
        end = len(buf)
        view = memoryview(buf)
        try:
            window = bytes(view[start : min(end, start + _FAST_PATH_WINDOW)])
            parts = window.split(b"\r\n", 2 * count)
            if len(parts) <= 2 * count and start + len(window) < end:
                window = bytes(view[start : min(end, start + _FAST_PATH_MAX_BYTES)])
                parts = window.split(b"\r\n", 2 * count)
        finally:
            view.release()  # a live view would stop the bytearray from growing in feed()
        if len(parts) <= 2 * count:
            return None  # not all of it has arrived
        args = parts[1 : 2 * count : 2]
        # An unknown header maps to None, which equals no length, so the command goes to the exact parser.
        sizes: list[int | None] = list(map(_BULK_HEADERS.get, parts[0 : 2 * count : 2]))
        if sizes != list(map(len, args)) or max(map(len, args)) > self._limits.max_bulk_bytes:
            return None
        self._pos = start + len(window) - len(parts[2 * count])
        return args

    def _start_multibulk(self) -> bool | None:
        """Read `*<count>\\r\\n`. None: need data; False: empty request; True: arguments follow."""
        buf = self._buf
        pos = self._pos
        eol = buf.find(b"\r", pos)
        if eol < 0:
            if len(buf) - pos > INLINE_MAX_BYTES:
                raise ProtocolError("Protocol error: too big mbulk count string")
            return None
        if eol + 1 >= len(buf):
            return None  # the "\n" after "\r" has not arrived yet
        count = _parse_int(buf, pos + 1, eol)
        if count is None or count > _INT_MAX:
            raise ProtocolError("Protocol error: invalid multibulk length")
        if count > UNAUTHENTICATED_MAX_MULTIBULK and not self._authenticated:
            raise ProtocolError("Protocol error: unauthenticated multibulk length")
        self._pos = eol + 2
        if count <= 0:
            return False
        self._remaining = count
        self._args = []
        return True

    def _continue_multibulk(self) -> list[bytes] | None:
        buf = self._buf
        pos = self._pos
        args = self._args
        remaining = self._remaining
        bulk_len = self._bulk_len
        end = len(buf)
        limits = self._limits
        while remaining:
            if bulk_len < 0:
                eol = buf.find(b"\r", pos)
                if eol < 0:
                    if end - pos > INLINE_MAX_BYTES:
                        raise ProtocolError("Protocol error: too big bulk count string")
                    break
                if eol + 1 >= end:
                    break  # the "\n" after "\r" has not arrived yet; Redis waits without a size check
                if buf[pos] != 36:  # b"$"
                    # Redis echoes the raw byte; surrogateescape lets encode_error send it back unchanged.
                    got = bytes(buf[pos : pos + 1]).decode("utf-8", "surrogateescape")
                    raise ProtocolError(f"Protocol error: expected '$', got '{_printable(got)}'")
                parsed = _parse_int(buf, pos + 1, eol)
                if parsed is None or parsed < 0 or parsed > limits.max_bulk_bytes:
                    raise ProtocolError("Protocol error: invalid bulk length")
                bulk_len = parsed
                if bulk_len > UNAUTHENTICATED_MAX_BULK and not self._authenticated:
                    raise ProtocolError("Protocol error: unauthenticated bulk length")
                pos = eol + 2
            # Redis skips the two bytes after the payload without checking them; so do we.
            if end - pos < bulk_len + 2:
                break
            args.append(bytes(buf[pos : pos + bulk_len]))
            pos += bulk_len + 2
            bulk_len = -1
            remaining -= 1
        self._pos = pos
        self._bulk_len = bulk_len
        if remaining:
            self._remaining = remaining
            return None
        self._remaining = -1
        self._args = []
        return args

    # -- inline ---------------------------------------------------------------------------------------------

    def _parse_inline(self) -> list[bytes] | None:
        buf = self._buf
        pos = self._pos
        eol = buf.find(b"\n", pos)
        if eol < 0:
            if len(buf) - pos > INLINE_MAX_BYTES:
                raise ProtocolError("Protocol error: too big inline request")
            return None
        line_end = eol - 1 if eol > pos and buf[eol - 1] == 13 else eol
        line = bytes(buf[pos:line_end])
        self._pos = eol + 1
        args = split_inline_args(line)
        if args is None:
            raise ProtocolError("Protocol error: unbalanced quotes in request")
        return args


def _parse_int(buf: bytearray, start: int, end: int) -> int | None:
    """Redis's string2ll: optional '-', digits, no leading zeros or '+', at most 20 characters."""
    text = buf[start:end]
    if not text or len(text) > 20:
        return None
    digits = text[1:] if text[0] == 45 else text  # b"-"
    if not digits.isdigit() or (digits[0] == 48 and len(text) > 1):  # b"0"; rejects "-0" as string2ll does
        return None
    value = int(text)
    if not -(2**63) <= value < 2**63:
        return None
    return value


def _printable(char: str) -> str:
    # Redis replaces newlines in error texts with spaces so the reply stays one line.
    return " " if char in "\r\n" else char


_ESCAPES: Final = {ord("n"): 10, ord("r"): 13, ord("t"): 9, ord("b"): 8, ord("a"): 7}
_HEX: Final = frozenset(b"0123456789abcdefABCDEF")
_SPACE: Final = frozenset(b" \n\r\t\v\f\0")
# Inside an unquoted argument only these end it (sdssplitargs's switch); \v and \f are kept in the argument.
_TOKEN_END: Final = frozenset(b" \n\r\t")


def split_inline_args(line: bytes) -> list[bytes] | None:
    """Split an inline request the way redis-cli and Redis do (`sdssplitargs`); None on unbalanced quotes.

    Arguments are separated by whitespace; "double quotes" understand \\xHH, \\n, \\r, \\t, \\b, \\a and
    escaped quotes; 'single quotes' only \\'. A closing quote must be followed by whitespace or the end.
    """
    # sdssplitargs reads a C string: a NUL byte ends the line.
    line = line.partition(b"\0")[0]
    if b'"' not in line and b"'" not in line and b"\v" not in line and b"\f" not in line:
        return line.split()
    args: list[bytes] = []
    i = 0
    n = len(line)
    while True:
        while i < n and line[i] in _SPACE:
            i += 1
        if i >= n:
            return args
        current = bytearray()
        in_double = in_single = False
        while True:
            if in_double:
                if i >= n:
                    return None
                c = line[i]
                if (
                    c == 92  # backslash
                    and i + 3 < n
                    and line[i + 1] == 120  # x
                    and line[i + 2] in _HEX
                    and line[i + 3] in _HEX
                ):
                    current.append(int(line[i + 2 : i + 4], 16))
                    i += 3
                elif c == 92 and i + 1 < n:
                    i += 1
                    current.append(_ESCAPES.get(line[i], line[i]))
                elif c == 34:  # closing "
                    if i + 1 < n and line[i + 1] not in _SPACE:
                        return None
                    in_double = False
                    i += 1
                    break
                else:
                    current.append(c)
            elif in_single:
                if i >= n:
                    return None
                c = line[i]
                if c == 92 and i + 1 < n and line[i + 1] == 39:
                    i += 1
                    current.append(39)
                elif c == 39:
                    if i + 1 < n and line[i + 1] not in _SPACE:
                        return None
                    in_single = False
                    i += 1
                    break
                else:
                    current.append(c)
            else:
                if i >= n:
                    break
                c = line[i]
                if c in _TOKEN_END:
                    break
                if c == 34:
                    in_double = True
                elif c == 39:
                    in_single = True
                else:
                    current.append(c)
            i += 1
        args.append(bytes(current))
