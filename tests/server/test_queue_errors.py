"""Every error of SPEC section 3, as exact bytes on the wire; queue declarations from the config file."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import hiredis
import pytest

from tests.support import ServerProcess


@pytest.fixture(scope="module")
def port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    server = ServerProcess(tmp_path_factory.mktemp("errors") / "data").start()
    yield server.port
    server.kill()


def _ask(port: int, *requests: bytes) -> list[bytes]:
    """Send inline requests on one connection; return one reply line (or whole reply) per request."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        replies = []
        for request in requests:
            sock.sendall(request + b"\r\n")
            replies.append(sock.recv(65536))
        return replies


@pytest.mark.parametrize(
    ("request_line", "reply"),
    [
        (b"QLEN nope", b"-NOQUEUE no such queue 'nope'\r\n"),
        (b"QPRODUCE nope ITEMS a", b"-NOQUEUE no such queue 'nope'\r\n"),
        (b"QCREATE e1 DEAD-QUEUE nope", b"-NOQUEUE no such queue 'nope'\r\n"),
        (b"QCREATE e1 PARTITIONS 0", b"-ERR PARTITIONS must be between 1 and 1024\r\n"),
        (b"QCREATE e1 PARTITIONS 1025", b"-ERR PARTITIONS must be between 1 and 1024\r\n"),
        (b"QCREATE e1 LEASE-TIMEOUT 0", b"-ERR LEASE-TIMEOUT must be between 1 and 604800000\r\n"),
        (b"QCREATE e1 MAX-ATTEMPTS 65537", b"-ERR MAX-ATTEMPTS must be between 0 and 65536\r\n"),
        (
            b"QCREATE e1 LEASE-TIMEOUT 5000 EXPIRE-TIMEOUT 10",
            b"-ERR EXPIRE-TIMEOUT must be 0 or at least the lease timeout (5000)\r\n",
        ),
        (
            b"QCREATE e1 PARTITIONS abc",
            b"-ERR value is not an integer or out of range; PARTITIONS takes an integer\r\n",
        ),
        (
            b"QLEASE base COUNT abc",
            b"-ERR value is not an integer or out of range; COUNT takes an integer\r\n",
        ),
        (b"QCREATE e1 COLOUR blue", b"-ERR syntax error\r\n"),
        (b"QCREATE e1 PARTITIONS", b"-ERR syntax error\r\n"),
        (b'QCREATE "a b"', b"-ERR invalid queue name; only visible ASCII characters, no whitespace\r\n"),
        (b'QCREATE ""', b"-ERR invalid queue name; it may not be empty\r\n"),
        (b"QCREATE " + b"x" * 513, b"-ERR invalid queue name; at most 512 bytes\r\n"),
        (b"QLEASE base COUNT 0", b"-ERR COUNT must be between 1 and 1000\r\n"),
        (b"QLEASE base COUNT 1001", b"-ERR COUNT must be between 1 and 1000\r\n"),
        (b"QLEASE base BLOCK -1", b"-ERR BLOCK must be at least 0\r\n"),
        (b"QLEASE base WAIT 1", b"-ERR syntax error\r\n"),
        (b"QPRODUCE base DELAY -5 ITEMS a", b"-ERR DELAY must be at least 0\r\n"),
        (
            b"QPRODUCE base a b",
            b"-ERR syntax error; ITEMS is missing: it must come before the first payload\r\n",
        ),
        (
            b"QPRODUCE base KIND k hello",
            b"-ERR syntax error; ITEMS is missing: it must come before the first payload\r\n",
        ),
        # An unknown option before ITEMS is Redis's bare syntax error: ITEMS is there.
        (b"QPRODUCE base COLOUR blue ITEMS a", b"-ERR syntax error\r\n"),
        (
            b"QPRODUCE base AT 1795805254 ITEMS a",
            b"-ERR AT must be a Unix time in milliseconds; 1795805254 looks like seconds "
            b"(did you mean 1795805254000?)\r\n",
        ),
        (
            b"QRETRY base AT 1795805254 1-0-1",
            b"-ERR AT must be a Unix time in milliseconds; 1795805254 looks like seconds "
            b"(did you mean 1795805254000?)\r\n",
        ),
        # Options first, then at least one id: a lone option is Redis's arity error, not an invalid id.
        (b"QRETRY base DEAD", b"-ERR wrong number of arguments for 'qretry' command\r\n"),
        (b"QRETRY base DELAY 5", b"-ERR wrong number of arguments for 'qretry' command\r\n"),
        (b"QEXTEND base FOR 5", b"-ERR wrong number of arguments for 'qextend' command\r\n"),
        (b"QPRODUCE base ITEMS", b"-ERR wrong number of arguments for 'qproduce' command\r\n"),
        (b"QCOMPLETE base abc", b"-ERR invalid id 'abc'\r\n"),
        (b"QCOMPLETE base 1-5-1", b"-ERR invalid id '1-5-1'\r\n"),
        (b"QRETRY base DELAY -1 1-0-1", b"-ERR DELAY must be at least 0\r\n"),
        (b"QEXTEND base FOR -1 1-0-1", b"-ERR FOR must be between 0 and 604800000\r\n"),
        (b"QITEMS base LIMIT 0", b"-ERR LIMIT must be between 1 and 1000\r\n"),
        (b"QLIST LIMIT 0", b"-ERR LIMIT must be between 1 and 100000\r\n"),
        (b"QLIST LIMIT 100001", b"-ERR LIMIT must be between 1 and 100000\r\n"),
        (b"QCLEAR base SOME", b"-ERR syntax error\r\n"),
        (b"QLEASE", b"-ERR wrong number of arguments for 'qlease' command\r\n"),
    ],
)
def test_error_reply_is_exact(port: int, request_line: bytes, reply: bytes) -> None:
    _ask(port, b"QCREATE base")
    assert _ask(port, request_line)[0] == reply


def test_exists_and_dead_queue_rules(port: int) -> None:
    replies = _ask(
        port,
        b"QCREATE dup",
        b"QCREATE dup",
        b"QCREATE self-dead DEAD-QUEUE self-dead",
        b"QCREATE holder DEAD-QUEUE dup",
        b"QDELETE dup",
        b"QDELETE never-was",
    )
    assert replies == [
        b"+OK\r\n",
        b"-EXISTS queue 'dup' already exists\r\n",
        b"-ERR DEAD-QUEUE may not be the queue itself\r\n",
        b"+OK\r\n",
        b"-ERR queue 'dup' is the dead queue of 'holder'; change that queue first\r\n",
        b"-NOQUEUE no such queue 'never-was'\r\n",
    ]


def test_an_oversized_item_fails_the_whole_produce(port: int) -> None:
    big = b"x" * (1024 * 1024 + 1)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"QCREATE big-items\r\n")
        assert sock.recv(100) == b"+OK\r\n"
        sock.sendall(
            b"*5\r\n$8\r\nQPRODUCE\r\n$9\r\nbig-items\r\n$5\r\nITEMS\r\n$1\r\na\r\n$%d\r\n%b\r\n"
            % (len(big), big)
        )
        assert sock.recv(100) == b"-ERR item payload too large; max-item-bytes is 1048576\r\n"
        sock.sendall(b"QLEN big-items\r\n")
        assert sock.recv(100) == b":0\r\n"


def test_overloaded_partition_answers_tryagain_and_applies_nothing(tmp_path: Path) -> None:
    config = tmp_path / "small-inbox.toml"
    config.write_text("partition-inbox = 2\n")
    server = ServerProcess(tmp_path / "data", "--config", str(config)).start()
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(b"QCREATE q\r\n")
            assert sock.recv(100) == b"+OK\r\n"
            # 50 produces in one pipeline reach the partition in one turn: only 2 fit its inbox.
            sock.sendall(b"QPRODUCE q ITEMS x\r\n" * 50)
            reader = hiredis.Reader()
            replies: list[object] = []
            while len(replies) < 50:
                chunk = sock.recv(65536)
                assert chunk, "connection closed"
                reader.feed(chunk)
                while (reply := reader.gets()) is not False:
                    replies.append(reply)
            tryagain = sum(
                1
                for r in replies
                if isinstance(r, hiredis.ReplyError)
                and str(r) == "TRYAGAIN partition is overloaded; queue 'q' partition 0"
            )
            accepted = sum(1 for r in replies if isinstance(r, list) and len(r) == 1)
            assert tryagain >= 1 and accepted + tryagain == 50
            sock.sendall(b"QLEN q\r\n")
            assert sock.recv(100) == b":%d\r\n" % accepted
    finally:
        server.kill()


def test_queues_declared_in_the_config_file_exist_at_start(tmp_path: Path) -> None:
    config = tmp_path / "declared.toml"
    config.write_text(
        '[[queue]]\nname = "dead"\n'
        '[[queue]]\nname = "jobs"\npartitions = 3\nlease-timeout = 5000\n'
        'max-attempts = 4\ndead-queue = "dead"\n'
    )
    server = ServerProcess(tmp_path / "data", "--config", str(config)).start()
    try:
        replies = _ask(server.port, b"QLIST", b"QINFO jobs")
        assert replies[0] == b"*2\r\n$4\r\ndead\r\n$4\r\njobs\r\n"
        info = replies[1]
        for field in (
            b"$10\r\npartitions\r\n:3\r\n",
            b"$13\r\nlease-timeout\r\n:5000\r\n",
            b"$10\r\ndead-queue\r\n$4\r\ndead\r\n",
        ):
            assert field in info
        # A restart with the same file does not fail on the queues that now exist.
        server.stop()
        server.start()
        assert _ask(server.port, b"QLEN jobs") == [b":0\r\n"]
    finally:
        server.kill()
