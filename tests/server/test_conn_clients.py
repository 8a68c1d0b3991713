"""Connection-level commands through real Redis clients: redis-py 8 (RESP3 by default, and RESP2) and
redis.asyncio, against a real server process. SPEC section 2: these must behave as in Redis because the
clients send them when they connect."""

from __future__ import annotations

import asyncio
import fnmatch
import inspect
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
import redis.asyncio
from redis.backoff import NoBackoff
from redis.retry import Retry

from querator import __version__
from tests.support import ServerProcess, request, run

NOAUTH = b"-NOAUTH Authentication required.\r\n"
WRONGPASS = b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"
HELLO_NOAUTH = (
    "HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH "
    "<user> <pass> option can be used to authenticate the client and select the RESP protocol version "
    "at the same time"
)
AUTH_WITHOUT_PASSWORD = (
    b"-ERR AUTH <password> called without any password configured for the default user. "
    b"Are you sure your configuration is correct?\r\n"
)


# -- helpers -------------------------------------------------------------------------------------------------


def text(value: Any) -> str:
    """bytes / str / simple-string replies as str (RESP2 and RESP3 parsers differ in what they return)."""
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode()
    return str(value)


def as_dict(value: Any) -> dict[str, Any]:
    """A RESP3 map or a RESP2 flat field/value array as a dict with str keys."""
    if isinstance(value, dict):
        return {text(k): v for k, v in value.items()}
    assert isinstance(value, list) and len(value) % 2 == 0, value
    return {text(value[i]): value[i + 1] for i in range(0, len(value), 2)}


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


class SyncAsync:
    """Drives a redis.asyncio client from a sync test on its own event loop, so the same checks run on
    the sync and async clients (every call really goes through redis.asyncio's connection code)."""

    def __init__(self, **kwargs: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._client = redis.asyncio.Redis(**kwargs)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            result = attr(*args, **kwargs)
            if inspect.isawaitable(result):
                return self._loop.run_until_complete(result)
            return result

        return call

    def close(self) -> None:
        self._loop.run_until_complete(self._client.aclose())
        self._loop.close()


def raw_connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5.0)


def recv_until(sock: socket.socket, suffix: bytes) -> bytes:
    data = b""
    while not data.endswith(suffix):
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed after {data!r}")
        data += chunk
    return data


# -- fixtures ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("conn") / "data").start()
    yield proc
    proc.kill()


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("auth") / "data", "--requirepass", "secret").start()
    yield proc
    proc.kill()


CLIENT_KINDS = ["resp3-default", "resp2", "async-resp3"]


def make_client(kind: str, port: int, **extra: Any) -> Any:
    if kind == "resp3-default":
        return redis.Redis(port=port, socket_timeout=10, **extra)  # redis-py 8 default: HELLO 3
    if kind == "resp2":
        return redis.Redis(port=port, socket_timeout=10, protocol=2, **extra)
    if kind == "async-resp3":
        return SyncAsync(port=port, socket_timeout=10, **extra)
    if kind == "async-resp2":
        return SyncAsync(port=port, socket_timeout=10, protocol=2, **extra)
    raise ValueError(kind)


def expected_proto(kind: str) -> int:
    return 2 if kind.endswith("resp2") else 3


@pytest.fixture(params=CLIENT_KINDS)
def client(request: pytest.FixtureRequest, shared: ServerProcess) -> Iterator[Any]:
    c = make_client(request.param, shared.port)
    c.kind = request.param
    yield c
    c.close()


@pytest.fixture
def observer(shared: ServerProcess) -> Iterator[redis.Redis]:
    c = redis.Redis(port=shared.port, protocol=2, socket_timeout=10)
    yield c
    c.close()


# -- PING / ECHO / negotiated protocol -----------------------------------------------------------------------


def test_ping_and_echo(client: Any) -> None:
    assert client.ping() is True
    assert client.echo("hello world") == b"hello world"
    assert client.echo(b"\x00\xffbinary\r\n") == b"\x00\xffbinary\r\n"
    client.set_response_callback("PING", lambda response, **_: response)
    assert client.execute_command("PING", "msg") == b"msg"
    assert text(client.execute_command("PING")) == "PONG"


def test_client_negotiates_expected_protocol(client: Any) -> None:
    # redis-py 8 sends HELLO 3 by default; protocol=2 must stay on RESP2.
    info = client.client_info()
    assert str(info["resp"]) == str(expected_proto(client.kind))
    assert info["lib-name"] == "redis-py"
    assert info["lib-ver"] == redis.__version__


# -- CLIENT --------------------------------------------------------------------------------------------------


def test_client_setname_getname(client: Any) -> None:
    assert client.client_getname() is None
    assert client.client_setname("worker-1") is True
    assert text(client.client_getname()) == "worker-1"
    with pytest.raises(redis.ResponseError) as err:
        client.client_setname("has space")
    assert str(err.value) == "Client names cannot contain spaces, newlines or special characters."
    assert text(client.client_getname()) == "worker-1"


def test_client_id_info_list(client: Any, observer: redis.Redis) -> None:
    client.client_setname(f"lister-{client.kind}")
    my_id = client.client_id()
    assert isinstance(my_id, int) and my_id > 0
    assert observer.client_id() != my_id
    info = client.client_info()
    assert int(info["id"]) == my_id
    assert info["name"] == f"lister-{client.kind}"
    assert int(info["db"]) == 0
    assert info["user"] == "default"
    assert info["cmd"].lower() == "client"
    laddr_port = int(info["laddr"].rsplit(":", 1)[1])
    entries = client.client_list()
    by_id = {int(e["id"]): e for e in entries}
    assert my_id in by_id
    assert observer.client_id() in by_id
    assert by_id[my_id]["name"] == f"lister-{client.kind}"
    assert int(by_id[my_id]["laddr"].rsplit(":", 1)[1]) == laddr_port
    # The observer sees the same connection.
    assert my_id in {int(e["id"]) for e in observer.client_list()}


def test_client_setinfo(client: Any) -> None:
    assert client.client_setinfo("LIB-NAME", "mylib") is True
    assert client.client_setinfo("lib-ver", "9.9.9") is True
    info = client.client_info()
    assert info["lib-name"] == "mylib"
    assert info["lib-ver"] == "9.9.9"
    with pytest.raises(redis.ResponseError) as err:
        client.execute_command("CLIENT", "SETINFO", "LIB-FOO", "x")
    assert str(err.value) == "Unrecognized option 'LIB-FOO'"


def test_client_accepts_connect_time_subcommands(client: Any) -> None:
    for sub in ("MAINT_NOTIFICATIONS", "NO-EVICT", "NO-TOUCH"):
        assert text(client.execute_command("CLIENT", sub, "ON")) in ("OK", "True")


def test_client_errors(client: Any) -> None:
    with pytest.raises(redis.ResponseError) as err:
        client.execute_command("CLIENT", "FOO")
    assert str(err.value) == "unknown subcommand 'FOO'. Try CLIENT HELP."
    with pytest.raises(redis.ResponseError) as err:
        client.execute_command("CLIENT", "SETNAME")
    assert str(err.value) == "wrong number of arguments for 'client|setname' command"


# -- SELECT / TIME -------------------------------------------------------------------------------------------


def test_select(client: Any) -> None:
    assert text(client.execute_command("SELECT", 0)) in ("OK", "True")
    with pytest.raises(redis.ResponseError) as err:
        client.execute_command("SELECT", 1)
    assert str(err.value) == "DB index is out of range"
    with pytest.raises(redis.ResponseError) as err:
        client.execute_command("SELECT", "abc")
    assert str(err.value) == "value is not an integer or out of range"
    assert client.ping() is True


@pytest.mark.parametrize("kind", ["resp3-default", "resp2", "async-resp3"])
def test_client_configured_with_db_1_is_refused(shared: ServerProcess, kind: str) -> None:
    c = make_client(kind, shared.port, db=1)
    try:
        with pytest.raises(redis.ResponseError) as err:
            c.ping()
        assert str(err.value) == "DB index is out of range"
    finally:
        c.close()


def test_time(client: Any) -> None:
    before = time.time()
    seconds, micros = client.time()
    after = time.time()
    assert isinstance(seconds, int) and isinstance(micros, int)
    assert 0 <= micros < 1_000_000
    assert before - 1 <= seconds + micros / 1e6 <= after + 1


# -- INFO ----------------------------------------------------------------------------------------------------


def raw_info(client: Any, *sections: str) -> str:
    client.set_response_callback("INFO", lambda response, **_: response)
    return text(client.execute_command("INFO", *sections))


def test_info_layout(client: Any) -> None:
    body = raw_info(client)
    lines = body.split("\r\n")
    for header in ("# Server", "# Clients", "# Persistence", "# Stats", "# Queues"):
        assert header in lines, f"{header!r} missing from INFO"
    assert "loading:0" in lines
    assert lines.index("# Persistence") < lines.index("loading:0")
    assert any(line.startswith("redis_version:") for line in lines)
    assert any(line.startswith("connected_clients:") for line in lines)
    # Every non-empty, non-header line is field:value, as Redis clients parse it.
    for line in lines:
        if line and not line.startswith("#"):
            assert ":" in line, line


def test_info_parsed_by_client(client: Any) -> None:
    info = client.info()
    assert info["loading"] == 0
    assert int(info["connected_clients"]) >= 1
    assert "redis_version" in info
    assert "total_commands_processed" in info


def test_info_persistence_alone(client: Any) -> None:
    parsed = client.info("persistence")
    assert parsed["loading"] == 0
    assert "redis_version" not in parsed
    body = raw_info(client, "persistence")
    lines = [line for line in body.split("\r\n") if line]
    assert lines[0] == "# Persistence"
    assert "loading:0" in lines
    assert not [line for line in lines[1:] if line.startswith("#")], "only the persistence section"
    # Section names are case-insensitive, as in Redis.
    assert raw_info(client, "PERSISTENCE").split("\r\n")[0] == "# Persistence"


# -- CONFIG GET ----------------------------------------------------------------------------------------------


def test_config_get(client: Any) -> None:
    assert {text(k): text(v) for k, v in client.config_get("save").items()} == {"save": ""}
    assert {text(k): text(v) for k, v in client.config_get("appendonly").items()} == {"appendonly": "no"}
    found = {text(k): text(v) for k, v in client.config_get("*max*").items()}
    assert "maxclients" in found and int(found["maxclients"]) >= 1
    assert "maxmemory" in found
    assert all(fnmatch.fnmatchcase(key, "*max*") for key in found)
    assert client.config_get("no-such-parameter") == {}


# -- COMMAND -------------------------------------------------------------------------------------------------


def test_command_count_and_list(client: Any) -> None:
    count = client.execute_command("COMMAND COUNT")
    names = [text(n) for n in client.execute_command("COMMAND LIST")]
    assert count == len(names) == len(set(names))
    for name in ("ping", "hello", "auth", "client", "info", "command", "qlease", "qproduce"):
        assert name in names


def test_command_info_qlease(client: Any) -> None:
    reply = client.execute_command("COMMAND INFO", "qlease")
    assert len(reply) == 1
    name, arity, flags, first, last, step, categories, *_rest = reply[0]
    assert text(name) == "qlease"
    assert arity == -2
    assert {text(f) for f in flags} >= {"write", "blocking"}
    assert (first, last, step) == (1, 1, 1)
    assert [text(c) for c in categories] == ["@queue"]
    # Unknown names give a null entry, as in Redis.
    assert client.execute_command("COMMAND INFO", "nosuchcommand") == [None]


def test_command_docs_qlease(client: Any) -> None:
    docs = as_dict(client.execute_command("COMMAND DOCS", "qlease"))
    assert list(docs) == ["qlease"]
    doc = as_dict(docs["qlease"])
    assert text(doc["group"]) == "queue"
    assert text(doc["summary"])
    args = [as_dict(a) for a in doc["arguments"]]
    assert [text(a["name"]) for a in args] == ["queue", "count", "timeout"]
    assert text(args[0]["type"]) == "key"
    assert text(args[1]["token"]) == "COUNT"
    assert text(args[2]["token"]) == "BLOCK"
    assert [text(f) for f in args[1]["flags"]] == ["optional"]


def _check_doc_args(command: str, args: list[Any]) -> None:
    for raw in args:
        arg = as_dict(raw)
        assert text(arg["name"]), command
        kind = text(arg["type"])
        # redis-cli builds its hints from these and crashes on a block/oneof without children.
        if kind in ("block", "oneof"):
            assert arg.get("arguments"), f"{command}: {kind} argument {text(arg['name'])} has no children"
            _check_doc_args(command, arg["arguments"])


def test_command_docs_all_well_formed(client: Any) -> None:
    docs = as_dict(client.execute_command("COMMAND DOCS"))
    names = {text(n) for n in client.execute_command("COMMAND LIST")}
    assert set(docs) == names
    for name, raw in docs.items():
        doc = as_dict(raw)
        assert text(doc["summary"]), name
        _check_doc_args(name, doc.get("arguments", []))


# -- HELLO ---------------------------------------------------------------------------------------------------


def test_hello_map(client: Any) -> None:
    proto = expected_proto(client.kind)
    reply = as_dict(client.execute_command("HELLO", proto))
    assert set(reply) == {"server", "version", "proto", "id", "mode", "role", "modules"}
    assert text(reply["server"]) == "querator"
    assert text(reply["version"]) == __version__
    assert reply["proto"] == proto
    assert reply["id"] == client.client_id()
    assert text(reply["mode"]) == "standalone"
    assert text(reply["role"]) == "master"
    assert reply["modules"] == []


@pytest.mark.parametrize("kind", ["resp3-default", "async-resp3"])
def test_hello_3_setname(shared: ServerProcess, kind: str) -> None:
    c = make_client(kind, shared.port)
    try:
        reply = as_dict(c.execute_command("HELLO", 3, "SETNAME", "via-hello"))
        assert reply["proto"] == 3
        assert reply["id"] == c.client_id()
        assert text(c.client_getname()) == "via-hello"
    finally:
        c.close()


def test_hello_4_is_noproto(client: Any) -> None:
    with pytest.raises(redis.ResponseError) as err:
        client.execute_command("HELLO", 4)
    assert str(err.value) == "NOPROTO unsupported protocol version"
    with pytest.raises(redis.ResponseError) as err:
        client.execute_command("HELLO", "abc")
    assert str(err.value) == "Protocol version is not an integer or out of range"
    # The connection keeps its protocol.
    assert str(client.client_info()["resp"]) == str(expected_proto(client.kind))
    assert client.ping() is True


# -- RESET / QUIT --------------------------------------------------------------------------------------------


def test_reset(client: Any) -> None:
    client.client_setname("before-reset")
    assert text(client.execute_command("RESET")) == "RESET"
    assert client.client_getname() is None
    info = client.client_info()
    assert str(info["resp"]) == "2"  # RESET goes back to RESP2, as in Redis
    assert info["name"] == ""
    assert client.ping() is True


def test_quit(client: Any, observer: redis.Redis) -> None:
    old_id = client.client_id()
    assert text(client.execute_command("QUIT")) in ("OK", "True")

    def gone() -> bool:
        return old_id not in {int(e["id"]) for e in observer.client_list()}

    wait_for(gone, what="the server to drop the connection after QUIT")
    # The client library reconnects on its next command, with a new connection.
    assert client.ping() is True
    assert client.client_id() != old_id


# -- redis.asyncio, really concurrent ------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [3, 2])
def test_asyncio_concurrent_commands(shared: ServerProcess, protocol: int) -> None:
    async def main() -> None:
        pool = redis.asyncio.BlockingConnectionPool(port=shared.port, protocol=protocol, max_connections=8)
        client = redis.asyncio.Redis(connection_pool=pool)
        try:
            replies = await asyncio.gather(*(client.echo(f"m{i}") for i in range(200)))
            assert replies == [f"m{i}".encode() for i in range(200)]
            pongs = await asyncio.gather(*(client.ping() for _ in range(50)))
            assert pongs == [True] * 50
            async with client.pipeline(transaction=False) as pipe:
                pipe.ping()
                pipe.echo("x")
                pipe.client_id()
                pipe.time()
                pipe.execute_command("SELECT", 0)
                results = await pipe.execute()
            assert results[0] is True
            assert results[1] == b"x"
            assert isinstance(results[2], int)
            assert len(results[3]) == 2
            assert (await client.info("persistence"))["loading"] == 0
            assert str((await client.client_info())["resp"]) == str(protocol)
        finally:
            await client.aclose()

    run(main())


# -- authentication ------------------------------------------------------------------------------------------


def test_noauth_before_auth_exact(secured: ServerProcess) -> None:
    with raw_connect(secured.port) as sock:
        for command in (
            b"PING\r\n",
            b"*1\r\n$4\r\nPING\r\n",
            b"ECHO x\r\n",
            b"INFO\r\n",
            b"CLIENT ID\r\n",
            b"SELECT 0\r\n",
            b"QLEN q\r\n",
            b"COMMAND COUNT\r\n",
        ):
            request(sock, command, NOAUTH)
        # The connection stays open and authenticates afterwards.
        request(sock, b"AUTH secret\r\n", b"+OK\r\n")
        request(sock, b"PING\r\n", b"+PONG\r\n")


def test_hello_without_auth_is_refused(secured: ServerProcess) -> None:
    with raw_connect(secured.port) as sock:
        request(sock, b"HELLO 3\r\n", f"-NOAUTH {HELLO_NOAUTH}\r\n".encode())
        request(sock, b"PING\r\n", NOAUTH)


def test_wrong_password_exact(secured: ServerProcess) -> None:
    with raw_connect(secured.port) as sock:
        request(sock, b"AUTH wrong\r\n", WRONGPASS)
        request(sock, b"AUTH default wrong\r\n", WRONGPASS)
        request(sock, b"AUTH bob secret\r\n", WRONGPASS)
        request(sock, b"HELLO 3 AUTH default wrong\r\n", WRONGPASS)
        request(sock, b"PING\r\n", NOAUTH)
        request(sock, b"AUTH default secret\r\n", b"+OK\r\n")
        request(sock, b"PING\r\n", b"+PONG\r\n")


def test_hello_3_auth(secured: ServerProcess) -> None:
    with raw_connect(secured.port) as sock:
        sock.sendall(b"HELLO 3 AUTH default secret SETNAME authed\r\nPING\r\nCLIENT GETNAME\r\n")
        data = recv_until(sock, b"+PONG\r\n$6\r\nauthed\r\n")
        assert data.startswith(b"%7\r\n")
        assert b"$5\r\nproto\r\n:3\r\n" in data
        assert b"$6\r\nserver\r\n$8\r\nquerator\r\n" in data


def test_reset_deauthenticates(secured: ServerProcess) -> None:
    with raw_connect(secured.port) as sock:
        request(sock, b"AUTH secret\r\n", b"+OK\r\n")
        request(sock, b"RESET\r\n", b"+RESET\r\n")
        request(sock, b"PING\r\n", NOAUTH)


def test_quit_before_auth(secured: ServerProcess) -> None:
    with raw_connect(secured.port) as sock:
        request(sock, b"QUIT\r\n", b"+OK\r\n")
        assert sock.recv(1) == b""


@pytest.mark.parametrize("kind", ["resp3-default", "resp2", "async-resp3", "async-resp2"])
def test_client_with_password(secured: ServerProcess, kind: str) -> None:
    c = make_client(kind, secured.port, password="secret")
    try:
        assert c.ping() is True
        info = c.client_info()
        assert info["user"] == "default"
        assert str(info["resp"]) == str(expected_proto(kind))
        assert c.echo("ok") == b"ok"
    finally:
        c.close()


@pytest.mark.parametrize("kind", ["resp3-default", "resp2"])
def test_client_without_or_with_wrong_password(secured: ServerProcess, kind: str) -> None:
    # No retries: redis-py would otherwise reconnect with backoff on these connection-time errors.
    c = make_client(kind, secured.port, retry=Retry(NoBackoff(), 0))
    try:
        with pytest.raises(redis.AuthenticationError) as err:
            c.ping()
        expected = HELLO_NOAUTH if expected_proto(kind) == 3 else "Authentication required."
        assert str(err.value) == expected
    finally:
        c.close()
    c = make_client(kind, secured.port, password="wrong", retry=Retry(NoBackoff(), 0))
    try:
        with pytest.raises(redis.AuthenticationError) as err:
            c.ping()
        assert str(err.value) == "invalid username-password pair or user is disabled."
    finally:
        c.close()


def test_auth_without_password_configured(shared: ServerProcess) -> None:
    with raw_connect(shared.port) as sock:
        request(sock, b"AUTH whatever\r\n", AUTH_WITHOUT_PASSWORD)
        # The default user has no password: AUTH default <anything> succeeds, as in Redis.
        request(sock, b"AUTH default whatever\r\n", b"+OK\r\n")
        request(sock, b"AUTH a b c\r\n", b"-ERR syntax error\r\n")
        request(sock, b"PING\r\n", b"+PONG\r\n")
    c = redis.Redis(port=shared.port, protocol=2, retry=Retry(NoBackoff(), 0))
    try:
        # redis-py classifies this reply as an AuthenticationError; the text is Redis's.
        with pytest.raises(redis.RedisError) as err:
            c.execute_command("AUTH", "whatever")
        assert str(err.value) == AUTH_WITHOUT_PASSWORD[5:-2].decode()
    finally:
        c.close()
