"""Sans-IO RESP2/RESP3: bytes in -> commands out, values in -> bytes out.

Nothing in this package does I/O or knows about queues; the server feeds it bytes and writes what it returns.
"""

from querator.resp.encoder import Encoded, Push, SimpleString, Verbatim, encode, encode_error
from querator.resp.parser import NEED_DATA, ParserLimits, ProtocolError, RequestParser, split_inline_args

__all__ = [
    "NEED_DATA",
    "Encoded",
    "ParserLimits",
    "ProtocolError",
    "Push",
    "RequestParser",
    "SimpleString",
    "Verbatim",
    "encode",
    "encode_error",
    "split_inline_args",
]
