"""Exact bytes of every reply type under RESP2 and RESP3, and a round trip through hiredis."""

from __future__ import annotations

import enum
import math
from typing import Any

import hiredis
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from querator.resp import Push, SimpleString, Verbatim, encode, encode_error

# (id, value, RESP2 bytes, RESP3 bytes)
CASES: list[tuple[str, Any, bytes, bytes]] = [
    ("bulk", b"hello", b"$5\r\nhello\r\n", b"$5\r\nhello\r\n"),
    ("bulk-empty", b"", b"$0\r\n\r\n", b"$0\r\n\r\n"),
    ("bulk-binary-crlf", b"a\r\n\x00\xff", b"$5\r\na\r\n\x00\xff\r\n", b"$5\r\na\r\n\x00\xff\r\n"),
    ("bulk-bytearray", bytearray(b"ab"), b"$2\r\nab\r\n", b"$2\r\nab\r\n"),
    ("bulk-memoryview", memoryview(b"abc"), b"$3\r\nabc\r\n", b"$3\r\nabc\r\n"),
    ("str-ascii", "hello", b"$5\r\nhello\r\n", b"$5\r\nhello\r\n"),
    (
        "str-utf8-length-in-bytes",
        "h\u00e9llo\u20ac",
        b"$9\r\nh\xc3\xa9llo\xe2\x82\xac\r\n",
        b"$9\r\nh\xc3\xa9llo\xe2\x82\xac\r\n",
    ),
    ("str-empty", "", b"$0\r\n\r\n", b"$0\r\n\r\n"),
    ("simple-ok", SimpleString("OK"), b"+OK\r\n", b"+OK\r\n"),
    ("simple-pong", SimpleString("PONG"), b"+PONG\r\n", b"+PONG\r\n"),
    ("simple-queued", SimpleString("QUEUED"), b"+QUEUED\r\n", b"+QUEUED\r\n"),
    (
        "simple-other",
        SimpleString("Background saving started"),
        b"+Background saving started\r\n",
        b"+Background saving started\r\n",
    ),
    ("int-zero", 0, b":0\r\n", b":0\r\n"),
    ("int-one", 1, b":1\r\n", b":1\r\n"),
    ("int-1023", 1023, b":1023\r\n", b":1023\r\n"),
    ("int-1024", 1024, b":1024\r\n", b":1024\r\n"),
    ("int-negative", -1, b":-1\r\n", b":-1\r\n"),
    ("int-negative-large", -1024, b":-1024\r\n", b":-1024\r\n"),
    ("int-max-64", 2**63 - 1, b":9223372036854775807\r\n", b":9223372036854775807\r\n"),
    ("int-min-64", -(2**63), b":-9223372036854775808\r\n", b":-9223372036854775808\r\n"),
    ("none", None, b"$-1\r\n", b"_\r\n"),
    ("array-empty", [], b"*0\r\n", b"*0\r\n"),
    ("array", [b"a", 1, None], b"*3\r\n$1\r\na\r\n:1\r\n$-1\r\n", b"*3\r\n$1\r\na\r\n:1\r\n_\r\n"),
    ("tuple", (b"x", "y"), b"*2\r\n$1\r\nx\r\n$1\r\ny\r\n", b"*2\r\n$1\r\nx\r\n$1\r\ny\r\n"),
    (
        "array-nested",
        [[b"a", [1]], [], [None]],
        b"*3\r\n*2\r\n$1\r\na\r\n*1\r\n:1\r\n*0\r\n*1\r\n$-1\r\n",
        b"*3\r\n*2\r\n$1\r\na\r\n*1\r\n:1\r\n*0\r\n*1\r\n_\r\n",
    ),
    ("map-empty", {}, b"*0\r\n", b"%0\r\n"),
    (
        "map",
        {b"name": b"q1", b"size": 3},
        b"*4\r\n$4\r\nname\r\n$2\r\nq1\r\n$4\r\nsize\r\n:3\r\n",
        b"%2\r\n$4\r\nname\r\n$2\r\nq1\r\n$4\r\nsize\r\n:3\r\n",
    ),
    (
        "map-nested",
        [{"k": {"n": [True]}}],
        b"*1\r\n*2\r\n$1\r\nk\r\n*2\r\n$1\r\nn\r\n*1\r\n:1\r\n",
        b"*1\r\n%1\r\n$1\r\nk\r\n%1\r\n$1\r\nn\r\n*1\r\n#t\r\n",
    ),
    ("bool-true", True, b":1\r\n", b"#t\r\n"),
    ("bool-false", False, b":0\r\n", b"#f\r\n"),
    ("bools-in-array", [True, False], b"*2\r\n:1\r\n:0\r\n", b"*2\r\n#t\r\n#f\r\n"),
    ("float", 1.5, b"$3\r\n1.5\r\n", b",1.5\r\n"),
    ("float-negative", -0.25, b"$5\r\n-0.25\r\n", b",-0.25\r\n"),
    ("float-short-repr", 0.1, b"$3\r\n0.1\r\n", b",0.1\r\n"),
    ("float-exponent", 1e100, b"$6\r\n1e+100\r\n", b",1e+100\r\n"),
    ("float-inf", math.inf, b"$3\r\ninf\r\n", b",inf\r\n"),
    ("float-minus-inf", -math.inf, b"$4\r\n-inf\r\n", b",-inf\r\n"),
    ("float-nan", math.nan, b"$3\r\nnan\r\n", b",nan\r\n"),
    ("verbatim", Verbatim("hello"), b"$5\r\nhello\r\n", b"=9\r\ntxt:hello\r\n"),
    ("verbatim-empty", Verbatim(""), b"$0\r\n\r\n", b"=4\r\ntxt:\r\n"),
    (
        "verbatim-multiline-utf8",
        Verbatim("a\r\n\u00e9"),
        b"$5\r\na\r\n\xc3\xa9\r\n",
        b"=9\r\ntxt:a\r\n\xc3\xa9\r\n",
    ),
    (
        "push",
        Push([b"message", b"ch", b"hi"]),
        b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n",
        b">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n",
    ),
    ("push-empty", Push(), b"*0\r\n", b">0\r\n"),
]


@pytest.mark.parametrize(("value", "resp2", "resp3"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_encode_exact_bytes(value: Any, resp2: bytes, resp3: bytes) -> None:
    assert encode(value, 2) == resp2
    assert encode(value, 3) == resp3


def test_default_protocol_is_resp2() -> None:
    assert encode(None) == b"$-1\r\n"
    assert encode({b"a": True}) == b"*2\r\n$1\r\na\r\n:1\r\n"


def test_int_larger_than_64_bits() -> None:
    assert encode(10**30, 2) == b":1000000000000000000000000000000\r\n"
    assert encode(-(10**30), 3) == b":-1000000000000000000000000000000\r\n"


class Priority(enum.IntEnum):
    HIGH = 7


def test_int_subclass_is_an_integer() -> None:
    assert encode(Priority.HIGH, 2) == b":7\r\n"
    assert encode(Priority.HIGH, 3) == b":7\r\n"


def test_encode_returns_bytes_even_for_one_part() -> None:
    for value in (SimpleString("OK"), 5, b"x", [1, 2]):
        assert type(encode(value, 3)) is bytes


@pytest.mark.parametrize(
    "value", [object(), {1, 2}, 1j, [b"ok", object()]], ids=["object", "set", "complex", "nested-object"]
)
def test_unencodable_value_raises_type_error(value: Any) -> None:
    with pytest.raises(TypeError, match="cannot encode"):
        encode(value, 2)


@pytest.mark.parametrize(
    ("code", "message", "expected"),
    [
        ("ERR", "a\r\nb", b"-ERR a  b\r\n"),
        ("ERR", "unknown command", b"-ERR unknown command\r\n"),
        (
            "WRONGTYPE",
            "Operation against a key holding the wrong kind of value",
            b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n",
        ),
        ("ERR", "", b"-ERR\r\n"),
        ("ERR", "line\nbreak\rhere", b"-ERR line break here\r\n"),
        ("ERR", "caf\u00e9", b"-ERR caf\xc3\xa9\r\n"),
        ("BAD\nCODE", "x", b"-BAD CODE x\r\n"),
    ],
)
def test_encode_error(code: str, message: str, expected: bytes) -> None:
    assert encode_error(code, message) == expected


# -- round trip through hiredis -------------------------------------------------------------------------

_text = st.text(max_size=20)
_status_text = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\r\n"), max_size=20)
leaves = st.one_of(
    st.binary(max_size=20),
    _text,
    _status_text.map(SimpleString),
    _text.map(Verbatim),
    st.integers(-(2**63), 2**63 - 1),
    st.none(),
    st.booleans(),
    st.floats(allow_nan=False),
)
values = st.recursive(
    leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.lists(children, max_size=4).map(tuple),
        st.lists(children, max_size=4).map(Push),
        # bytes and int keys: distinct in Python and distinct on the wire, so a map keeps every entry
        st.dictionaries(st.binary(max_size=8) | st.integers(-(2**63), 2**63 - 1), children, max_size=4),
    ),
    max_leaves=20,
)


def expected_reply(value: Any, proto: int) -> Any:
    """What hiredis should give back for `value` encoded under `proto`."""
    if isinstance(value, str):  # str, SimpleString and Verbatim (hiredis drops the "txt:" prefix)
        return value.encode()
    if type(value) is bool:
        return value if proto == 3 else int(value)
    if type(value) is float:
        return value if proto == 3 else repr(value).encode()  # repr(inf) is "inf", as Redis writes it
    if isinstance(value, list | tuple):
        return [expected_reply(item, proto) for item in value]
    if isinstance(value, dict):
        if proto == 3:
            return {expected_reply(k, proto): expected_reply(v, proto) for k, v in value.items()}
        return [expected_reply(x, proto) for pair in value.items() for x in pair]
    return value


def strict(value: Any) -> Any:
    """A form where equal means same types too (True != 1, 1.0 != 1, 0.0 != -0.0), map order kept."""
    if isinstance(value, list):
        return ("list", [strict(item) for item in value])
    if isinstance(value, dict):
        return ("map", [(strict(k), strict(v)) for k, v in value.items()])
    if isinstance(value, float):
        return ("float", repr(value))
    return (type(value).__name__, value)


_INCOMPLETE = object()


def parse_with_hiredis(data: bytes) -> Any:
    # hiredis's default "no reply yet" value is False, which is also a RESP3 reply; use a sentinel.
    reader = hiredis.Reader(notEnoughData=_INCOMPLETE)
    reader.feed(data)
    reply = reader.gets()
    assert reply is not _INCOMPLETE, "hiredis found the reply incomplete"
    assert reader.gets() is _INCOMPLETE, "bytes left over after the reply"
    return reply


@settings(max_examples=300, deadline=None)
@given(value=values)
def test_round_trip_through_hiredis(value: Any) -> None:
    for proto in (2, 3):
        reply = parse_with_hiredis(encode(value, proto))
        assert strict(reply) == strict(expected_reply(value, proto)), proto


def test_nan_round_trip_through_hiredis() -> None:
    assert math.isnan(parse_with_hiredis(encode(math.nan, 3)))
    assert parse_with_hiredis(encode(math.nan, 2)) == b"nan"


@pytest.mark.parametrize(
    "ids",
    [
        ["7-0-1"],
        [f"7-0-{seq}" for seq in range(95, 105)],  # lengths grow inside the batch
        [f"7-0-{seq}" for seq in range(100, 200)],  # one length: the single-join path
        ["7-1-10", "7-0-9", "7-2-100"],  # any order of lengths
    ],
)
def test_produce_ids_reply_is_an_array_of_bulk_strings(ids: list[str]) -> None:
    from querator.commands.item_cmds import _ids_reply

    reader = hiredis.Reader()
    reader.feed(_ids_reply(ids))
    assert reader.gets() == [i.encode() for i in ids]
    assert reader.gets() is False
