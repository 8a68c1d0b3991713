"""Reply encoder for RESP2 and RESP3.

Python values map to RESP types: bytes/str -> bulk string, int -> integer, None -> null, list/tuple ->
array, dict -> map (flattened to field/value pairs under RESP2), bool -> boolean (RESP2: integer 1/0),
float -> double (RESP2: bulk string), `SimpleString` -> `+...`, `Verbatim` -> verbatim string (RESP2:
bulk), `Push` -> push (RESP2: array). Errors are encoded by `encode_error` from a code and a message.
"""

from __future__ import annotations

import math
from typing import Any, Final


class SimpleString(str):
    """A status reply such as `+OK`."""

    __slots__ = ()


class Verbatim(str):
    """A RESP3 verbatim string of format `txt` (INFO, CLIENT INFO); plain bulk under RESP2."""

    __slots__ = ()


class Encoded(bytes):
    """A reply already in RESP (the same bytes in RESP2 and RESP3), written as it is. Hot replies such as
    lease results are built directly in this form, skipping the generic encoder."""

    __slots__ = ()


class Push(list[Any]):
    """A RESP3 out-of-band push; an array under RESP2."""

    __slots__ = ()


_CRLF: Final = b"\r\n"
_NULL2: Final = b"$-1\r\n"
_NULL3: Final = b"_\r\n"
# Replies so common that encoding them again each time is measurable.
_SMALL_INTS: Final = [b":%d\r\n" % i for i in range(1024)]
_STATIC: Final = {"OK": b"+OK\r\n", "PONG": b"+PONG\r\n", "QUEUED": b"+QUEUED\r\n"}


def encode(value: Any, proto: int = 2) -> bytes:
    """Encode one reply."""
    out: list[bytes] = []
    _encode_into(value, proto, out)
    return out[0] if len(out) == 1 else b"".join(out)


def encode_error(code: str, message: str) -> bytes:
    """`-CODE message\\r\\n`, with newlines replaced so the reply stays one line, as Redis does."""
    text = (f"{code} {message}" if message else code).replace("\r", " ").replace("\n", " ")
    try:
        data = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate that is not an escaped byte
        data = text.encode("utf-8", "replace")
    return b"-" + data + _CRLF


def _encode_into(value: Any, proto: int, out: list[bytes]) -> None:
    # Ordered by how often each type is replied; `type() is` is faster than isinstance for exact types.
    kind = type(value)
    if kind is Encoded:
        out.append(value)
    elif kind is bytes:
        out.append(b"$%d\r\n%b\r\n" % (len(value), value))
    elif kind is SimpleString:
        static = _STATIC.get(value)
        out.append(static if static is not None else b"+" + value.encode() + _CRLF)
    elif kind is int:
        out.append(_SMALL_INTS[value] if 0 <= value < 1024 else b":%d\r\n" % value)
    elif kind is list or kind is tuple:
        out.append(b"*%d\r\n" % len(value))
        for item in value:
            _encode_into(item, proto, out)
    elif kind is str:
        data = value.encode()
        out.append(b"$%d\r\n%b\r\n" % (len(data), data))
    elif value is None:
        out.append(_NULL3 if proto == 3 else _NULL2)
    elif kind is dict:
        if proto == 3:
            out.append(b"%%%d\r\n" % len(value))
        else:
            out.append(b"*%d\r\n" % (2 * len(value)))
        for key, item in value.items():
            _encode_into(key, proto, out)
            _encode_into(item, proto, out)
    elif kind is bool:
        if proto == 3:
            out.append(b"#t\r\n" if value else b"#f\r\n")
        else:
            out.append(b":1\r\n" if value else b":0\r\n")
    elif kind is float:
        text = _format_double(value)
        if proto == 3:
            out.append(b",%b\r\n" % text)
        else:
            out.append(b"$%d\r\n%b\r\n" % (len(text), text))
    elif kind is Verbatim:
        data = value.encode()
        if proto == 3:
            out.append(b"=%d\r\ntxt:%b\r\n" % (len(data) + 4, data))
        else:
            out.append(b"$%d\r\n%b\r\n" % (len(data), data))
    elif kind is Push:
        out.append(b"%c%d\r\n" % (62 if proto == 3 else 42, len(value)))
        for item in value:
            _encode_into(item, proto, out)
    elif isinstance(value, bytes | bytearray | memoryview):
        data = bytes(value)
        out.append(b"$%d\r\n%b\r\n" % (len(data), data))
    elif isinstance(value, int):  # an IntEnum or bool subclass
        out.append(b":%d\r\n" % int(value))
    else:
        raise TypeError(f"cannot encode {kind.__name__} as RESP")


def _format_double(value: float) -> bytes:
    if math.isinf(value):
        return b"inf" if value > 0 else b"-inf"
    if math.isnan(value):
        return b"nan"
    return repr(value).encode()
