"""The commands and fields of SPEC section 7 on the wire: reply shapes under RESP2 and RESP3 through redis-py,
exact bytes and error texts through raw sockets, and their COMMAND INFO / DOCS.

Where the SPEC fixes only the place of a new field, its place is asserted as an exact field order:
- QINFO: `paused dedup-window` after `updated-at` (its last field).
- QSTATS: SPEC section 3 calls `produced completed retried lease-expired dead-lettered` the counters, and
  section 7 puts `deduplicated` "after its other counters": so right after `dead-lettered`, before
  `oldest-ready-age waiting-consumers partitions` (which are not counters).
- QITEMS / QGET: `reason source-queue source-id dead-reason` after `payload`.
Error texts follow the existing `-ERR <OPTION> must be between a and b` style; where no text is implied
(the DEDUP key length), only the `-ERR` prefix and the option name are asserted.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import hiredis
import pytest
import redis

from tests.support import INFO_FIELDS, ITEM_FIELDS, STATS_FIELDS, ServerProcess, connect, resp

NEW_COMMANDS = {"qpause": 2, "qresume": 2, "qredrive": -2, "qget": 3}  # name -> arity


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("features") / "data", backend="memory").start()
    yield proc
    proc.kill()


# -- helpers ------------------------------------------------------------------------------------------------


def _pairs(reply: object) -> dict[str, Any]:
    """A RESP3 map, or a RESP2 flat array, as an ordered dict with str keys."""
    if isinstance(reply, dict):
        return {k.decode(): v for k, v in reply.items()}
    assert isinstance(reply, list) and len(reply) % 2 == 0, reply
    return {reply[i].decode(): reply[i + 1] for i in range(0, len(reply), 2)}


def _client(srv: ServerProcess, protocol: int) -> redis.Redis:
    return redis.Redis(port=srv.port, protocol=protocol, socket_timeout=10)


def _dead_item(client: redis.Redis, queue: str, reason: bytes) -> tuple[bytes, bytes]:
    """A queue `queue` with dead queue `queue`-dlq holding one item sent there by QRETRY DEAD REASON;
    its id when it left, and its id in the dead queue."""
    client.execute_command("QCREATE", f"{queue}-dlq")
    client.execute_command("QCREATE", queue, "DEAD-QUEUE", f"{queue}-dlq")
    client.execute_command("QPRODUCE", queue, "KIND", "k", "ITEMS", "body")
    ((source_id, *_),) = client.execute_command("QLEASE", queue)
    assert client.execute_command("QRETRY", queue, "DEAD", "REASON", reason, source_id) == 1
    (listed,) = client.execute_command("QITEMS", f"{queue}-dlq")
    return source_id, _pairs(listed)["id"]


def _raw_reply(sock: socket.socket) -> bytes:
    """The bytes of exactly one reply (RESP2 or RESP3), read until hiredis sees it whole."""
    reader = hiredis.Reader()
    data = b""
    while True:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {data!r}"
        data += chunk
        reader.feed(chunk)
        if reader.gets() is not False:
            assert reader.gets() is False, f"more than one reply in {data!r}"
            return data


def _ask(port: int, *commands: bytes, hello: int = 2) -> list[bytes]:
    """Send each multibulk request on one connection (after HELLO 3 when asked); their raw replies."""
    with connect(port) as sock:
        if hello == 3:
            sock.sendall(resp(b"HELLO", b"3"))
            _raw_reply(sock)
        replies = []
        for command in commands:
            sock.sendall(command)
            replies.append(_raw_reply(sock))
        return replies


def _first_id(produce_reply: bytes) -> bytes:
    """The first id of a raw QPRODUCE reply (`*n`, `$len`, id, ...)."""
    return produce_reply.split(b"\r\n")[2]


def _tokens(args: list[Any]) -> set[str]:
    """Every option token of a COMMAND DOCS argument list, children included."""
    found: set[str] = set()
    for raw in args:
        arg = _pairs(raw)
        if arg.get("token"):
            found.add(arg["token"].decode())
        found |= _tokens(arg.get("arguments", []))
    return found


# -- reply shapes -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [2, 3])
def test_qinfo_adds_paused_and_dedup_window_after_its_fields(srv: ServerProcess, protocol: int) -> None:
    client = _client(srv, protocol)
    queue = f"info{protocol}"
    client.execute_command("QCREATE", queue)
    info = _pairs(client.execute_command("QINFO", queue))
    assert list(info) == INFO_FIELDS
    assert (info["paused"], info["dedup-window"]) == (0, 300000)
    client.execute_command("QPAUSE", queue)
    client.execute_command("QUPDATE", queue, "DEDUP-WINDOW", "1000")
    info = _pairs(client.execute_command("QINFO", queue))
    assert (info["paused"], info["dedup-window"]) == (1, 1000)
    client.execute_command("QCREATE", f"{queue}-off", "DEDUP-WINDOW", "0")
    assert _pairs(client.execute_command("QINFO", f"{queue}-off"))["dedup-window"] == 0


@pytest.mark.parametrize("protocol", [2, 3])
def test_qstats_shows_deduplicated_right_after_dead_lettered(srv: ServerProcess, protocol: int) -> None:
    client = _client(srv, protocol)
    queue = f"stats{protocol}"
    client.execute_command("QCREATE", queue)
    first = client.execute_command("QPRODUCE", queue, "DEDUP", "order-7", "ITEMS", "a", "b")
    assert client.execute_command("QPRODUCE", queue, "DEDUP", "order-7", "ITEMS", "a", "b") == first
    stats = _pairs(client.execute_command("QSTATS", queue))
    assert list(stats) == STATS_FIELDS
    assert (stats["produced"], stats["total"], stats["deduplicated"]) == (2, 2, 1)


@pytest.mark.parametrize("protocol", [2, 3])
def test_qitems_and_qget_show_reason_and_provenance_after_payload(srv: ServerProcess, protocol: int) -> None:
    client = _client(srv, protocol)
    queue = f"prov{protocol}"
    source_id, dead_id = _dead_item(client, queue, b"bad input")
    (listed,) = client.execute_command("QITEMS", f"{queue}-dlq")
    item = _pairs(listed)
    assert list(item) == ITEM_FIELDS
    assert (item["payload"], item["kind"], item["attempts"], item["state"]) == (b"body", b"k", 0, b"ready")
    assert (item["reason"], item["source-queue"], item["source-id"], item["dead-reason"]) == (
        b"bad input",
        queue.encode(),
        source_id,
        b"retry-dead",
    )
    got = client.execute_command("QGET", f"{queue}-dlq", dead_id)
    assert isinstance(got, dict) == (protocol == 3)
    assert _pairs(got) == item
    # An item that never died reads empty strings there.
    (produced,) = client.execute_command("QPRODUCE", queue, "ITEMS", "fresh")
    fresh = _pairs(client.execute_command("QGET", queue, produced))
    assert list(fresh) == ITEM_FIELDS
    assert [fresh[f] for f in ITEM_FIELDS[-4:]] == [b""] * 4


@pytest.mark.parametrize("protocol", [2, 3])
def test_qget_of_no_item_is_null(srv: ServerProcess, protocol: int) -> None:
    client = _client(srv, protocol)
    queue = f"null{protocol}"
    client.execute_command("QCREATE", queue)
    (item_id,) = client.execute_command("QPRODUCE", queue, "ITEMS", "a")
    ((leased_id, *_),) = client.execute_command("QLEASE", queue)
    assert client.execute_command("QCOMPLETE", queue, leased_id) == 1
    assert client.execute_command("QGET", queue, item_id) is None


def test_qget_null_bytes_are_redis_null_in_each_protocol(srv: ServerProcess) -> None:
    _, produced = _ask(
        srv.port, resp(b"QCREATE", b"nullbytes"), resp(b"QPRODUCE", b"nullbytes", b"ITEMS", b"a")
    )
    missing = _first_id(produced).rsplit(b"-", 1)[0] + b"-999999"  # same queue and partition, no such seq
    assert _ask(srv.port, resp(b"QGET", b"nullbytes", missing)) == [b"$-1\r\n"]
    assert _ask(srv.port, resp(b"QGET", b"nullbytes", missing), hello=3) == [b"_\r\n"]


@pytest.mark.parametrize("hello", [2, 3])
def test_qget_reply_bytes_are_those_of_its_qitems_entry(srv: ServerProcess, hello: int) -> None:
    queue = b"getbytes%d" % hello
    setup = _ask(srv.port, resp(b"QCREATE", queue), resp(b"QPRODUCE", queue, b"KIND", b"k", b"ITEMS", b"x"))
    item_id = _first_id(setup[1])
    listed, got = _ask(srv.port, resp(b"QITEMS", queue), resp(b"QGET", queue, item_id), hello=hello)
    assert listed.startswith(b"*1\r\n")
    assert got == listed[len(b"*1\r\n") :]
    assert got.startswith(b"*30\r\n" if hello == 2 else b"%15\r\n")


# -- commands -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [2, 3])
def test_qproduce_dedup_in_any_option_order_returns_the_first_ids(srv: ServerProcess, protocol: int) -> None:
    client = _client(srv, protocol)
    queue = f"dedup{protocol}"
    client.execute_command("QCREATE", queue, "PARTITIONS", "2")
    first = client.execute_command("QPRODUCE", queue, "DEDUP", "k1", "KIND", "x", "ITEMS", "a")
    assert client.execute_command("QPRODUCE", queue, "KIND", "x", "DEDUP", "k1", "ITEMS", "a") == first
    assert client.execute_command("QPRODUCE", queue, "DELAY", "5", "DEDUP", "k1", "ITEMS", "z") == first
    # Every argument after ITEMS is a payload, even one that reads DEDUP.
    other = client.execute_command("QPRODUCE", queue, "ITEMS", "DEDUP", "k1")
    assert len(other) == 2
    stats = _pairs(client.execute_command("QSTATS", queue))
    assert (stats["total"], stats["deduplicated"]) == (3, 2)


def test_qretry_reason_with_other_options_in_any_order(srv: ServerProcess) -> None:
    client = _client(srv, 3)
    client.execute_command("QCREATE", "reasons")
    client.execute_command("QPRODUCE", "reasons", "ITEMS", "a", "b")
    a, b = (item[0] for item in client.execute_command("QLEASE", "reasons", "COUNT", "2"))
    assert (
        client.execute_command("QRETRY", "reasons", "REASON", "db down, will retry", "DELAY", "60000", a) == 1
    )
    assert client.execute_command("QRETRY", "reasons", "REASON", "", b) == 1
    items = {_pairs(i)["payload"]: _pairs(i) for i in client.execute_command("QITEMS", "reasons")}
    assert (items[b"a"]["state"], items[b"a"]["reason"]) == (b"scheduled", b"db down, will retry")
    assert (items[b"b"]["state"], items[b"b"]["reason"]) == (b"ready", b"")


def test_qpause_and_qresume_answer_ok_in_either_state(srv: ServerProcess) -> None:
    ok = b"+OK\r\n"
    replies = _ask(
        srv.port,
        resp(b"QCREATE", b"pausing"),
        resp(b"QPRODUCE", b"pausing", b"ITEMS", b"a"),
        resp(b"QRESUME", b"pausing"),
        resp(b"QPAUSE", b"pausing"),
        resp(b"QPAUSE", b"pausing"),
        resp(b"QLEASE", b"pausing"),
        resp(b"QRESUME", b"pausing"),
        resp(b"QRESUME", b"pausing"),
    )
    assert replies[:5] == [ok, replies[1], ok, ok, ok]
    assert replies[5] == b"*0\r\n"
    assert replies[6:] == [ok, ok]
    assert _ask(srv.port, resp(b"QLEASE", b"pausing"))[0].startswith(b"*1\r\n")


def test_blocked_qlease_on_a_paused_queue_is_served_after_qresume(srv: ServerProcess) -> None:
    _ask(srv.port, resp(b"QCREATE", b"blocked"), resp(b"QPAUSE", b"blocked"))
    with connect(srv.port) as waiter:
        waiter.sendall(resp(b"QLEASE", b"blocked", b"BLOCK", b"0"))
        _ask(srv.port, resp(b"QPRODUCE", b"blocked", b"ITEMS", b"held"))
        waiter.settimeout(0.3)
        with pytest.raises(TimeoutError):
            waiter.recv(1)  # paused: the produce does not serve the waiting consumer
        waiter.settimeout(5)
        assert _ask(srv.port, resp(b"QRESUME", b"blocked")) == [b"+OK\r\n"]
        reply = _raw_reply(waiter)
        assert reply.startswith(b"*1\r\n*7\r\n") and b"$4\r\nheld\r\n" in reply


def test_qredrive_replies_how_many_moved(srv: ServerProcess) -> None:
    client = _client(srv, 2)
    _dead_item(client, "redrive", b"r1")
    client.execute_command("QPRODUCE", "redrive-dlq", "ITEMS", "direct-1", "direct-2")
    client.execute_command("QCREATE", "redrive-target")
    assert _ask(srv.port, resp(b"QREDRIVE", b"redrive-dlq")) == [b":1\r\n"]
    assert _ask(srv.port, resp(b"QREDRIVE", b"redrive-dlq")) == [b":0\r\n"]
    moved = _ask(srv.port, resp(b"QREDRIVE", b"redrive-dlq", b"LIMIT", b"1", b"TO", b"redrive-target"))
    assert moved == [b":1\r\n"]
    assert client.execute_command("QREDRIVE", "redrive-dlq", "TO", "redrive-target", "LIMIT", "5") == 1
    assert client.execute_command("QLEN", "redrive") == 1
    assert client.execute_command("QLEN", "redrive-target") == 2


# -- errors -------------------------------------------------------------------------------------------------


def _arity(name: bytes) -> bytes:
    return b"-ERR wrong number of arguments for '%b' command\r\n" % name


@pytest.mark.parametrize(
    ("args", "reply"),
    [
        (
            (b"QCREATE", b"w1", b"DEDUP-WINDOW", b"-1"),
            b"-ERR DEDUP-WINDOW must be between 0 and 86400000\r\n",
        ),
        (
            (b"QCREATE", b"w1", b"DEDUP-WINDOW", b"86400001"),
            b"-ERR DEDUP-WINDOW must be between 0 and 86400000\r\n",
        ),
        (
            (b"QUPDATE", b"base", b"DEDUP-WINDOW", b"86400001"),
            b"-ERR DEDUP-WINDOW must be between 0 and 86400000\r\n",
        ),
        (
            (b"QCREATE", b"w1", b"DEDUP-WINDOW", b"abc"),
            b"-ERR value is not an integer or out of range; DEDUP-WINDOW takes an integer\r\n",
        ),
        ((b"QCREATE", b"w1", b"DEDUP-WINDOW"), b"-ERR syntax error\r\n"),
        (
            (b"QRETRY", b"base", b"REASON", b"r" * 4097, b"1-0-1"),
            b"-ERR REASON must be at most 4096 bytes\r\n",
        ),
        ((b"QRETRY", b"base", b"REASON", b"x"), _arity(b"qretry")),
        ((b"QRETRY", b"base", b"REASON", b"x", b"abc"), b"-ERR invalid id 'abc'\r\n"),
        ((b"QPAUSE",), _arity(b"qpause")),
        ((b"QPAUSE", b"base", b"extra"), _arity(b"qpause")),
        ((b"QRESUME",), _arity(b"qresume")),
        ((b"QRESUME", b"base", b"extra"), _arity(b"qresume")),
        ((b"QPAUSE", b"nope"), b"-NOQUEUE no such queue 'nope'\r\n"),
        ((b"QRESUME", b"nope"), b"-NOQUEUE no such queue 'nope'\r\n"),
        ((b"QREDRIVE",), _arity(b"qredrive")),
        ((b"QREDRIVE", b"nope"), b"-NOQUEUE no such queue 'nope'\r\n"),
        ((b"QREDRIVE", b"base", b"TO", b"nope"), b"-NOQUEUE no such queue 'nope'\r\n"),
        ((b"QREDRIVE", b"base", b"LIMIT", b"0"), b"-ERR LIMIT must be between 1 and 100000\r\n"),
        ((b"QREDRIVE", b"base", b"LIMIT", b"100001"), b"-ERR LIMIT must be between 1 and 100000\r\n"),
        (
            (b"QREDRIVE", b"base", b"LIMIT", b"abc"),
            b"-ERR value is not an integer or out of range; LIMIT takes an integer\r\n",
        ),
        ((b"QREDRIVE", b"base", b"COLOUR", b"blue"), b"-ERR syntax error\r\n"),
        ((b"QREDRIVE", b"base", b"TO"), b"-ERR syntax error\r\n"),
        ((b"QGET",), _arity(b"qget")),
        ((b"QGET", b"base"), _arity(b"qget")),
        ((b"QGET", b"base", b"1-0-1", b"extra"), _arity(b"qget")),
        ((b"QGET", b"nope", b"1-0-1"), b"-NOQUEUE no such queue 'nope'\r\n"),
        ((b"QGET", b"base", b"abc"), b"-ERR invalid id 'abc'\r\n"),
        ((b"QGET", b"base", b"1-5-1"), b"-ERR invalid id '1-5-1'\r\n"),
    ],
    ids=lambda value: b" ".join(value)[:48].decode() if isinstance(value, tuple) else "",
)
def test_error_reply_is_exact(srv: ServerProcess, args: tuple[bytes, ...], reply: bytes) -> None:
    _ask(srv.port, resp(b"QCREATE", b"base"))
    assert _ask(srv.port, resp(*args)) == [reply]


@pytest.mark.parametrize("window", [b"300000", b"0"])
def test_dedup_key_length_error_names_dedup_and_stores_nothing(srv: ServerProcess, window: bytes) -> None:
    queue = b"keylen" + window
    _ask(srv.port, resp(b"QCREATE", queue, b"DEDUP-WINDOW", window))
    for key in (b"", b"k" * 257):
        (reply,) = _ask(srv.port, resp(b"QPRODUCE", queue, b"DEDUP", key, b"ITEMS", b"a"))
        assert reply.startswith(b"-ERR ") and b"DEDUP" in reply, reply
    assert _ask(srv.port, resp(b"QLEN", queue)) == [b":0\r\n"]
    (reply,) = _ask(srv.port, resp(b"QPRODUCE", queue, b"DEDUP", b"k" * 256, b"ITEMS", b"a"))
    assert reply.startswith(b"*1\r\n")


# -- the command table --------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [2, 3])
def test_command_info_has_the_new_commands(srv: ServerProcess, protocol: int) -> None:
    client = _client(srv, protocol)
    names = {n.decode() for n in client.execute_command("COMMAND LIST")}
    assert set(NEW_COMMANDS) <= names
    for name, arity in NEW_COMMANDS.items():
        ((reported, reported_arity, _flags, first, last, step, *_),) = client.execute_command(
            "COMMAND INFO", name
        )
        assert (reported.decode(), reported_arity, first, last, step) == (name, arity, 1, 1, 1)


@pytest.mark.parametrize("protocol", [2, 3])
def test_command_docs_have_the_new_commands_and_options(srv: ServerProcess, protocol: int) -> None:
    client = _client(srv, protocol)
    wanted = ["qpause", "qresume", "qredrive", "qget", "qproduce", "qretry", "qcreate", "qupdate"]
    docs = {
        name: _pairs(doc) for name, doc in _pairs(client.execute_command("COMMAND DOCS", *wanted)).items()
    }
    assert sorted(docs) == sorted(wanted)
    for name in NEW_COMMANDS:
        assert docs[name]["summary"], name
    tokens = {name: _tokens(doc.get("arguments", [])) for name, doc in docs.items()}
    assert "DEDUP" in tokens["qproduce"]
    assert "REASON" in tokens["qretry"]
    assert "DEDUP-WINDOW" in tokens["qcreate"] and "DEDUP-WINDOW" in tokens["qupdate"]
    assert tokens["qredrive"] == {"TO", "LIMIT"}
    assert tokens["qpause"] == tokens["qresume"] == tokens["qget"] == set()
    get_args = [_pairs(a)["name"].decode() for a in docs["qget"]["arguments"]]
    assert get_args == ["queue", "id"]
