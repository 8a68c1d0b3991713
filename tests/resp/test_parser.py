"""Table-driven tests for `RequestParser`: every input is fed whole, split in two at every offset, and one
byte at a time, and must give the same commands (or the same Redis error text) each way.

Expected error texts are Redis's, from `processMultibulkBuffer` / `processInlineBuffer` in networking.c.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from querator.resp import NEED_DATA, ParserLimits, ProtocolError, RequestParser
from querator.resp.parser import INLINE_MAX_BYTES, UNAUTHENTICATED_MAX_BULK, UNAUTHENTICATED_MAX_MULTIBULK

# Inputs longer than this are split at a sample of offsets instead of every one (see `split_points`).
_EXHAUSTIVE_SPLIT_MAX = 4096


def mb(*args: bytes) -> bytes:
    """A multibulk request, written out independently of the encoder under test."""
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%b\r\n" % (len(a), a) for a in args)


@dataclass(frozen=True)
class Valid:
    id: str
    data: bytes
    commands: list[list[bytes]]
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Invalid:
    id: str
    data: bytes
    error: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    # How many bytes must have arrived before the error is detectable (default: all of `data`). Any
    # shorter prefix must give NEED_DATA, as Redis waits for the rest of the line before judging it.
    trigger: int | None = None


ALL_BYTES = bytes(range(256))
BIG = b"x" * 1500

VALID: list[Valid] = [
    Valid("multibulk-ping", b"*1\r\n$4\r\nPING\r\n", [[b"PING"]]),
    Valid("multibulk-set", b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nvalue\r\n", [[b"SET", b"k", b"value"]]),
    Valid(
        "multibulk-pipeline",
        mb(b"SET", b"k", b"v") + mb(b"GET", b"k") + mb(b"PING"),
        [[b"SET", b"k", b"v"], [b"GET", b"k"], [b"PING"]],
    ),
    Valid("binary-crlf-inside", b"*2\r\n$4\r\nECHO\r\n$6\r\na\r\n\r\nb\r\n", [[b"ECHO", b"a\r\n\r\nb"]]),
    Valid("binary-all-bytes", mb(b"ECHO", ALL_BYTES), [[b"ECHO", ALL_BYTES]]),
    Valid(
        "binary-looks-like-resp", mb(b"ECHO", b"*1\r\n$4\r\nPING\r\n"), [[b"ECHO", b"*1\r\n$4\r\nPING\r\n"]]
    ),
    Valid("binary-only-crlf", mb(b"\r\n", b"\r", b"\n"), [[b"\r\n", b"\r", b"\n"]]),
    Valid("empty-bulk", b"*2\r\n$4\r\nECHO\r\n$0\r\n\r\n", [[b"ECHO", b""]]),
    Valid("only-empty-bulks", mb(b"", b""), [[b"", b""]]),
    Valid("big-bulk", mb(b"SET", b"k", BIG), [[b"SET", b"k", BIG]]),
    Valid("multibulk-zero-skipped", b"*0\r\n", []),
    Valid("multibulk-minus-one-skipped", b"*-1\r\n", []),
    Valid("multibulk-negative-skipped", b"*-5\r\n", []),
    Valid(
        "empty-requests-between-commands",
        b"*0\r\n" + mb(b"PING") + b"*-1\r\n*0\r\n" + mb(b"ECHO", b"x") + b"*0\r\n",
        [[b"PING"], [b"ECHO", b"x"]],
    ),
    # Redis skips the two bytes after a payload without looking at them.
    Valid(
        "payload-terminator-not-checked",
        b"*1\r\n$4\r\nPINGxy" + mb(b"ECHO", b"a"),
        [[b"PING"], [b"ECHO", b"a"]],
    ),
    Valid("inline-ping-crlf", b"PING\r\n", [[b"PING"]]),
    Valid("inline-ping-lf", b"PING\n", [[b"PING"]]),
    Valid("inline-args", b"SET key value\r\n", [[b"SET", b"key", b"value"]]),
    Valid("inline-extra-spaces-tabs", b"  SET \t key\t\tvalue  \r\n", [[b"SET", b"key", b"value"]]),
    # Only the \r just before \n ends the line; a lone \r inside it separates arguments.
    Valid("inline-lone-cr", b"ECHO a\rb\n", [[b"ECHO", b"a", b"b"]]),
    Valid("inline-pipeline", b"PING\r\nECHO hi\nPING\r\n", [[b"PING"], [b"ECHO", b"hi"], [b"PING"]]),
    Valid("blank-lines-skipped", b"\r\n\n   \r\n\t\nPING\r\n\r\n", [[b"PING"]]),
    Valid("only-blank-lines", b"\r\n\n\r\n", []),
    Valid("inline-double-quotes", b'SET k "hello world"\r\n', [[b"SET", b"k", b"hello world"]]),
    Valid("inline-hex-and-newline-escapes", b'ECHO "a\\x41\\n"\r\n', [[b"ECHO", b"aA\n"]]),
    Valid("inline-single-quote-escape", b"ECHO 'it\\'s'\r\n", [[b"ECHO", b"it's"]]),
    Valid("inline-empty-quoted-arg", b'ECHO ""\r\n', [[b"ECHO", b""]]),
    Valid("inline-quoted-crlf-escapes", b'SET k "a\\r\\nb"\n', [[b"SET", b"k", b"a\r\nb"]]),
    Valid("inline-starting-with-dollar", b"$4\r\n", [[b"$4"]]),
    Valid(
        "mixed-inline-and-multibulk",
        b"PING\r\n" + mb(b"ECHO", b"hi") + b"ECHO 'x y'\n" + mb(b"PING") + b"\r\nECHO z\r\n",
        [[b"PING"], [b"ECHO", b"hi"], [b"ECHO", b"x y"], [b"PING"], [b"ECHO", b"z"]],
    ),
    Valid(
        "unauthenticated-at-limits",
        mb(*([b"x"] * UNAUTHENTICATED_MAX_MULTIBULK)) + mb(b"AUTH", b"p" * UNAUTHENTICATED_MAX_BULK),
        [[b"x"] * UNAUTHENTICATED_MAX_MULTIBULK, [b"AUTH", b"p" * UNAUTHENTICATED_MAX_BULK]],
        {"authenticated": False},
    ),
    Valid(
        "bulk-at-max-bulk-bytes",
        mb(b"ECHO", b"12345"),
        [[b"ECHO", b"12345"]],
        {"limits": ParserLimits(max_bulk_bytes=5)},
    ),
]

PING_PIPELINE = mb(b"PING") + b"ECHO hi\r\n"
PING_PIPELINE_COMMANDS = [[b"PING"], [b"ECHO", b"hi"]]

INVALID: list[Invalid] = [
    Invalid("mbulk-not-a-number", b"*abc\r\n", "Protocol error: invalid multibulk length"),
    Invalid("mbulk-above-int-max", b"*3000000000\r\n", "Protocol error: invalid multibulk length"),
    Invalid("mbulk-int-max-plus-one", b"*2147483648\r\n", "Protocol error: invalid multibulk length"),
    Invalid(
        "mbulk-overflows-long-long", b"*9223372036854775808\r\n", "Protocol error: invalid multibulk length"
    ),
    Invalid("mbulk-leading-zero", b"*01\r\n", "Protocol error: invalid multibulk length"),
    Invalid("mbulk-minus-zero", b"*-0\r\n", "Protocol error: invalid multibulk length"),
    Invalid("mbulk-plus-sign", b"*+1\r\n", "Protocol error: invalid multibulk length"),
    Invalid("mbulk-empty", b"*\r\n", "Protocol error: invalid multibulk length"),
    Invalid("mbulk-only-minus", b"*-\r\n", "Protocol error: invalid multibulk length"),
    Invalid("mbulk-space", b"* 1\r\n", "Protocol error: invalid multibulk length"),
    Invalid("mbulk-trailing-space", b"*1 \r\n", "Protocol error: invalid multibulk length"),
    Invalid("mbulk-21-chars", b"*" + b"1" * 21 + b"\r\n", "Protocol error: invalid multibulk length"),
    Invalid("expected-dollar", b"*1\r\nx\r\n", "Protocol error: expected '$', got 'x'"),
    Invalid("expected-dollar-colon", b"*1\r\n:1\r\n", "Protocol error: expected '$', got ':'"),
    # Redis replaces \r and \n in error texts with spaces.
    Invalid("expected-dollar-empty-line", b"*1\r\n\r\n", "Protocol error: expected '$', got ' '"),
    Invalid(
        "expected-dollar-second-arg",
        b"*2\r\n$4\r\nECHO\r\nhi\r\n",
        "Protocol error: expected '$', got 'h'",
    ),
    Invalid("bulk-negative", b"*1\r\n$-5\r\n", "Protocol error: invalid bulk length"),
    Invalid("bulk-minus-one", b"*1\r\n$-1\r\n", "Protocol error: invalid bulk length"),
    Invalid("bulk-minus-zero", b"*1\r\n$-0\r\n", "Protocol error: invalid bulk length"),
    Invalid("bulk-not-a-number", b"*1\r\n$abc\r\n", "Protocol error: invalid bulk length"),
    Invalid("bulk-empty", b"*1\r\n$\r\n", "Protocol error: invalid bulk length"),
    Invalid("bulk-plus-sign", b"*1\r\n$+1\r\n", "Protocol error: invalid bulk length"),
    Invalid("bulk-leading-zero", b"*1\r\n$01\r\n", "Protocol error: invalid bulk length"),
    Invalid(
        "bulk-above-configured-max",
        b"*1\r\n$6\r\n",
        "Protocol error: invalid bulk length",
        {"limits": ParserLimits(max_bulk_bytes=5)},
    ),
    # Above the default 512 MiB proto-max-bulk-len: rejected from the header alone, no payload needed.
    Invalid("bulk-2gib-default-limits", b"*1\r\n$2147483648\r\n", "Protocol error: invalid bulk length"),
    Invalid("bulk-512mib-plus-one", b"*1\r\n$536870913\r\n", "Protocol error: invalid bulk length"),
    Invalid(
        "bulk-overflows-long-long",
        b"*1\r\n$99999999999999999999\r\n",
        "Protocol error: invalid bulk length",
    ),
    Invalid(
        "inline-too-big",
        b"A" * (INLINE_MAX_BYTES + 1),
        "Protocol error: too big inline request",
    ),
    Invalid(
        "mbulk-count-too-big",
        b"*" + b"1" * 70000,
        "Protocol error: too big mbulk count string",
        trigger=INLINE_MAX_BYTES + 1,
    ),
    Invalid(
        "bulk-count-too-big",
        b"*1\r\n$" + b"1" * 70000,
        "Protocol error: too big bulk count string",
        trigger=4 + INLINE_MAX_BYTES + 1,
    ),
    # The '$' is only checked once the whole line is there, so a long line without \r is "too big" first.
    Invalid(
        "bulk-header-line-too-big",
        b"*1\r\n" + b"x" * 70000,
        "Protocol error: too big bulk count string",
        trigger=4 + INLINE_MAX_BYTES + 1,
    ),
    Invalid("unbalanced-double-quote", b'"unbalanced\r\n', "Protocol error: unbalanced quotes in request"),
    Invalid("unbalanced-single-quote", b"'x\r\n", "Protocol error: unbalanced quotes in request"),
    Invalid("closing-quote-then-text", b'"a"b\r\n', "Protocol error: unbalanced quotes in request"),
    Invalid(
        "closing-single-quote-then-text", b"SET k 'a'b\n", "Protocol error: unbalanced quotes in request"
    ),
    Invalid("escaped-closing-quote", b'ECHO "a\\"\r\n', "Protocol error: unbalanced quotes in request"),
    Invalid(
        "unauthenticated-multibulk",
        b"*11\r\n",
        "Protocol error: unauthenticated multibulk length",
        {"authenticated": False},
    ),
    Invalid(
        "unauthenticated-bulk",
        b"*1\r\n$16385\r\n",
        "Protocol error: unauthenticated bulk length",
        {"authenticated": False},
    ),
    # An invalid length is reported as invalid, even to an unauthenticated client.
    Invalid(
        "unauthenticated-invalid-mbulk-wins",
        b"*3000000000\r\n",
        "Protocol error: invalid multibulk length",
        {"authenticated": False},
    ),
    Invalid(
        "unauthenticated-invalid-bulk-wins",
        b"*1\r\n$-5\r\n",
        "Protocol error: invalid bulk length",
        {"authenticated": False},
    ),
]


def split_points(length: int, trigger: int) -> list[int]:
    """Every offset for short inputs; for long ones a stride plus the offsets around each edge."""
    if length <= _EXHAUSTIVE_SPLIT_MAX:
        return list(range(length + 1))
    points = set(range(0, length + 1, 997))
    for edge in (0, length, trigger, INLINE_MAX_BYTES):
        points.update(range(max(0, edge - 8), min(length, edge + 8) + 1))
    return sorted(points)


def chunkings(data: bytes, trigger: int) -> Iterator[tuple[str, list[bytes]]]:
    yield "whole", [data]
    for offset in split_points(len(data), trigger):
        yield f"split@{offset}", [data[:offset], data[offset:]]
    yield "bytewise", [data[i : i + 1] for i in range(len(data))]


def drain(parser: RequestParser, chunks: Iterable[bytes]) -> list[list[bytes]]:
    """Feed each chunk and take every command it completes; ends on NEED_DATA."""
    commands: list[list[bytes]] = []
    for chunk in chunks:
        parser.feed(chunk)
        while (command := parser.next_command()) is not NEED_DATA:
            assert isinstance(command, list)
            commands.append(command)
    return commands


def drain_until_error(parser: RequestParser, chunks: Iterable[bytes]) -> tuple[list[list[bytes]], str]:
    commands: list[list[bytes]] = []
    try:
        for chunk in chunks:
            parser.feed(chunk)
            while (command := parser.next_command()) is not NEED_DATA:
                assert isinstance(command, list)
                commands.append(command)
    except ProtocolError as exc:
        return commands, str(exc)
    pytest.fail(f"no ProtocolError; got {len(commands)} commands")


def assert_next_command_raises(parser: RequestParser, text: str) -> None:
    with pytest.raises(ProtocolError) as exc_info:
        parser.next_command()
    assert str(exc_info.value) == text


# -- valid inputs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", VALID, ids=lambda c: c.id)
def test_valid_input_whole_split_and_bytewise(case: Valid) -> None:
    for how, chunks in chunkings(case.data, len(case.data)):
        parser = RequestParser(**case.kwargs)
        assert drain(parser, chunks) == case.commands, how
        assert parser.next_command() is NEED_DATA, how
        assert parser.buffered_bytes() == 0, how


@pytest.mark.parametrize("case", VALID, ids=lambda c: c.id)
def test_valid_input_after_a_pipeline(case: Valid) -> None:
    """The same inputs parse the same after other commands on the connection."""
    data = PING_PIPELINE + case.data + PING_PIPELINE
    expected = PING_PIPELINE_COMMANDS + case.commands + PING_PIPELINE_COMMANDS
    for how, chunks in chunkings(data, len(data)):
        parser = RequestParser(**case.kwargs)
        assert drain(parser, chunks) == expected, how
        assert parser.next_command() is NEED_DATA, how


def test_table_inputs_all_in_one_pipeline() -> None:
    cases = [c for c in VALID if not c.kwargs]
    data = b"".join(c.data for c in cases)
    expected = [command for c in cases for command in c.commands]
    assert drain(RequestParser(), [data]) == expected
    assert drain(RequestParser(), [data[i : i + 7] for i in range(0, len(data), 7)]) == expected


def test_incomplete_command_needs_data_until_last_byte() -> None:
    data = mb(b"SET", b"key", b"a\r\nvalue")
    parser = RequestParser()
    for i in range(len(data) - 1):
        parser.feed(data[i : i + 1])
        assert parser.next_command() is NEED_DATA
    parser.feed(data[-1:])
    assert parser.next_command() == [b"SET", b"key", b"a\r\nvalue"]
    assert parser.next_command() is NEED_DATA


def test_next_command_returns_one_command_per_call() -> None:
    parser = RequestParser()
    parser.feed(mb(b"A") + b"B\r\n" + mb(b"C"))
    assert parser.next_command() == [b"A"]
    assert parser.buffered_bytes() == len(b"B\r\n" + mb(b"C"))
    assert parser.next_command() == [b"B"]
    assert parser.next_command() == [b"C"]
    assert parser.next_command() is NEED_DATA
    assert parser.next_command() is NEED_DATA


def test_mbulk_count_int_max_is_accepted() -> None:
    parser = RequestParser()
    parser.feed(b"*2147483647\r\n$4\r\nPING\r\n")
    assert parser.next_command() is NEED_DATA


def test_long_inline_line_arriving_whole_is_accepted() -> None:
    # Redis only limits an inline request while its newline is missing.
    arg = b"a" * (INLINE_MAX_BYTES + 100)
    parser = RequestParser()
    parser.feed(b"ECHO " + arg + b"\r\n")
    assert parser.next_command() == [b"ECHO", arg]


def test_inline_at_limit_without_newline_waits() -> None:
    parser = RequestParser()
    parser.feed(b"A" * INLINE_MAX_BYTES)
    assert parser.next_command() is NEED_DATA
    parser.feed(b"\r\n")
    assert parser.next_command() == [b"A" * INLINE_MAX_BYTES]


def test_mbulk_count_string_at_limit_waits() -> None:
    parser = RequestParser()
    parser.feed(b"*" + b"1" * (INLINE_MAX_BYTES - 1))
    assert parser.next_command() is NEED_DATA
    parser.feed(b"1")
    assert_next_command_raises(parser, "Protocol error: too big mbulk count string")


def test_long_mbulk_count_arriving_whole_is_invalid_not_too_big() -> None:
    parser = RequestParser()
    parser.feed(b"*" + b"1" * 70000 + b"\r\n")
    assert_next_command_raises(parser, "Protocol error: invalid multibulk length")


def test_long_bulk_header_with_late_newline_is_invalid_bulk_length() -> None:
    # Redis waits for the \n after the \r without a size check, then rejects the length.
    parser = RequestParser()
    parser.feed(b"*1\r\n$" + b"1" * (INLINE_MAX_BYTES + 10) + b"\r")
    assert parser.next_command() is NEED_DATA
    parser.feed(b"\n")
    assert_next_command_raises(parser, "Protocol error: invalid bulk length")


def test_authenticating_lifts_unauthenticated_limits() -> None:
    parser = RequestParser(authenticated=False)
    assert parser.authenticated is False
    parser.authenticated = True
    assert parser.authenticated is True
    big = b"v" * (UNAUTHENTICATED_MAX_BULK + 1)
    args = [b"x"] * (UNAUTHENTICATED_MAX_MULTIBULK + 1)
    parser.feed(mb(b"SET", b"k", big) + mb(*args))
    assert parser.next_command() == [b"SET", b"k", big]
    assert parser.next_command() == args


def test_unauthenticated_limits_do_not_apply_to_inline() -> None:
    # Redis's unauthenticated limits are multibulk header checks only.
    parser = RequestParser(authenticated=False)
    args = [b"a"] * (UNAUTHENTICATED_MAX_MULTIBULK + 5)
    parser.feed(b" ".join(args) + b"\r\n")
    assert parser.next_command() == args


def test_large_bulk_in_many_chunks() -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB
    data = mb(b"SET", b"k", payload) + mb(b"PING")
    parser = RequestParser()
    commands = drain(parser, (data[i : i + 4096] for i in range(0, len(data), 4096)))
    assert commands == [[b"SET", b"k", payload], [b"PING"]]
    assert parser.buffered_bytes() == 0


# -- invalid inputs -------------------------------------------------------------------------------------


def _check_invalid(case: Invalid, prefix: bytes, prefix_commands: list[list[bytes]]) -> None:
    data = prefix + case.data
    trigger = len(prefix) + (case.trigger if case.trigger is not None else len(case.data))
    for how, chunks in chunkings(data, trigger):
        commands, error = drain_until_error(RequestParser(**case.kwargs), chunks)
        assert error == case.error, how
        assert commands == prefix_commands, how


def _check_not_early(case: Invalid, prefix: bytes, prefix_commands: list[list[bytes]]) -> None:
    """No error may be raised before the bytes that make the request invalid have arrived."""
    trigger = len(prefix) + (case.trigger if case.trigger is not None else len(case.data))
    data = (prefix + case.data)[:trigger]
    lengths = range(trigger) if trigger <= _EXHAUSTIVE_SPLIT_MAX else [trigger - 1]
    for length in lengths:
        got = drain(RequestParser(**case.kwargs), [data[:length]])  # raises if the error comes early
        assert got == prefix_commands[: len(got)], length
    parser = RequestParser(**case.kwargs)
    assert drain(parser, [data[: trigger - 1]]) == prefix_commands
    parser.feed(data[trigger - 1 : trigger])
    assert_next_command_raises(parser, case.error)


@pytest.mark.parametrize("case", INVALID, ids=lambda c: c.id)
def test_invalid_input_whole_split_and_bytewise(case: Invalid) -> None:
    _check_invalid(case, b"", [])


@pytest.mark.parametrize("case", INVALID, ids=lambda c: c.id)
def test_invalid_input_after_valid_commands(case: Invalid) -> None:
    """Commands before the bad one in the same pipeline are returned before the error is raised."""
    _check_invalid(case, PING_PIPELINE, PING_PIPELINE_COMMANDS)


@pytest.mark.parametrize("case", INVALID, ids=lambda c: c.id)
def test_invalid_input_not_detected_early(case: Invalid) -> None:
    _check_not_early(case, PING_PIPELINE, PING_PIPELINE_COMMANDS)


def test_error_is_the_text_after_err() -> None:
    parser = RequestParser()
    parser.feed(b"*abc\r\n")
    with pytest.raises(ProtocolError) as exc_info:
        parser.next_command()
    assert isinstance(exc_info.value, Exception)
    assert str(exc_info.value) == "Protocol error: invalid multibulk length"
    assert not str(exc_info.value).startswith("ERR")


# -- query buffer limit ---------------------------------------------------------------------------------

SMALL_QUERY_BUFFER = ParserLimits(max_query_buffer_bytes=1000)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"*1\r\n$5000\r\n" + b"x" * 1001, id="incomplete-bulk"),
        pytest.param(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2000\r\n" + b"x" * 1001, id="incomplete-last-bulk"),
        pytest.param(b"x" * 1001, id="incomplete-inline"),
    ],
)
def test_query_buffer_limit(data: bytes) -> None:
    # Whatever the chunking, more than the limit is left unconsumed once everything has arrived.
    for _how, chunks in chunkings(data, len(data)):
        parser = RequestParser(SMALL_QUERY_BUFFER)
        with pytest.raises(ProtocolError, match="query buffer"):
            drain(parser, chunks)


def test_query_buffer_limit_exact_size_is_allowed() -> None:
    parser = RequestParser(SMALL_QUERY_BUFFER)
    parser.feed(b"x" * 1000)
    assert parser.next_command() is NEED_DATA
    with pytest.raises(ProtocolError):
        parser.feed(b"x")


def test_query_buffer_limit_counts_only_unconsumed_bytes() -> None:
    # Many small commands adding up to far more than the limit are fine when they are read as they come.
    parser = RequestParser(SMALL_QUERY_BUFFER)
    command = mb(b"ECHO", b"y" * 100)
    for _ in range(100):
        parser.feed(command)
        assert parser.next_command() == [b"ECHO", b"y" * 100]
        assert parser.next_command() is NEED_DATA
    assert parser.buffered_bytes() == 0
