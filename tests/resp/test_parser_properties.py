"""Property tests for `RequestParser`: chunking never changes what is parsed, and no input crashes it."""

from __future__ import annotations

import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from querator.resp import NEED_DATA, ParserLimits, ProtocolError, RequestParser

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

commands_st = st.lists(st.lists(st.binary(max_size=64), min_size=1, max_size=5), max_size=8)


def encode_multibulk(command: list[bytes]) -> bytes:
    return b"*%d\r\n" % len(command) + b"".join(b"$%d\r\n%b\r\n" % (len(a), a) for a in command)


@st.composite
def chunked(draw: st.DrawFn, data: bytes) -> list[bytes]:
    """`data` cut at up to 20 arbitrary offsets (empty chunks included)."""
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=20)))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def run(parser: RequestParser, chunks: list[bytes]) -> tuple[list[list[bytes]], str | None]:
    """Commands parsed, then the ProtocolError text if one was raised. Fails on any other exception or if
    `next_command` keeps returning commands without consuming input."""
    commands: list[list[bytes]] = []
    fed = 0
    try:
        for chunk in chunks:
            parser.feed(chunk)
            fed += len(chunk)
            # Every command returned consumes at least two bytes ("X\n"), so more commands than bytes fed
            # means next_command is not making progress.
            for _ in range(fed + 2):
                command = parser.next_command()
                if command is NEED_DATA:
                    break
                assert isinstance(command, list)
                assert command, "empty requests must be skipped, not returned"
                assert all(type(arg) is bytes for arg in command)
                commands.append(command)
            else:
                raise AssertionError("next_command never returned NEED_DATA")
    except ProtocolError as exc:
        return commands, str(exc)
    return commands, None


@SETTINGS
@given(commands=commands_st, data=st.data())
def test_multibulk_pipeline_in_any_chunks(commands: list[list[bytes]], data: st.DataObject) -> None:
    stream = b"".join(encode_multibulk(c) for c in commands)
    chunks = data.draw(chunked(stream))
    assert b"".join(chunks) == stream
    parser = RequestParser()
    assert run(parser, chunks) == (commands, None)
    assert parser.next_command() is NEED_DATA
    assert parser.buffered_bytes() == 0


large_commands_st = st.lists(
    st.lists(st.binary(min_size=0, max_size=300), min_size=3, max_size=120), min_size=1, max_size=6
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(commands=large_commands_st, data=st.data())
def test_pipelines_of_large_commands(commands: list[list[bytes]], data: st.DataObject) -> None:
    """Commands larger than the fast path's first window (and some larger than all it reads at once),
    several in one buffer: each is parsed whole, whatever stands behind it and however it was split."""
    stream = b"".join(encode_multibulk(c) for c in commands)
    assert run(RequestParser(), [stream]) == (commands, None)
    assert run(RequestParser(), data.draw(chunked(stream))) == (commands, None)


# Fragments that make random streams reach deep into the parser rather than failing at the first byte.
_FRAGMENTS = [
    b"*",
    b"$",
    b"\r\n",
    b"\r",
    b"\n",
    b"*1\r\n",
    b"*2\r\n",
    b"*0\r\n",
    b"*-1\r\n",
    b"$0\r\n",
    b"$1\r\n",
    b"$3\r\n",
    b"$-1\r\n",
    b"$99\r\n",
    b"$-5\r\n",
    b"$x\r\n",
    b"*1\r\n$4\r\nPING\r\n",
    b"PING",
    b"x",
    b" ",
    b"\t",
    b'"',
    b"'",
    b"\\",
    b"\\x41",
    b"0",
    b"1",
    b"-",
    b"\x00",
    b"\xff",
]

any_stream_st = st.one_of(
    st.binary(max_size=2048),
    st.lists(st.sampled_from(_FRAGMENTS) | st.binary(max_size=8), max_size=200).map(b"".join),
)

limits_st = st.sampled_from(
    [ParserLimits(), ParserLimits(max_bulk_bytes=2), ParserLimits(max_query_buffer_bytes=64)]
)


@SETTINGS
@given(stream=any_stream_st, limits=limits_st, authenticated=st.booleans(), data=st.data())
def test_arbitrary_bytes_give_commands_or_protocol_error(
    stream: bytes, limits: ParserLimits, authenticated: bool, data: st.DataObject
) -> None:
    chunks = data.draw(chunked(stream))
    commands, error = run(RequestParser(limits, authenticated=authenticated), chunks)
    # Each argument, and each byte of an argument, comes from at least one byte of input.
    assert sum(len(c) for c in commands) <= len(stream)
    assert sum(len(arg) for c in commands for arg in c) <= len(stream)
    if error is not None:
        assert error  # a reply text, never empty
        assert "\r" not in error and "\n" not in error


@SETTINGS
@given(stream=any_stream_st, authenticated=st.booleans(), data=st.data())
def test_chunking_does_not_change_the_outcome(
    stream: bytes, authenticated: bool, data: st.DataObject
) -> None:
    """Below the 64 KiB line limits, what is parsed (and which error, after which commands) does not
    depend on how the bytes were split."""
    whole = run(RequestParser(authenticated=authenticated), [stream])
    bytewise = run(
        RequestParser(authenticated=authenticated), [stream[i : i + 1] for i in range(len(stream))]
    )
    chunks = run(RequestParser(authenticated=authenticated), data.draw(chunked(stream)))
    assert whole == bytewise == chunks
