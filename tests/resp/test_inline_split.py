"""`split_inline_args` against Redis's `sdssplitargs` (src/sds.c).

The table holds what sdssplitargs returns for each line; the properties compare against a line-by-line
transliteration of its C code (`sdssplitargs_reference` below) and round-trip `sdscatrepr`-style quoting.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from querator.resp import split_inline_args

CASES: list[tuple[bytes, list[bytes] | None]] = [
    # plain words and whitespace
    (b"", []),
    (b"   ", []),
    (b"\t \t", []),
    (b"PING", [b"PING"]),
    (b"set a b", [b"set", b"a", b"b"]),
    (b"  set   a  b  ", [b"set", b"a", b"b"]),
    (b"set\ta\t\tb", [b"set", b"a", b"b"]),
    (b"a\r\nb", [b"a", b"b"]),
    (b"\xff\xfe \x80", [b"\xff\xfe", b"\x80"]),
    # double quotes
    (b'set a "b c"', [b"set", b"a", b"b c"]),
    (b'"\\x41"', [b"A"]),
    (b'"\\x4a\\x4B"', [b"JK"]),
    (b'"\\xff\\x00"', [b"\xff\x00"]),
    (b'"\\x4"', [b"x4"]),  # not two hex digits: \x is an unknown escape, giving "x"
    (b'"\\xZZ"', [b"xZZ"]),
    (b'"a\\x41\\n"', [b"aA\n"]),
    (b'"\\n\\r\\t\\b\\a"', [b"\n\r\t\b\a"]),
    (b'"\\q\\\\"', [b"q\\"]),
    (b'"say \\"hi\\""', [b'say "hi"']),
    (b'"it\'s"', [b"it's"]),
    (b'""', [b""]),
    (b'a "" b', [b"a", b"", b"b"]),
    (b'"a"\tb', [b"a", b"b"]),
    (b'"a b"  "c"', [b"a b", b"c"]),
    (b'a"b c"', [b"ab c"]),  # a quote inside a word opens a quoted part
    (b'"a\nb"', [b"a\nb"]),
    # single quotes
    (b"'it\\'s'", [b"it's"]),
    (b"'a b'", [b"a b"]),
    (b"'a\\nb'", [b"a\\nb"]),  # only \' is an escape in single quotes
    (b"'\\x41'", [b"\\x41"]),
    (b"''", [b""]),
    (b"'say \"hi\"'", [b'say "hi"']),
    (b"a'b'", [b"ab"]),
    # unbalanced quotes, or a closing quote not followed by a space
    (b'"unbalanced', None),
    (b"'x", None),
    (b'"a"b', None),
    (b"'a'b", None),
    (b'a"b c"d', None),
    (b'"a\\"', None),  # the quote is escaped, so the string never closes
    (b'"abc\\', None),
    (b"'\\\\'", None),  # \\' is a backslash then an escaped quote: unterminated
    (b'set "a', None),
    (b'"a" "b', None),
    # \v and \f are skipped between arguments (isspace) but do not end an unquoted one
    (b"a\x0bb", [b"a\x0bb"]),
    (b"a\x0cb", [b"a\x0cb"]),
    (b"\x0ba \x0cb", [b"a", b"b"]),
    (b'"a"\x0bb', [b"a", b"b"]),
    (b"x \x0b'y'", [b"x", b"y"]),
    # sdssplitargs reads a C string: a NUL byte ends the line
    (b"a\x00b c", [b"a"]),
    (b'x "a"\x00 y', [b"x", b"a"]),
    (b"\x00a", []),
    (b'"a\x00b"', None),
    (b'"\\x00"', [b"\x00"]),  # an escaped NUL is a byte like any other
]


@pytest.mark.parametrize(("line", "expected"), CASES, ids=[repr(line) for line, _ in CASES])
def test_split_inline_args(line: bytes, expected: list[bytes] | None) -> None:
    assert split_inline_args(line) == expected


@pytest.mark.parametrize(("line", "expected"), CASES, ids=[repr(line) for line, _ in CASES])
def test_reference_agrees_with_table(line: bytes, expected: list[bytes] | None) -> None:
    # Keeps the transliteration below honest, so the property tests compare against the right thing.
    assert sdssplitargs_reference(line) == expected


def sdssplitargs_reference(line: bytes) -> list[bytes] | None:
    """Redis's sdssplitargs, transliterated from C with `p` an index into a NUL-terminated string."""
    s = line + b"\0"

    def at(i: int) -> int:
        return s[i] if i < len(s) else 0

    def isspace(c: int) -> bool:
        return c in b" \t\n\v\f\r"

    def is_hex_digit(c: int) -> bool:
        return c in b"0123456789abcdefABCDEF"

    p = 0
    vector: list[bytes] = []
    while True:
        while at(p) and isspace(at(p)):
            p += 1
        if not at(p):
            return vector
        inq = insq = done = False
        current = bytearray()
        while not done:
            c = at(p)
            if inq:
                if (
                    c == ord("\\")
                    and at(p + 1) == ord("x")
                    and is_hex_digit(at(p + 2))
                    and is_hex_digit(at(p + 3))
                ):
                    current.append(int(bytes([at(p + 2), at(p + 3)]), 16))
                    p += 3
                elif c == ord("\\") and at(p + 1):
                    p += 1
                    current.append(
                        {ord("n"): 10, ord("r"): 13, ord("t"): 9, ord("b"): 8, ord("a"): 7}.get(at(p), at(p))
                    )
                elif c == ord('"'):
                    if at(p + 1) and not isspace(at(p + 1)):
                        return None
                    done = True
                elif not c:
                    return None
                else:
                    current.append(c)
            elif insq:
                if c == ord("\\") and at(p + 1) == ord("'"):
                    p += 1
                    current.append(ord("'"))
                elif c == ord("'"):
                    if at(p + 1) and not isspace(at(p + 1)):
                        return None
                    done = True
                elif not c:
                    return None
                else:
                    current.append(c)
            elif c in b" \n\r\t\0":
                done = True
            elif c == ord('"'):
                inq = True
            elif c == ord("'"):
                insq = True
            else:
                current.append(c)
            if at(p):
                p += 1
        vector.append(bytes(current))


# Lines built mostly from the characters sdssplitargs treats specially.
_SPECIAL = b" \t\r\n\v\f\0\"'\\xab41nq"
line_st = st.one_of(
    st.binary(max_size=40),
    st.lists(st.sampled_from([bytes([c]) for c in _SPECIAL]), max_size=40).map(b"".join),
)


@settings(max_examples=300, deadline=None)
@given(line=line_st)
def test_matches_sdssplitargs(line: bytes) -> None:
    assert split_inline_args(line) == sdssplitargs_reference(line)


def catrepr(arg: bytes) -> bytes:
    """Redis's sdscatrepr: the quoted form redis-cli prints and sdssplitargs reads back."""
    out = bytearray(b'"')
    named = {ord("\\"): b"\\\\", ord('"'): b'\\"', 10: b"\\n", 13: b"\\r", 9: b"\\t", 7: b"\\a", 8: b"\\b"}
    for c in arg:
        if c in named:
            out += named[c]
        elif 32 <= c < 127:
            out.append(c)
        else:
            out += b"\\x%02x" % c
    return bytes(out + b'"')


@settings(max_examples=300, deadline=None)
@given(args=st.lists(st.binary(max_size=20), max_size=6), sep=st.sampled_from([b" ", b"\t", b"  \t "]))
def test_quoted_args_round_trip(args: list[bytes], sep: bytes) -> None:
    assert split_inline_args(sep.join(catrepr(a) for a in args)) == args
