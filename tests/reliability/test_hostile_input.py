"""Hostile input over real sockets (SPEC section 2): malformed RESP, truncated frames, huge counts and
lengths, NUL bytes, CR without LF, binary garbage, hostile argument values, and seeded mutation fuzzing.

Every case runs on its own connection to a long-lived server and must end in one of three ways: the exact
reply (a `-ERR Protocol error: ...` reply is followed by the server closing the connection), no reply while
the server waits for the rest of a frame, or an ordinary reply on a connection that stays usable. Never a
crash, a hang of the server, an `-ERR internal error` or a `Traceback` in the server's log.

Environment: `QUERATOR_SLOW=1` runs the long version of the fuzzer (20,000 inputs instead of 5,000) and
`QUERATOR_FUZZ_SEED=n` changes its seed (the default seed is fixed so a failure can be replayed).
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import socket
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.reliability.fuzz_parser_atheris import check_input
from tests.support import (
    HOST,
    INVALID_BULK,
    INVALID_MULTIBULK,
    PONG,
    SLOW,
    ServerProcess,
    alive,
    closed_by_server,
    connect,
    ping_ok,
    recv_exact,
    recv_line,
    resp,
)

NOAUTH = b"-NOAUTH Authentication required.\r\n"
UNBALANCED = b"-ERR Protocol error: unbalanced quotes in request\r\n"
TOO_BIG_INLINE = b"-ERR Protocol error: too big inline request\r\n"
INTERNAL_ERROR = b"internal error"
INT64_MAX = b"9223372036854775807"
# How long "no reply" must last before we believe the server is waiting for more data. A reply to a
# complete command on an otherwise idle local server comes within a millisecond.
WAIT_WINDOW = 0.25


# -- helpers -------------------------------------------------------------------------------------------------


def silent_for(sock: socket.socket, seconds: float) -> bytes | None:
    """None when the server sends nothing and keeps the connection open for `seconds`; else what arrived
    (b"" for a close)."""
    sock.settimeout(seconds)
    try:
        return sock.recv(65536)
    except TimeoutError:
        return None
    except ConnectionResetError:
        return b""


def reset_close(sock: socket.socket) -> None:
    """Close with an RST (SO_LINGER 0), the rudest way a peer can leave."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def tracebacks(server: ServerProcess) -> list[str]:
    """The server's log from each `Traceback` on (the log is read, which also drains the stderr pipe)."""
    log = server.read_log()
    return [log[m.start() : m.start() + 3000] for m in re.finditer("Traceback", log)]


def info(port: int, section: str) -> dict[str, str]:
    """`INFO section` as a dict (RESP2 bulk string of `key:value` lines)."""
    with connect(port) as sock:
        sock.sendall(b"INFO " + section.encode() + b"\r\n")
        header = recv_line(sock)
        assert header.startswith(b"$"), header
        body = recv_exact(sock, int(header[1:]) + 2).decode()
    return dict(line.split(":", 1) for line in body.splitlines() if ":" in line)


def connected_clients_settle(port: int, expected: int, timeout: float = 5.0) -> int:
    """Poll INFO until connected_clients (which counts the asking connection) is `expected`."""
    deadline = time.monotonic() + timeout
    while True:
        count = int(info(port, "clients")["connected_clients"])
        if count <= expected or time.monotonic() > deadline:
            return count
        time.sleep(0.05)


# -- fixtures ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The one server the malformed-RESP corpus is thrown at (RocksDB default, fsync)."""
    proc = ServerProcess(tmp_path_factory.mktemp("hostile") / "data").start()
    yield proc
    proc.kill()


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(
        tmp_path_factory.mktemp("hostile-auth") / "data", "--requirepass", "s3cret", backend="memory"
    ).start()
    yield proc
    proc.kill()


# -- (a) the malformed-RESP corpus ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One hostile input and what the server must do with it.

    expect: "error"  - exactly `reply`, then the server closes the connection;
            "prefix" - one line starting with `reply`, then the server closes the connection;
            "reply"  - exactly `reply`, and the connection stays usable (PING answers on it);
            "wait"   - nothing within WAIT_WINDOW and the connection stays open (a truncated frame).
    """

    name: str
    payload: bytes
    expect: str
    reply: bytes = b""


def _error(name: str, payload: bytes, reply: bytes) -> Case:
    return Case(name, payload, "error", reply)


def _expected_dollar(got: bytes) -> bytes:
    return b"-ERR Protocol error: expected '$', got '" + got + b"'\r\n"


BIG = 70_000  # over Redis's PROTO_INLINE_MAX_SIZE (64 KiB)
DEFAULT_MAX_BULK = 16 * 1024 * 1024

CORPUS: list[Case] = [
    # invalid multibulk length (Redis's string2ll rules and `ll > INT_MAX`)
    _error("mbulk-alpha", b"*abc\r\n", INVALID_MULTIBULK),
    _error("mbulk-empty", b"*\r\n", INVALID_MULTIBULK),
    _error("mbulk-leading-zero", b"*01\r\n", INVALID_MULTIBULK),
    _error("mbulk-plus-sign", b"*+1\r\n", INVALID_MULTIBULK),
    _error("mbulk-space-before", b"* 1\r\n", INVALID_MULTIBULK),
    _error("mbulk-space-after", b"*1 \r\n", INVALID_MULTIBULK),
    _error("mbulk-minus-zero", b"*-0\r\n", INVALID_MULTIBULK),
    _error("mbulk-minus-alone", b"*-\r\n", INVALID_MULTIBULK),
    _error("mbulk-int-max-plus-1", b"*2147483648\r\n", INVALID_MULTIBULK),
    _error("mbulk-int64-max", b"*" + INT64_MAX + b"\r\n", INVALID_MULTIBULK),
    _error("mbulk-int64-overflow", b"*9223372036854775808\r\n", INVALID_MULTIBULK),
    _error("mbulk-21-digits", b"*100000000000000000000\r\n", INVALID_MULTIBULK),
    _error("mbulk-hex", b"*0x10\r\n", INVALID_MULTIBULK),
    _error("mbulk-float", b"*1.5\r\n", INVALID_MULTIBULK),
    _error("mbulk-underscore", b"*1_0\r\n", INVALID_MULTIBULK),  # int() would take it, string2ll does not
    _error("mbulk-unicode-digit", "*\u0661\r\n".encode(), INVALID_MULTIBULK),  # Arabic-Indic one
    _error("mbulk-nul", b"*1\x00\r\n", INVALID_MULTIBULK),
    # invalid bulk length
    _error("bulk-minus-one", b"*1\r\n$-1\r\n", INVALID_BULK),
    _error("bulk-int64-min", b"*1\r\n$-9223372036854775808\r\n", INVALID_BULK),
    _error("bulk-alpha", b"*1\r\n$abc\r\n", INVALID_BULK),
    _error("bulk-empty", b"*1\r\n$\r\n", INVALID_BULK),
    _error("bulk-plus-sign", b"*1\r\n$+4\r\nPING\r\n", INVALID_BULK),
    _error("bulk-leading-zero", b"*1\r\n$04\r\nPING\r\n", INVALID_BULK),
    _error("bulk-space", b"*1\r\n$ 4\r\nPING\r\n", INVALID_BULK),
    _error("bulk-underscore", b"*1\r\n$1_0\r\n", INVALID_BULK),
    _error("bulk-int-max", b"*1\r\n$2147483647\r\n", INVALID_BULK),
    _error("bulk-2GiB", b"*1\r\n$2147483648\r\n", INVALID_BULK),
    _error("bulk-int64-max", b"*1\r\n$" + INT64_MAX + b"\r\n", INVALID_BULK),
    _error("bulk-int64-overflow", b"*1\r\n$9223372036854775808\r\n", INVALID_BULK),
    _error("bulk-uint64-overflow", b"*1\r\n$18446744073709551616\r\n", INVALID_BULK),
    _error("bulk-max-plus-1", b"*1\r\n$%d\r\n" % (DEFAULT_MAX_BULK + 1), INVALID_BULK),
    _error("bulk-negative-second-arg", b"*2\r\n$4\r\nECHO\r\n$-5\r\n", INVALID_BULK),
    # expected '$'
    _error("dollar-got-letter", b"*1\r\nPING\r\n", _expected_dollar(b"P")),
    _error("dollar-got-integer", b"*1\r\n:4\r\n", _expected_dollar(b":")),
    _error("dollar-got-simple-string", b"*1\r\n+PING\r\n", _expected_dollar(b"+")),
    _error("dollar-got-nested-array", b"*1\r\n*1\r\n$4\r\nPING\r\n", _expected_dollar(b"*")),
    _error("dollar-got-map-2nd-arg", b"*2\r\n$4\r\nECHO\r\n%1\r\n", _expected_dollar(b"%")),
    _error("dollar-got-cr", b"*1\r\n\r\n", _expected_dollar(b" ")),  # newlines become spaces, as in Redis
    _error("dollar-got-0xff", b"*1\r\n\xff\r\n", _expected_dollar(b"\xff")),  # the raw byte, as Redis
    # Redis's %c stops its reply at a NUL here; only the start of the line is fixed.
    Case("dollar-got-nul", b"*1\r\n\x00\r\n", "prefix", b"-ERR Protocol error: expected '$', got '"),
    # unbalanced quotes (sdssplitargs)
    _error("quote-double-open", b'"abc\r\n', UNBALANCED),
    _error("quote-single-open", b"ECHO 'abc\r\n", UNBALANCED),
    _error("quote-double-then-text", b'ECHO "a"b\r\n', UNBALANCED),
    _error("quote-single-then-text", b"ECHO 'a'b\r\n", UNBALANCED),
    _error("quote-escaped-close", b'ECHO "abc\\"\r\n', UNBALANCED),
    _error("quote-cut-by-nul", b'ECHO "a\x00b"\r\n', UNBALANCED),  # a NUL ends the line for sdssplitargs
    # too big: no terminator within 64 KiB
    _error("inline-too-big", b"A" * BIG, TOO_BIG_INLINE),
    _error("inline-too-big-nul", b"\x00" * BIG, TOO_BIG_INLINE),
    _error("inline-too-big-cr-without-lf", b"PING" + b"\r" * BIG, TOO_BIG_INLINE),
    _error(
        "mbulk-count-string-too-big",
        b"*" + b"1" * BIG,
        b"-ERR Protocol error: too big mbulk count string\r\n",
    ),
    _error(
        "bulk-count-string-too-big",
        b"*1\r\n$" + b"1" * BIG,
        b"-ERR Protocol error: too big bulk count string\r\n",
    ),
    # valid, and answered as Redis answers them
    Case("mbulk-zero-skipped", b"*0\r\nPING\r\n", "reply", PONG),
    Case("mbulk-negative-skipped", b"*-1\r\nPING\r\n", "reply", PONG),
    Case("mbulk-int64-min-skipped", b"*-9223372036854775808\r\nPING\r\n", "reply", PONG),
    Case("mbulk-below-int-min-skipped", b"*-2147483649\r\nPING\r\n", "reply", PONG),
    # Redis skips the two bytes after a bulk and the byte after a header's CR without looking at them.
    Case("bulk-terminator-not-crlf", b"*1\r\n$4\r\nPINGxx", "reply", PONG),
    Case("header-cr-without-lf", b"*1\rX$4\r\nPING\r\n", "reply", PONG),
    # CR without LF inside an inline request separates arguments (isspace), as in sdssplitargs.
    Case("inline-cr-separates", b"PING\rPING\r\n", "reply", b"$4\r\nPING\r\n"),
    Case(
        "inline-cr-extra-arg",
        b"ECHO a\rb\r\n",
        "reply",
        b"-ERR wrong number of arguments for 'echo' command\r\n",
    ),
    Case("inline-only-crs", b"\r\r\r\nPING\r\n", "reply", PONG),
    # NUL bytes: they end an inline line (C string), and are ordinary bytes inside a bulk.
    Case("inline-nul-ends-line", b"PING\x00garbage\r\n", "reply", PONG),
    Case("inline-nul-first", b"\x00PING\r\nPING\r\n", "reply", PONG),
    Case("inline-nul-in-arg", b"ECHO a\x00b\r\n", "reply", b"$1\r\na\r\n"),
    Case("bulk-nul-in-arg", resp(b"ECHO", b"a\x00b"), "reply", b"$3\r\na\x00b\r\n"),
    Case(
        "bulk-crlf-in-arg",
        resp(b"ECHO", b"\r\n*1\r\n$4\r\nPING\r\n"),
        "reply",
        b"$16\r\n\r\n*1\r\n$4\r\nPING\r\n\r\n",
    ),
    Case(
        "bulk-all-bytes", resp(b"ECHO", bytes(range(256))), "reply", b"$256\r\n" + bytes(range(256)) + b"\r\n"
    ),
    # truncated frames: the server waits (and must not allocate what a header announces)
    Case("trunc-star", b"*", "wait"),
    Case("trunc-count", b"*1", "wait"),
    Case("trunc-count-cr", b"*1\r", "wait"),
    Case("trunc-after-count", b"*1\r\n", "wait"),
    Case("trunc-dollar", b"*1\r\n$", "wait"),
    Case("trunc-bulk-len", b"*1\r\n$4", "wait"),
    Case("trunc-bulk-len-cr", b"*1\r\n$4\r", "wait"),
    Case("trunc-before-payload", b"*1\r\n$4\r\n", "wait"),
    Case("trunc-mid-payload", b"*1\r\n$4\r\nPI", "wait"),
    Case("trunc-before-crlf", b"*1\r\n$4\r\nPING", "wait"),
    Case("trunc-before-lf", b"*1\r\n$4\r\nPING\r", "wait"),
    Case("trunc-mid-command", resp(b"QPRODUCE", b"hostile_q", b"ITEMS", b"x")[:-9], "wait"),
    Case("trunc-inline", b"PING", "wait"),
    Case("trunc-inline-cr", b"PING\r", "wait"),
    Case("trunc-inline-quote", b'ECHO "abc', "wait"),
    Case("trunc-lf-without-cr-header", b"*1\r\n\n", "wait"),  # no "\r" yet: the header is incomplete
    Case("huge-count-int-max", b"*2147483647\r\n", "wait"),
    Case("huge-count-int-max-with-arg", b"*2147483647\r\n$4\r\nPING\r\n", "wait"),
    Case("bulk-at-max-no-payload", b"*1\r\n$%d\r\n" % DEFAULT_MAX_BULK, "wait"),
    Case("bulk-at-max-partial-payload", b"*1\r\n$%d\r\n" % DEFAULT_MAX_BULK + b"x" * 1000, "wait"),
]

SECURED_CORPUS: list[Case] = [
    _error("unauth-mbulk-11", b"*11\r\n", b"-ERR Protocol error: unauthenticated multibulk length\r\n"),
    _error(
        "unauth-mbulk-int-max",
        b"*2147483647\r\n",
        b"-ERR Protocol error: unauthenticated multibulk length\r\n",
    ),
    _error("unauth-bulk-16385", b"*1\r\n$16385\r\n", b"-ERR Protocol error: unauthenticated bulk length\r\n"),
    _error(
        "unauth-bulk-in-auth",
        b"*2\r\n$4\r\nAUTH\r\n$100000\r\n",
        b"-ERR Protocol error: unauthenticated bulk length\r\n",
    ),
    # over max-bulk-bytes is checked first, as Redis checks proto-max-bulk-len first
    _error("unauth-bulk-int-max", b"*1\r\n$2147483647\r\n", INVALID_BULK),
    _error("unauth-inline-too-big", b"A" * BIG, TOO_BIG_INLINE),
    _error("unauth-mbulk-alpha", b"*x\r\n", INVALID_MULTIBULK),
    Case("unauth-ping", b"PING\r\n", "reply", NOAUTH),
    Case("unauth-10-args-inclusive", resp(b"PING", *[b"a"] * 9), "reply", NOAUTH),
    Case("unauth-bulk-16384-inclusive", resp(b"ECHO", b"x" * 16384), "reply", NOAUTH),
    Case(
        "unauth-wrong-password",
        resp(b"AUTH", b"nope"),
        "reply",
        b"-WRONGPASS invalid username-password pair or user is disabled.\r\n",
    ),
    Case("unauth-trunc-10-args", b"*10\r\n$4\r\nPING\r\n", "wait"),
]


def _check_case(port: int, case: Case, secured_password: bytes | None = None) -> None:
    with connect(port) as sock:
        sock.sendall(case.payload)
        if case.expect == "error":
            assert recv_exact(sock, len(case.reply)) == case.reply
            assert closed_by_server(sock), "no close after a protocol error"
        elif case.expect == "prefix":
            line = recv_line(sock)
            assert line.startswith(case.reply), line
            assert closed_by_server(sock), "no close after a protocol error"
        elif case.expect == "reply":
            assert recv_exact(sock, len(case.reply)) == case.reply
            # Nothing else came with it, and the connection still serves.
            sock.sendall(b"PING\r\n")
            expected = NOAUTH if secured_password is not None else PONG
            assert recv_exact(sock, len(expected)) == expected
        elif case.expect == "wait":
            got = silent_for(sock, WAIT_WINDOW)
            assert got is None, f"expected the server to wait for the rest of the frame, got {got!r}"
        else:  # pragma: no cover - a typo in the table
            raise AssertionError(case.expect)


@pytest.mark.parametrize("case", CORPUS, ids=[c.name for c in CORPUS])
def test_malformed_resp_corpus(srv: ServerProcess, case: Case) -> None:
    _check_case(srv.port, case)
    assert alive(srv)


@pytest.mark.parametrize("case", SECURED_CORPUS, ids=[c.name for c in SECURED_CORPUS])
def test_malformed_resp_unauthenticated(secured: ServerProcess, case: Case) -> None:
    _check_case(secured.port, case, secured_password=b"s3cret")
    assert alive(secured)


TRUNCATED = [c for c in CORPUS if c.expect == "wait"]


def test_truncated_frames_then_half_close_or_reset(srv: ServerProcess) -> None:
    """Every truncated frame, twice more: the client half-closes (the server must close its side, not wait
    for the rest forever), or resets the connection mid-frame. Run side by side to keep the test short."""
    half_closed, reset = [], []
    for case in TRUNCATED:
        a, b = connect(srv.port), connect(srv.port)
        a.sendall(case.payload)
        b.sendall(case.payload)
        a.shutdown(socket.SHUT_WR)
        half_closed.append((case, a))
        reset.append(b)
    try:
        for case, sock in half_closed:
            assert closed_by_server(sock, 3.0), f"{case.name}: no close after the client's EOF"
    finally:
        for _, sock in half_closed:
            sock.close()
        for sock in reset:
            reset_close(sock)
    assert ping_ok(srv.port)
    assert alive(srv)


def test_binary_garbage(srv: ServerProcess) -> None:
    """Seeded random byte strings, each on its own connection: whatever the server answers is one or more
    error lines; after a protocol error it closes; it never crashes."""
    rng = random.Random(0xBAD)
    blobs: list[bytes] = []
    for i in range(60):
        size = rng.choice([1, 2, 7, 64, 300, 4096])
        blob = rng.randbytes(size)
        if i % 3 == 1:
            blob = b"*" + blob  # steer some of them into the multibulk parser
        elif i % 3 == 2:
            blob = b"*2\r\n$" + blob
        blobs.append(blob)
    socks = []
    for blob in blobs:
        sock = connect(srv.port)
        sock.sendall(blob)
        socks.append((blob, sock))
    try:
        for blob, sock in socks:
            sock.shutdown(socket.SHUT_WR)
            sock.settimeout(3.0)
            received = b""
            try:
                while chunk := sock.recv(65536):
                    received += chunk
            except ConnectionResetError:
                pass
            except TimeoutError:
                raise AssertionError(f"server kept {blob[:40]!r}... open after EOF") from None
            assert INTERNAL_ERROR not in received, received
            if received:
                # Only error replies: a garbage line is an unknown command or a protocol error.
                for line in received.split(b"\r\n")[:-1]:
                    assert line.startswith(b"-"), (blob[:60], received[:200])
    finally:
        for _, sock in socks:
            sock.close()
    assert ping_ok(srv.port)
    assert alive(srv)


def test_binary_payload_round_trip(srv: ServerProcess) -> None:
    """Payloads that look like protocol (CRLF, RESP headers, NUL, every byte value) are data, not frames."""
    payloads = [
        bytes(range(256)),
        b"\r\n*1\r\n$4\r\nQUIT\r\n",
        b"\x00" * 100,
        b"-ERR Protocol error: fake\r\n",
        b"",
    ]
    with connect(srv.port) as sock:
        sock.sendall(resp(b"QCREATE", b"hostile_binary"))
        assert recv_line(sock) == b"+OK\r\n"
        sock.sendall(resp(b"QPRODUCE", b"hostile_binary", b"ITEMS", *payloads))
        assert recv_line(sock) == b"*%d\r\n" % len(payloads)
        for _ in payloads:
            recv_line(sock)
            recv_line(sock)
        for payload in payloads:
            sock.sendall(resp(b"QLEASE", b"hostile_binary"))
            assert recv_line(sock) == b"*1\r\n"
            assert recv_line(sock) == b"*7\r\n"
            id_len = int(recv_line(sock)[1:])
            recv_exact(sock, id_len + 2)
            assert recv_line(sock) == b"$%d\r\n" % len(payload)
            assert recv_exact(sock, len(payload) + 2) == payload + b"\r\n"
            for _ in range(5):  # attempts, deadline, kind, reference, encoding
                line = recv_line(sock)
                if line.startswith(b"$"):
                    recv_exact(sock, int(line[1:]) + 2)


def test_server_healthy_after_corpus(srv: ServerProcess) -> None:
    """After everything above was thrown at it: the same server answers PING and logged no Traceback."""
    assert alive(srv)
    assert ping_ok(srv.port)
    found = tracebacks(srv)
    assert not found, found[0]


def test_secured_server_healthy_after_corpus(secured: ServerProcess) -> None:
    assert alive(secured)
    with connect(secured.port) as sock:
        sock.sendall(b"AUTH s3cret\r\nPING\r\n")
        assert recv_exact(sock, 12) == b"+OK\r\n" + PONG
    found = tracebacks(secured)
    assert not found, found[0]


# -- hostile argument values ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def values_srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A separate server: some of these cases hit known bugs that log a Traceback, which would otherwise
    spoil the corpus server's clean-log check."""
    proc = ServerProcess(tmp_path_factory.mktemp("hostile-values") / "data", backend="memory").start()
    yield proc
    proc.kill()


def _read_reply(sock: socket.socket) -> bytes:
    """One whole RESP reply, raw (enough RESP2 for these cases)."""
    line = recv_line(sock)
    kind = line[:1]
    if kind in (b"$",):
        n = int(line[1:-2])
        return line + (recv_exact(sock, n + 2) if n >= 0 else b"")
    if kind == b"*":
        n = int(line[1:-2])
        return line + b"".join(_read_reply(sock) for _ in range(max(n, 0)))
    return line


def _lease_one(sock: socket.socket, queue: bytes) -> bytes:
    sock.sendall(resp(b"QPRODUCE", queue, b"ITEMS", b"x"))
    _read_reply(sock)
    sock.sendall(resp(b"QLEASE", queue))
    reply = _read_reply(sock)
    match = re.search(rb"\*7\r\n\$\d+\r\n([^\r]+)\r\n", reply)
    assert match, reply
    return match.group(1)


# The values server is in-memory and otherwise idle: its replies take milliseconds.
VALUE_REPLY_TIMEOUT = 1.0
_BIG_FIELD = b"k" * 65_536  # one byte over the 16-bit length field of the item record; under max-bulk-bytes

# (id, command builder taking the queue name and a leased id, xfail reason or None)
VALUE_CASES = [
    ("produce-at-int64-max", lambda q, i: resp(b"QPRODUCE", q, b"AT", INT64_MAX, b"ITEMS", b"a"), None),
    ("lease-block-int64-max", lambda q, i: resp(b"QLEASE", q, b"BLOCK", INT64_MAX), None),  # out of range
    ("lease-block-100-years-then-data", None, None),  # special-cased below
    ("create-expire-int64-max", lambda q, i: resp(b"QCREATE", q + b"_e", b"EXPIRE-TIMEOUT", INT64_MAX), None),
    ("create-partitions-int64-max", lambda q, i: resp(b"QCREATE", q + b"_p", b"PARTITIONS", INT64_MAX), None),
    ("create-partitions-negative", lambda q, i: resp(b"QCREATE", q + b"_n", b"PARTITIONS", b"-1"), None),
    ("create-lease-timeout-zero", lambda q, i: resp(b"QCREATE", q + b"_z", b"LEASE-TIMEOUT", b"0"), None),
    ("create-name-513-bytes", lambda q, i: resp(b"QCREATE", b"n" * 513), None),
    ("create-name-nul", lambda q, i: resp(b"QCREATE", b"a\x00b"), None),
    ("create-name-0xff", lambda q, i: resp(b"QCREATE", b"\xff\xfe"), None),
    ("create-reference-1MiB", lambda q, i: resp(b"QCREATE", q + b"_r", b"REFERENCE", b"r" * (1 << 20)), None),
    ("lease-count-1001", lambda q, i: resp(b"QLEASE", q, b"COUNT", b"1001"), None),
    ("lease-count-int64-overflow", lambda q, i: resp(b"QLEASE", q, b"COUNT", b"9223372036854775808"), None),
    ("lease-block-negative", lambda q, i: resp(b"QLEASE", q, b"BLOCK", b"-1"), None),
    ("produce-delay-negative", lambda q, i: resp(b"QPRODUCE", q, b"DELAY", b"-1", b"ITEMS", b"a"), None),
    ("produce-1001-items", lambda q, i: resp(b"QPRODUCE", q, b"ITEMS", *[b"i"] * 1001), None),
    ("produce-item-over-1MiB", lambda q, i: resp(b"QPRODUCE", q, b"ITEMS", b"p" * ((1 << 20) + 1)), None),
    ("complete-1001-ids", lambda q, i: resp(b"QCOMPLETE", q, *[i] * 1001), None),
    (
        "complete-garbage-ids",
        lambda q, i: resp(b"QCOMPLETE", q, b"", b"-", b"1-0-" + INT64_MAX * 3, b"\xff"),
        None,
    ),
    ("extend-for-int64-max", lambda q, i: resp(b"QEXTEND", q, b"FOR", INT64_MAX, i), None),
    ("retry-at-int64-max", lambda q, i: resp(b"QRETRY", q, b"AT", INT64_MAX, i), None),
    ("items-partition-int64-max", lambda q, i: resp(b"QITEMS", q, b"PARTITION", INT64_MAX), None),
    ("items-after-garbage", lambda q, i: resp(b"QITEMS", q, b"AFTER", b"\x00\xff" * 100), None),
    ("list-limit-int64-max", lambda q, i: resp(b"QLIST", b"LIMIT", INT64_MAX), None),
    ("hello-huge-version", lambda q, i: resp(b"HELLO", b"3" * 5000), None),
    ("client-setname-newline", lambda q, i: resp(b"CLIENT", b"SETNAME", b"a\r\nb"), None),
    ("select-int64-overflow", lambda q, i: resp(b"SELECT", b"99999999999999999999"), None),
    (
        "produce-delay-int64-max",
        lambda q, i: resp(b"QPRODUCE", q, b"DELAY", INT64_MAX, b"ITEMS", b"a"),
        None,
    ),
    (
        "retry-delay-int64-max",
        lambda q, i: resp(b"QRETRY", q, b"DELAY", INT64_MAX, i),
        None,
    ),
    (
        "produce-kind-64KiB",
        lambda q, i: resp(b"QPRODUCE", q, b"KIND", _BIG_FIELD, b"ITEMS", b"a"),
        None,
    ),
    (
        "produce-reference-64KiB",
        lambda q, i: resp(b"QPRODUCE", q, b"REFERENCE", _BIG_FIELD, b"ITEMS", b"a"),
        None,
    ),
    (
        "produce-encoding-64KiB",
        lambda q, i: resp(b"QPRODUCE", q, b"ENCODING", _BIG_FIELD, b"ITEMS", b"a"),
        None,
    ),
]


def _value_params() -> list[object]:
    params = []
    for name, build, bug in VALUE_CASES:
        marks = [pytest.mark.xfail(strict=True, reason=bug)] if bug else []
        params.append(pytest.param(name, build, id=name, marks=marks))
    return params


@pytest.mark.parametrize(("name", "build"), _value_params())
def test_hostile_values_get_a_reply(values_srv: ServerProcess, name: str, build: object) -> None:
    """Extreme but well-formed arguments: each gets a reply within a second (a value or an `-ERR` naming the
    problem, never `-ERR internal error`), the connection keeps serving, and the server logs no Traceback."""
    queue = b"hv_" + name.replace("-", "_").encode()
    before = len(tracebacks(values_srv))
    with connect(values_srv.port, timeout=VALUE_REPLY_TIMEOUT) as sock:
        sock.sendall(resp(b"QCREATE", queue))
        assert _read_reply(sock) == b"+OK\r\n"
        leased = _lease_one(sock, queue)
        if (
            build is None
        ):  # BLOCK for the longest allowed (100 years): waits, then is served when an item arrives
            sock.sendall(resp(b"QLEASE", queue, b"BLOCK", b"3155760000000"))
            assert silent_for(sock, WAIT_WINDOW) is None
            with connect(values_srv.port, timeout=VALUE_REPLY_TIMEOUT) as other:
                other.sendall(resp(b"QPRODUCE", queue, b"ITEMS", b"wake"))
                _read_reply(other)
            sock.settimeout(VALUE_REPLY_TIMEOUT)
            reply = _read_reply(sock)
            assert b"wake" in reply, reply
        else:
            sock.sendall(build(queue, leased))  # type: ignore[operator]
            try:
                reply = _read_reply(sock)
            except TimeoutError:
                raise AssertionError(f"{name}: no reply within {VALUE_REPLY_TIMEOUT} s") from None
            assert INTERNAL_ERROR not in reply, reply
        sock.sendall(b"PING\r\n")
        assert recv_exact(sock, len(PONG)) == PONG
    assert alive(values_srv)
    new = tracebacks(values_srv)[before:]
    assert not new, new[0]


def test_one_bad_command_does_not_starve_its_batch(values_srv: ServerProcess) -> None:
    """An innocent QPRODUCE pipelined just before a hostile one lands in the same partition batch (both are
    small, so they arrive in one read and are submitted before the partition runs); it must still be
    answered (the hostile one may fail with an -ERR)."""
    queue = b"hv_batch"
    with connect(values_srv.port, timeout=VALUE_REPLY_TIMEOUT) as sock:
        sock.sendall(resp(b"QCREATE", queue))
        assert _read_reply(sock) == b"+OK\r\n"
        sock.sendall(
            resp(b"QPRODUCE", queue, b"ITEMS", b"innocent")
            + resp(b"QPRODUCE", queue, b"DELAY", INT64_MAX, b"ITEMS", b"a")
        )
        try:
            first = _read_reply(sock)
        except TimeoutError:
            raise AssertionError(
                f"the innocent QPRODUCE got no reply within {VALUE_REPLY_TIMEOUT} s"
            ) from None
        assert first.startswith(b"*1\r\n"), first


# -- the parser in-process: the atheris seed corpus and a quick seeded mutation run ------------------------

PARSER_CORPUS = Path(__file__).parent / "corpus" / "parser"


def test_parser_corpus_replay() -> None:
    """Every file of the atheris seed corpus through the harness's checks (no atheris needed): only
    ProtocolError escapes, and the commands do not depend on how the bytes were cut into chunks."""
    files = sorted(PARSER_CORPUS.glob("*.resp"))
    assert len(files) >= 100, f"seed corpus missing? {len(files)} files in {PARSER_CORPUS}"
    for path in files:
        try:
            check_input(path.read_bytes())
        except AssertionError as exc:
            raise AssertionError(f"{path.name}: {exc}") from None


def test_parser_in_process_mutations() -> None:
    """The socket fuzzer's mutations (below), 3,000 of them, straight into the parser under every flag
    combination of the atheris harness (authenticated or not, small bulk and query-buffer limits)."""
    rng = random.Random(7)
    seeds = _seed_commands()
    for i in range(3000):
        data = mutate(rng, seeds)
        if rng.random() < 0.3:
            data += mutate(rng, seeds)  # a pipeline of two
        check_input(bytes([i % 8, rng.randrange(256)]) + data)


# -- (b) mutation fuzzing over real sockets ------------------------------------------------------------------


def _seed_commands() -> list[bytes]:
    commands: list[list[bytes]] = [
        [b"PING"],
        [b"PING", b"hello"],
        [b"ECHO", b"hello world"],
        [b"ECHO", bytes(range(32))],
        [b"QCREATE", b"fz"],
        [b"QCREATE", b"fz2", b"PARTITIONS", b"2", b"LEASE-TIMEOUT", b"1000", b"MAX-ATTEMPTS", b"3"],
        [b"QPRODUCE", b"fz", b"ITEMS", b"a", b"b", b"c"],
        [b"QPRODUCE", b"fz", b"KIND", b"k", b"REFERENCE", b"r", b"ENCODING", b"json", b"ITEMS", b'{"x": 1}'],
        [b"QPRODUCE", b"fz2", b"DELAY", b"50", b"ITEMS", b"later"],
        [b"QPRODUCE", b"fz", b"ITEMS", b"p" * 200],
        [b"QLEASE", b"fz"],
        [b"QLEASE", b"fz", b"COUNT", b"3"],
        [b"QLEASE", b"fz2", b"COUNT", b"2", b"BLOCK", b"20"],
        [b"QCOMPLETE", b"fz", b"1-0-1", b"1-0-2"],
        [b"QRETRY", b"fz", b"DELAY", b"10", b"1-0-3"],
        [b"QEXTEND", b"fz", b"FOR", b"1000", b"1-0-4"],
        [b"QLEN", b"fz"],
        [b"QSTATS", b"fz2"],
        [b"HELLO", b"3"],
        [b"HELLO", b"2", b"SETNAME", b"fuzzer"],
        [b"CLIENT", b"SETNAME", b"fuzzer"],
        [b"CLIENT", b"GETNAME"],
    ]
    seeds = [resp(*c) for c in commands]
    seeds += [b" ".join(c) + b"\r\n" for c in commands if all(b" " not in a and a.isascii() for a in c)]
    seeds += [b"ECHO \"quoted \\x41\\n\" 'single'\r\n", b"*0\r\n", b"\r\n"]
    return seeds


_TOKENS = [
    b"\r\n",
    b"\r",
    b"\n",
    b"*",
    b"$",
    b"-1",
    b"0",
    b"\x00",
    b'"',
    b"'",
    b"\\",
    b" ",
    b"\xff",
    b"2147483647",
    b"2147483648",
    INT64_MAX,
    b"-9223372036854775808",
    b"*1\r\n",
    b"$0\r\n",
    b"*2\r\n$4\r\n",
]


def mutate(rng: random.Random, seeds: list[bytes]) -> bytes:
    """1-4 random edits of a seed: bit flips, byte sets, insertions (random bytes or protocol tokens),
    deletions, truncations, splices with another seed, duplications."""
    data = bytearray(rng.choice(seeds))
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(7)
        n = len(data)
        if op == 0 and n:
            data[rng.randrange(n)] ^= 1 << rng.randrange(8)
        elif op == 1 and n:
            data[rng.randrange(n)] = rng.randrange(256)
        elif op == 2:
            token = rng.choice(_TOKENS) if rng.random() < 0.5 else rng.randbytes(rng.randint(1, 4))
            pos = rng.randint(0, n)
            data[pos:pos] = token
        elif op == 3 and n:
            pos = rng.randrange(n)
            del data[pos : pos + rng.randint(1, 8)]
        elif op == 4 and n:
            del data[rng.randrange(n) :]
        elif op == 5:
            other = rng.choice(seeds)
            data = data[: rng.randint(0, n)] + other[rng.randint(0, len(other)) :]
        elif op == 6 and n:
            pos = rng.randrange(n)
            piece = data[pos : pos + rng.randint(1, 16)]
            data[pos:pos] = piece * rng.randint(1, 3)
    return bytes(data)


@dataclass
class FuzzStats:
    inputs: int = 0
    internal_errors: list[bytes] = field(default_factory=list)
    not_closed_after_eof: list[bytes] = field(default_factory=list)
    connect_failures: int = 0
    bytes_received: int = 0


async def _fuzz_one(port: int, data: bytes, rng: random.Random, stats: FuzzStats) -> None:
    # Split the input into 1-3 writes so frames also arrive cut at random places.
    cuts = sorted(rng.sample(range(1, len(data)), k=min(len(data) - 1, rng.randint(0, 2)))) if data else []
    pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
    wait_for_reply = rng.random() < 0.5
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), 5.0)
    except (OSError, TimeoutError):
        stats.connect_failures += 1
        return
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    received = bytearray()
    try:
        for i, piece in enumerate(pieces):
            if i:
                await asyncio.sleep(0.002)
            writer.write(piece)
            await writer.drain()
        if wait_for_reply:
            # Give the commands time to be answered (including those that wait for a commit).
            try:
                while chunk := await asyncio.wait_for(reader.read(65536), 0.05):
                    received += chunk
            except TimeoutError:
                pass
        if not reader.at_eof():
            writer.write_eof()
        # After our EOF the server must finish and close; 3 s is far more than it needs.
        deadline = time.monotonic() + 3.0
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                stats.not_closed_after_eof.append(data)
                break
            try:
                chunk = await asyncio.wait_for(reader.read(65536), left)
            except TimeoutError:
                continue
            if not chunk:
                break
            received += chunk
    except (ConnectionError, OSError):
        pass  # the server closed on a protocol error while we were still writing: fine
    finally:
        writer.close()
    stats.bytes_received += len(received)
    if INTERNAL_ERROR in received:
        stats.internal_errors.append(data)


async def _ping_async(port: int, timeout: float) -> float:
    started = time.monotonic()
    reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), timeout)
    try:
        writer.write(b"PING\r\n")
        reply = await asyncio.wait_for(reader.readexactly(len(PONG)), timeout)
        assert reply == PONG, reply
    finally:
        writer.close()
    return time.monotonic() - started


# The fuzzer's own data is small (under ~2 MB of items and queues); what remains is allocator noise and
# the Python objects of ~100 connections per batch, freed after each. A leak per input of even 10 KB over
# 5,000 inputs (50 MB) would show; 64 MB is well above the legitimate growth and well below a leak of
# anything per connection.
RSS_GROWTH_LIMIT = 64 * 1024 * 1024


def test_mutation_fuzz_over_sockets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    total = 20_000 if SLOW else 5_000
    batch_size = 100
    seed = int(os.environ.get("QUERATOR_FUZZ_SEED", "20261127"))
    rng = random.Random(seed)
    seeds = _seed_commands()
    server = ServerProcess(tmp_path / "data", durability="flush").start()
    stats = FuzzStats()
    ping_worst = 0.0
    crashes = 0
    try:
        assert ping_ok(server.port)
        assert server.proc is not None
        pid = server.proc.pid
        rss_before = rss_bytes(pid)

        async def campaign() -> float:
            worst = 0.0
            started = time.monotonic()
            while stats.inputs < total:
                assert time.monotonic() - started < (240 if SLOW else 75), "fuzzing took too long"
                batch = [mutate(rng, seeds) for _ in range(min(batch_size, total - stats.inputs))]
                chunk_rngs = [random.Random(rng.random()) for _ in batch]
                await asyncio.gather(
                    *(_fuzz_one(server.port, d, r, stats) for d, r in zip(batch, chunk_rngs, strict=True))
                )
                stats.inputs += len(batch)
                # Between batches: the server still serves a fresh client within 2 s.
                assert alive(server), f"server died after {stats.inputs} inputs"
                try:
                    worst = max(worst, await _ping_async(server.port, 2.0))
                except (OSError, TimeoutError, AssertionError) as exc:
                    code = server.proc.poll() if server.proc is not None else None
                    raise AssertionError(
                        f"PING failed after {stats.inputs} inputs: {exc!r}; server exit code {code}; "
                        f"log tail: {server.read_log()[-2000:]}"
                    ) from exc
                server.read_log()  # drain the stderr pipe so the server can never block on it
            return worst

        ping_worst = asyncio.run(campaign())
        # Every fuzz connection is gone from the client registry (no leaked connection state).
        clients_left = connected_clients_settle(server.port, 1)
        rss_after = rss_bytes(pid)
        growth = rss_after - rss_before
        found = tracebacks(server)
        crashes = int(not alive(server)) + len(found) + len(stats.internal_errors)
        server_stats = info(server.port, "stats")
        with capsys.disabled():
            print(
                f"\n{stats.inputs} fuzzed inputs, {crashes} crashes (seed {seed}); "
                f"{server_stats.get('total_commands_processed')} commands run, "
                f"{server_stats.get('total_error_replies')} protocol errors; "
                f"RSS {rss_before / 2**20:.1f} -> {rss_after / 2**20:.1f} MiB (+{growth / 2**20:.1f} MiB); "
                f"worst PING between batches {ping_worst * 1000:.1f} ms; "
                f"{len(stats.not_closed_after_eof)} not closed after EOF"
            )
        assert alive(server)
        assert clients_left == 1, f"{clients_left - 1} fuzz connections still registered"
        assert not found, found[0]
        assert not stats.internal_errors, f"-ERR internal error for {stats.internal_errors[:3]!r}"
        assert stats.connect_failures == 0
        assert not stats.not_closed_after_eof, stats.not_closed_after_eof[:3]
        assert growth < RSS_GROWTH_LIMIT, f"RSS grew by {growth / 2**20:.1f} MiB"
        assert ping_ok(server.port)
    finally:
        server.kill()
