"""The wire contract on raw sockets (SPEC section 2): exact reply bytes for protocol errors, generic errors,
inline and pipelined requests, unauthenticated limits, the client limit, a client that does not read its
replies, and a clean stop on SIGTERM / SIGINT."""

from __future__ import annotations

import re
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import INVALID_BULK, INVALID_MULTIBULK, PONG, ServerProcess, connect, recv_exact, request

NOAUTH = b"-NOAUTH Authentication required.\r\n"


# -- helpers -------------------------------------------------------------------------------------------------


def assert_closed(sock: socket.socket) -> None:
    """The server closes the connection: recv returns b'' (a timeout means it stayed open)."""
    assert sock.recv(65536) == b""


def expect_then_close(port: int, payload: bytes, expected: bytes) -> None:
    with connect(port) as sock:
        sock.sendall(payload)
        assert recv_exact(sock, len(expected)) == expected
        assert_closed(sock)


def assert_alive(port: int) -> None:
    with connect(port) as sock:
        request(sock, b"PING\r\n", PONG)


class Err(str):
    """An error reply read by RespReader."""


class RespReader:
    """Just enough of a RESP2/RESP3 reply reader to check values whose exact bytes are not fixed."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed; unread {self.buf!r}")
        self.buf += chunk

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            self._fill()
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def _exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def reply(self) -> Any:
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            return Err(rest.decode())
        if kind == b":":
            return int(rest)
        if kind in (b"$", b"="):
            n = int(rest)
            if n < 0:
                return None
            data = self._exact(n + 2)[:-2]
            return data[4:] if kind == b"=" else data
        if kind == b"_":
            return None
        if kind in (b"*", b">", b"~"):
            n = int(rest)
            return None if n < 0 else [self.reply() for _ in range(n)]
        if kind == b"%":
            return {self.reply(): self.reply() for _ in range(int(rest))}
        if kind == b"#":
            return rest == b"t"
        raise AssertionError(f"unexpected reply line {line!r}")


# -- fixtures ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("proto") / "data").start()
    yield proc
    proc.kill()


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("proto-auth") / "data", "--requirepass", "secret").start()
    yield proc
    proc.kill()


# -- protocol errors: reply, close, the server carries on ----------------------------------------------------

PROTOCOL_ERRORS = [
    pytest.param(b"*abc\r\n", INVALID_MULTIBULK, id="multibulk-not-a-number"),
    pytest.param(b"*01\r\n", INVALID_MULTIBULK, id="multibulk-leading-zero"),
    pytest.param(b"*+1\r\n", INVALID_MULTIBULK, id="multibulk-plus-sign"),
    pytest.param(b"*\r\n", INVALID_MULTIBULK, id="multibulk-empty"),
    pytest.param(b"*2147483648\r\n", INVALID_MULTIBULK, id="multibulk-over-int-max"),
    pytest.param(b"*1\r\n$-7\r\n", INVALID_BULK, id="bulk-negative"),
    pytest.param(b"*1\r\n$-1\r\n", INVALID_BULK, id="bulk-minus-one"),
    pytest.param(b"*1\r\n$2147483648\r\n", INVALID_BULK, id="bulk-2GiB-without-payload"),
    pytest.param(b"*1\r\n$abc\r\n", INVALID_BULK, id="bulk-not-a-number"),
    pytest.param(b"*2\r\n$4\r\nECHO\r\n$\r\n", INVALID_BULK, id="bulk-empty-length"),
    pytest.param(b"*1\r\nxyz\r\n", b"-ERR Protocol error: expected '$', got 'x'\r\n", id="expected-dollar"),
    pytest.param(
        b"*2\r\n$4\r\nECHO\r\n:5\r\n",
        b"-ERR Protocol error: expected '$', got ':'\r\n",
        id="expected-dollar-2nd",
    ),
    pytest.param(
        b'"abc\r\n', b"-ERR Protocol error: unbalanced quotes in request\r\n", id="unbalanced-double"
    ),
    pytest.param(
        b"ECHO 'abc\r\n", b"-ERR Protocol error: unbalanced quotes in request\r\n", id="unbalanced-single"
    ),
    pytest.param(
        b'ECHO "a"b\r\n', b"-ERR Protocol error: unbalanced quotes in request\r\n", id="quote-then-non-space"
    ),
    pytest.param(
        b"A" * 70_000, b"-ERR Protocol error: too big inline request\r\n", id="inline-70KB-no-newline"
    ),
    pytest.param(
        b"*" + b"1" * 70_000, b"-ERR Protocol error: too big mbulk count string\r\n", id="mbulk-count-70KB"
    ),
    pytest.param(
        b"*1\r\n$" + b"1" * 70_000,
        b"-ERR Protocol error: too big bulk count string\r\n",
        id="bulk-count-70KB",
    ),
]


@pytest.mark.parametrize(("payload", "expected"), PROTOCOL_ERRORS)
def test_protocol_error_replies_then_closes(srv: ServerProcess, payload: bytes, expected: bytes) -> None:
    expect_then_close(srv.port, payload, expected)
    assert_alive(srv.port)


def test_huge_bulk_length_answered_without_payload(srv: ServerProcess) -> None:
    # The header alone must be rejected at once: the server may not wait for (or buffer) 2 GiB.
    with connect(srv.port, timeout=2.0) as sock:
        started = time.monotonic()
        sock.sendall(b"*1\r\n$2147483648\r\n")
        assert recv_exact(sock, len(INVALID_BULK)) == INVALID_BULK
        assert_closed(sock)
        assert time.monotonic() - started < 2.0
    assert_alive(srv.port)


def test_bulk_over_configured_max_is_invalid(srv: ServerProcess) -> None:
    with connect(srv.port) as sock:
        sock.sendall(b"CONFIG GET proto-max-bulk-len\r\n")
        reply = RespReader(sock).reply()
        limit = int(reply[1])
    expect_then_close(srv.port, b"*2\r\n$4\r\nECHO\r\n$%d\r\n" % (limit + 1), INVALID_BULK)
    assert_alive(srv.port)


def test_pipelined_valid_commands_answered_before_protocol_error(srv: ServerProcess) -> None:
    payload = (
        b"PING\r\nECHO hi\r\n*2\r\n$4\r\nECHO\r\n$2\r\nyo\r\n"  # inline and multibulk
        b"*abc\r\n"  # the bad bytes
        b"PING\r\n"  # never read
    )
    expected = b"+PONG\r\n$2\r\nhi\r\n$2\r\nyo\r\n" + INVALID_MULTIBULK
    expect_then_close(srv.port, payload, expected)


def test_deferred_replies_precede_protocol_error_and_later_commands_do_not_run(srv: ServerProcess) -> None:
    # Queue commands wait for a group commit (fsync); their replies still come first, in order.
    with connect(srv.port) as sock:
        sock.sendall(
            b"QCREATE proto_pipe_q\r\nQPRODUCE proto_pipe_q ITEMS a b\r\nPING\r\n"
            b'"unbalanced\r\nQCREATE proto_pipe_never\r\n'
        )
        reader = RespReader(sock)
        assert reader.reply() == "OK"
        ids = reader.reply()
        assert isinstance(ids, list) and len(ids) == 2
        assert reader.reply() == "PONG"
        assert reader.reply() == Err("ERR Protocol error: unbalanced quotes in request")
        assert reader.buf == b""
        assert_closed(sock)
    with connect(srv.port) as sock:
        sock.sendall(b"QINFO proto_pipe_never\r\n")
        reply = RespReader(sock).reply()
        assert isinstance(reply, Err) and reply.startswith("NOQUEUE"), reply


def test_pipelined_commands_see_earlier_writes(srv: ServerProcess) -> None:
    # Redis runs a connection's pipelined commands one after the other; a later read sees earlier writes.
    with connect(srv.port) as sock:
        sock.sendall(
            b"QCREATE proto_rw_q\r\nQPRODUCE proto_rw_q ITEMS a b\r\nQLEN proto_rw_q\r\n"
            b"QLEASE proto_rw_q\r\nQLEN proto_rw_q\r\n"
        )
        reader = RespReader(sock)
        assert reader.reply() == "OK"
        ids = reader.reply()
        assert isinstance(ids, list) and len(ids) == 2
        replies = [reader.reply() for _ in range(3)]
        assert replies[0] == 2, f"QLEN right after QPRODUCE: {replies[0]!r}"
        assert len(replies[1]) == 1 and replies[1][0][:2] == [ids[0], b"a"], f"QLEASE: {replies[1]!r}"
        assert replies[2] == 1


# -- generic errors keep the connection open -----------------------------------------------------------------


def test_unknown_command_exact_text(srv: ServerProcess) -> None:
    with connect(srv.port) as sock:
        request(sock, b"FOO a b\r\n", b"-ERR unknown command 'FOO', with args beginning with: 'a' 'b' \r\n")
        request(
            sock,
            b"*3\r\n$3\r\nfoo\r\n$1\r\na\r\n$1\r\nb\r\n",
            b"-ERR unknown command 'foo', with args beginning with: 'a' 'b' \r\n",
        )
        request(sock, b"FOO\r\n", b"-ERR unknown command 'FOO', with args beginning with: \r\n")
        request(sock, b"*1\r\n$0\r\n\r\n", b"-ERR unknown command '', with args beginning with: \r\n")
        # Newlines inside arguments become spaces so the error stays one line.
        request(
            sock,
            b"*2\r\n$3\r\nFOO\r\n$4\r\nx\r\ny\r\n",
            b"-ERR unknown command 'FOO', with args beginning with: 'x  y' \r\n",
        )
        request(sock, b"PING\r\n", PONG)


def test_unknown_command_long_name_truncated_to_128(srv: ServerProcess) -> None:
    name = b"Z" * 300
    with connect(srv.port) as sock:
        request(
            sock,
            name + b" a\r\n",
            b"-ERR unknown command '" + b"Z" * 128 + b"', with args beginning with: 'a' \r\n",
        )
        request(sock, b"PING\r\n", PONG)


def test_unknown_command_args_limited_like_redis(srv: ServerProcess) -> None:
    # Redis (server.c commandCheckExistence): for (i=1; i<argc && sdslen(args)<128; i++)
    #     args = sdscatprintf(args, "'%.*s' ", 128-(int)sdslen(args), argv[i]);
    a, b, c = b"a" * 100, b"b" * 100, b"c" * 100
    # First argument: "'" + 100 a + "' " = 103 chars; second is cut to 128 - 103 = 25 chars; then stop.
    expected = b"-ERR unknown command 'FOO', with args beginning with: '" + a + b"' '" + b"b" * 25 + b"' \r\n"
    with connect(srv.port) as sock:
        sock.sendall(b"FOO " + a + b" " + b + b" " + c + b"\r\nPING\r\n")
        reply = RespReader(sock).reply()
        assert b"-" + reply.encode() + b"\r\n" == expected


def test_wrong_arity_exact_text(srv: ServerProcess) -> None:
    with connect(srv.port) as sock:
        request(sock, b"*1\r\n$6\r\nqlease\r\n", b"-ERR wrong number of arguments for 'qlease' command\r\n")
        request(sock, b"QLEASE\r\n", b"-ERR wrong number of arguments for 'qlease' command\r\n")
        request(sock, b"ECHO\r\n", b"-ERR wrong number of arguments for 'echo' command\r\n")
        request(sock, b"PING a b\r\n", b"-ERR wrong number of arguments for 'ping' command\r\n")
        request(sock, b"CONFIG GET\r\n", b"-ERR wrong number of arguments for 'config|get' command\r\n")
        request(sock, b"SELECT abc\r\n", b"-ERR value is not an integer or out of range\r\n")
        request(sock, b"PING\r\n", PONG)


# -- inline and pipelined requests ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [b"PING\r\n", b"PING\n", b"ping\r\n", b"PiNg\n", b"  PING  \r\n", b"\r\n\nPING\r\n", b"*0\r\nPING\r\n"],
)
def test_inline_ping(srv: ServerProcess, payload: bytes) -> None:
    with connect(srv.port) as sock:
        request(sock, payload, PONG)
        request(sock, b"*1\r\n$4\r\nPING\r\n", PONG)


def test_inline_quoting_like_redis_cli(srv: ServerProcess) -> None:
    with connect(srv.port) as sock:
        request(sock, b'ECHO "hello world"\r\n', b"$11\r\nhello world\r\n")
        request(sock, b'ECHO "a\\x41\\n"\r\n', b"$3\r\naA\n\r\n")
        request(sock, b"ECHO 'it\\'s'\r\n", b"$4\r\nit's\r\n")


def test_twenty_pipelined_pings_in_one_send(srv: ServerProcess) -> None:
    with connect(srv.port) as sock:
        request(sock, b"PING\r\n" * 20, PONG * 20)
        payload = b"".join(b"*2\r\n$4\r\nPING\r\n$%d\r\n%d\r\n" % (len(str(i)), i) for i in range(20))
        expected = b"".join(b"$%d\r\n%d\r\n" % (len(str(i)), i) for i in range(20))
        request(sock, payload, expected)


def test_multibulk_one_byte_at_a_time(srv: ServerProcess) -> None:
    with connect(srv.port) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for byte in b"*2\r\n$4\r\nECHO\r\n$5\r\nhello\r\n":
            sock.sendall(bytes([byte]))
        assert recv_exact(sock, 11) == b"$5\r\nhello\r\n"


def test_hello_3_then_ping_is_resp3(srv: ServerProcess) -> None:
    with connect(srv.port) as sock:
        request(sock, b"CLIENT GETNAME\r\n", b"$-1\r\n")  # RESP2 null
        sock.sendall(b"HELLO 3\r\nPING\r\nCLIENT GETNAME\r\nINFO persistence\r\n")
        reader = RespReader(sock)
        hello = reader.reply()
        assert isinstance(hello, dict)
        assert hello[b"proto"] == 3
        assert hello[b"server"] == b"querator"
        assert reader.reply() == "PONG"
        assert reader.buf.startswith(b"_\r\n")  # RESP3 null
        assert reader.reply() is None
        assert reader.buf.startswith(b"=")  # RESP3 verbatim string for INFO
        assert reader.reply().startswith(b"# Persistence\r\nloading:0\r\n")
        sock.sendall(b"HELLO 2\r\n")
        assert recv_exact(sock, 5) == b"*14\r\n"  # RESP2: the map is a flat array


def test_quit_answers_then_closes_ignoring_pipelined_rest(srv: ServerProcess) -> None:
    expect_then_close(srv.port, b"PING\r\nQUIT\r\nPING\r\n", PONG + b"+OK\r\n")


# -- unauthenticated limits ----------------------------------------------------------------------------------


def test_unauthenticated_multibulk_limit(secured: ServerProcess) -> None:
    expect_then_close(secured.port, b"*11\r\n", b"-ERR Protocol error: unauthenticated multibulk length\r\n")
    assert_alive_secured(secured.port)


def test_unauthenticated_bulk_limit(secured: ServerProcess) -> None:
    expect_then_close(
        secured.port, b"*1\r\n$16385\r\n", b"-ERR Protocol error: unauthenticated bulk length\r\n"
    )
    assert_alive_secured(secured.port)


def test_unauthenticated_limits_are_inclusive(secured: ServerProcess) -> None:
    with connect(secured.port) as sock:
        ten = b"*10\r\n$4\r\nPING\r\n" + b"$1\r\na\r\n" * 9
        request(sock, ten, NOAUTH)
        big = b"*2\r\n$4\r\nECHO\r\n$16384\r\n" + b"x" * 16384 + b"\r\n"
        request(sock, big, NOAUTH)


def test_limits_lifted_after_auth_and_restored_by_reset(secured: ServerProcess) -> None:
    with connect(secured.port) as sock:
        request(sock, b"AUTH secret\r\n", b"+OK\r\n")
        eleven = b"*11\r\n$3\r\nFOO\r\n" + b"$1\r\na\r\n" * 10
        request(
            sock, eleven, b"-ERR unknown command 'FOO', with args beginning with: " + b"'a' " * 10 + b"\r\n"
        )
        payload = b"y" * 16385
        request(
            sock, b"*2\r\n$4\r\nECHO\r\n$16385\r\n" + payload + b"\r\n", b"$16385\r\n" + payload + b"\r\n"
        )
        request(sock, b"RESET\r\n", b"+RESET\r\n")
        sock.sendall(b"*11\r\n")
        expected = b"-ERR Protocol error: unauthenticated multibulk length\r\n"
        assert recv_exact(sock, len(expected)) == expected
        assert_closed(sock)


def test_auth_and_big_command_in_one_packet(secured: ServerProcess) -> None:
    # AUTH runs before the next command is parsed, so the lifted limits apply to it.
    with connect(secured.port) as sock:
        payload = b"z" * 20000
        request(
            sock,
            b"AUTH secret\r\n*2\r\n$4\r\nECHO\r\n$20000\r\n" + payload + b"\r\n",
            b"+OK\r\n$20000\r\n" + payload + b"\r\n",
        )


def assert_alive_secured(port: int) -> None:
    with connect(port) as sock:
        request(sock, b"AUTH secret\r\nPING\r\n", b"+OK\r\n" + PONG)


# -- the client limit ----------------------------------------------------------------------------------------


def test_max_clients_from_config_file(tmp_path: Path) -> None:
    config = tmp_path / "querator.toml"
    config.write_text("max-clients = 3\n")
    proc = ServerProcess(tmp_path / "data", "--config", str(config), backend="memory").start()
    socks: list[socket.socket] = []
    try:
        for _ in range(3):
            sock = connect(proc.port)
            socks.append(sock)
            request(sock, b"PING\r\n", PONG)
        with connect(proc.port) as fourth:
            assert recv_exact(fourth, 36) == b"-ERR max number of clients reached\r\n"
            assert_closed(fourth)
        # The three admitted clients are unaffected.
        for sock in socks:
            request(sock, b"PING\r\n", PONG)
        request(socks[0], b"CONFIG GET maxclients\r\n", b"*2\r\n$10\r\nmaxclients\r\n$1\r\n3\r\n")
        socks[1].sendall(b"INFO stats\r\n")
        stats = RespReader(socks[1]).reply().decode()
        assert re.search(r"^rejected_connections:[1-9]", stats, re.M), stats
        # A slot frees once a client leaves (the server notices asynchronously: poll).
        socks.pop().close()
        deadline = time.monotonic() + 5
        while True:
            with connect(proc.port) as sock:
                sock.sendall(b"PING\r\n")
                if recv_exact(sock, 7) == PONG:
                    break
            assert time.monotonic() < deadline, "slot not freed after a client disconnected"
            time.sleep(0.01)
    finally:
        for sock in socks:
            sock.close()
        proc.kill()


# -- a client that pipelines without reading -----------------------------------------------------------------


@pytest.fixture(scope="module")
def hog_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One run of the scenario, shared by the tests that check different promises about it: a client sends
    50 MB of pipelined PINGs and never reads; meanwhile another client keeps sending PING."""
    proc = ServerProcess(tmp_path_factory.mktemp("hog") / "data", backend="memory").start()
    payload = b"PING\r\n" * (50 * 1024 * 1024 // 6)
    state: dict[str, Any] = {"sent": 0, "stop": False, "done": False}
    hog = connect(proc.port, timeout=0.2)

    def pump() -> None:
        view = memoryview(payload)
        try:
            while state["sent"] < len(payload) and not state["stop"]:
                try:
                    state["sent"] += hog.send(view[state["sent"] : state["sent"] + (1 << 20)])
                except TimeoutError:
                    continue
        except OSError as exc:
            state["error"] = exc
        finally:
            state["done"] = True

    result: dict[str, Any] = {"latencies": [], "total": len(payload)}
    thread = threading.Thread(target=pump, daemon=True)
    other = connect(proc.port, timeout=30.0)  # generous: the latency is measured, not the timeout
    try:
        request(other, b"PING\r\n", PONG)
        thread.start()
        last_sent, last_change = -1, time.monotonic()
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            started = time.monotonic()
            request(other, b"PING\r\n", PONG)
            result["latencies"].append(time.monotonic() - started)
            if state["done"]:
                break
            if state["sent"] != last_sent:
                last_sent, last_change = state["sent"], time.monotonic()
            elif time.monotonic() - last_change > 1.0:
                break  # the server stopped reading the hog
        result["sent"] = state["sent"]
        result["hog_done"] = state["done"]
        result["alive_during"] = proc.proc is not None and proc.proc.poll() is None
    finally:
        state["stop"] = True
        thread.join(5)
        hog.close()
        other.close()
    result["alive_after"] = proc.proc is not None and proc.proc.poll() is None
    try:
        assert_alive(proc.port)
        result["pong_after"] = True
    except (OSError, AssertionError):
        result["pong_after"] = False
    yield result
    proc.kill()


def test_non_reading_client_is_throttled_and_server_survives(hog_run: dict[str, Any]) -> None:
    assert hog_run["latencies"], "the other client got no reply at all"
    assert hog_run["alive_during"] and hog_run["alive_after"]
    assert hog_run["pong_after"]
    # Bounded output: the server stopped reading the client rather than buffering ~60 MB of replies.
    assert not hog_run["hog_done"]
    assert hog_run["sent"] < hog_run["total"]


def test_non_reading_client_does_not_starve_others(hog_run: dict[str, Any]) -> None:
    worst = max(hog_run["latencies"])
    assert worst < 2.0, f"another client's PING took {worst:.2f} s"


# -- graceful stop -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_graceful_stop_exits_zero(tmp_path: Path, sig: signal.Signals) -> None:
    proc = ServerProcess(tmp_path / "data").start()
    try:
        idle = connect(proc.port)
        request(idle, b"PING\r\n", PONG)
        code = proc.stop(sig)
        assert code == 0
        log = proc.read_log()
        assert re.search(rf"ready to accept connections on 127\.0\.0\.1:{proc.port}\b", log), log
        assert_closed(idle)  # the server closed its clients on the way out
        idle.close()
    finally:
        proc.kill()
