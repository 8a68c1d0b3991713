"""redis-cli against a real server (SPEC section 2: `redis-cli` must work, in argument and inline form)."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator

import pytest
import redis

from tests.support import ServerProcess

REDIS_CLI = shutil.which("redis-cli")
pytestmark = pytest.mark.skipif(
    REDIS_CLI is None, reason="redis-cli is not installed (apt-get install redis-tools)"
)

ID = re.compile(rb"^\S+$")


def cli(port: int, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    assert REDIS_CLI is not None
    return subprocess.run(
        [REDIS_CLI, "-p", str(port), *args],
        input=stdin if stdin is not None else b"",
        capture_output=True,
        timeout=20,
        check=False,
    )


def ok(result: subprocess.CompletedProcess[bytes]) -> bytes:
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    assert result.stderr == b"", result.stderr
    return result.stdout


def commands_processed(client: redis.Redis) -> int:
    return int(client.info("stats")["total_commands_processed"])


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("cli") / "data").start()
    yield proc
    proc.kill()


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("cli-auth") / "data", "--requirepass", "secret").start()
    yield proc
    proc.kill()


def test_argument_form(srv: ServerProcess) -> None:
    assert ok(cli(srv.port, "PING")) == b"PONG\n"
    assert ok(cli(srv.port, "QCREATE", "cli_args")) == b"OK\n"
    produced = ok(cli(srv.port, "QPRODUCE", "cli_args", "ITEMS", "a")).splitlines()
    assert len(produced) == 1 and ID.match(produced[0]), produced
    assert ok(cli(srv.port, "QLEN", "cli_args")) == b"1\n"
    assert ok(cli(srv.port, "--no-raw", "QLEN", "cli_args")) == b"(integer) 1\n"
    leased = ok(cli(srv.port, "QLEASE", "cli_args")).splitlines()
    assert leased[:3] == [produced[0], b"a", b"1"]
    assert ok(cli(srv.port, "QLEN", "cli_args")) == b"0\n"
    assert ok(cli(srv.port, "QCOMPLETE", "cli_args", produced[0].decode())) == b"1\n"


def test_argument_form_errors(srv: ServerProcess) -> None:
    out = ok(cli(srv.port, "QLEASE"))
    assert out.strip() == b"ERR wrong number of arguments for 'qlease' command"
    out = ok(cli(srv.port, "FOO", "a"))
    assert out.strip() == b"ERR unknown command 'FOO', with args beginning with: 'a'"
    out = ok(cli(srv.port, "QLEN", "cli_no_such_queue"))
    assert out.strip() == b"NOQUEUE no such queue 'cli_no_such_queue'"


def test_inline_form_via_stdin(srv: ServerProcess) -> None:
    ok(cli(srv.port, "QCREATE", "cli_stdin"))
    ok(cli(srv.port, "QPRODUCE", "cli_stdin", "ITEMS", "x", "y"))
    out = ok(cli(srv.port, stdin=b"PING\nQLEN cli_stdin\n"))
    assert out == b"PONG\n2\n"
    out = ok(cli(srv.port, stdin=b'ECHO "two words"\nINFO persistence\n'))
    assert out.startswith(b"two words\n# Persistence\r\nloading:0\r\n")


def test_stdin_mode_fetches_command_docs_without_crashing(srv: ServerProcess) -> None:
    # Without a command, redis-cli asks COMMAND DOCS for its hints before running the input; a doc it
    # cannot digest makes it crash. Compare with argument mode (no docs) on one observer connection.
    observer = redis.Redis(port=srv.port, protocol=2)
    try:
        start = commands_processed(observer)
        assert ok(cli(srv.port, "PING")) == b"PONG\n"
        middle = commands_processed(observer)
        assert ok(cli(srv.port, stdin=b"PING\n")) == b"PONG\n"
        end = commands_processed(observer)
    finally:
        observer.close()
    argument_mode, stdin_mode = middle - start, end - middle
    assert stdin_mode > argument_mode, "redis-cli sent no COMMAND DOCS: the test did not exercise the docs"


def test_command_docs_printed(srv: ServerProcess) -> None:
    out = ok(cli(srv.port, "COMMAND", "DOCS", "qlease"))
    lines = out.splitlines()
    assert lines[0] == b"qlease"
    assert b"summary" in lines and b"arguments" in lines and b"BLOCK" in lines
    assert ok(cli(srv.port, "COMMAND", "COUNT")).strip().isdigit()


def test_resp3(srv: ServerProcess) -> None:
    assert ok(cli(srv.port, "-3", "PING")) == b"PONG\n"
    hello = ok(cli(srv.port, "-3", "HELLO", "3")).splitlines()
    assert b"proto 3" in hello and b"server querator" in hello
    ok(cli(srv.port, "-3", "QCREATE", "cli_resp3"))
    out = ok(cli(srv.port, "-3", stdin=b"PING\nQLEN cli_resp3\nCLIENT GETNAME\n"))
    assert out.splitlines()[:2] == [b"PONG", b"0"]
    info = ok(cli(srv.port, "-3", "CLIENT", "INFO"))
    assert b" resp=3 " in info


def test_password(secured: ServerProcess) -> None:
    auth = ("-a", "secret", "--no-auth-warning")
    assert ok(cli(secured.port, *auth, "PING")) == b"PONG\n"
    assert ok(cli(secured.port, "-3", *auth, "PING")) == b"PONG\n"
    assert ok(cli(secured.port, *auth, stdin=b"PING\nECHO hi\n")) == b"PONG\nhi\n"
    assert ok(cli(secured.port, "-3", *auth, stdin=b"PING\n")) == b"PONG\n"
    # Without the password: the NOAUTH reply is shown.
    assert ok(cli(secured.port, "PING")).strip() == b"NOAUTH Authentication required."
    # A wrong one: redis-cli reports the WRONGPASS text.
    bad = cli(secured.port, "-a", "wrong", "--no-auth-warning", "PING")
    assert b"WRONGPASS invalid username-password pair or user is disabled." in bad.stderr
