"""The dispatcher's checks, in Redis's order and with Redis's exact texts, through a fake transport."""

from __future__ import annotations

import pytest

from querator.commands import build_table
from querator.config import UserDeclaration
from tests.commands.harness import connected
from tests.support import run


@pytest.mark.parametrize(
    ("line", "reply"),
    [
        (b"NOPE a b", b"-ERR unknown command 'NOPE', with args beginning with: 'a' 'b' \r\n"),
        (b"QLEASE", b"-ERR wrong number of arguments for 'qlease' command\r\n"),
        (b"PING a b", b"-ERR wrong number of arguments for 'ping' command\r\n"),
        (b"CLIENT FOO", b"-ERR unknown subcommand 'FOO'. Try CLIENT HELP.\r\n"),
        (b"CLIENT SETNAME", b"-ERR wrong number of arguments for 'client|setname' command\r\n"),
        (b"CONFIG GET", b"-ERR wrong number of arguments for 'config|get' command\r\n"),
        (b"CONFIG FOO", b"-ERR unknown subcommand 'FOO'. Try CONFIG HELP.\r\n"),
        (b"COMMAND FOO", b"-ERR unknown subcommand 'FOO'. Try COMMAND HELP.\r\n"),
        (b"COMMAND COUNT x", b"-ERR wrong number of arguments for 'command|count' command\r\n"),
        (b"COMMAND LIST FILTERBY x", b"-ERR syntax error\r\n"),
        (
            b"CONFIG SET port 1",
            b"-ERR CONFIG SET is not supported; settings are read once at start: change the config file "
            b"given to --config (or the flags) and restart\r\n",
        ),
        (b"CONFIG RESETSTAT", b"+OK\r\n"),
    ],
)
def test_dispatch_errors_are_exact(line: bytes, reply: bytes) -> None:
    async def main() -> None:
        async with connected() as wire:
            assert await wire.call(line) == reply

    run(main())


@pytest.mark.parametrize("container", ["CLIENT", "CONFIG", "COMMAND"])
def test_every_container_command_has_a_generated_help(container: str) -> None:
    """HELP lists each subcommand with its summary, from the table (CONFIG HELP used to be unknown)."""
    table = build_table()
    command = table.get(container.lower().encode())
    assert command is not None

    async def main() -> None:
        async with connected() as wire:
            reply = await wire.call(container.encode() + b" HELP")
        lines = reply.split(b"\r\n")
        assert lines[0] == b"*%d" % (1 + 2 * len(command.subcommands))
        assert (
            lines[1]
            == b"+" + container.encode() + b" <subcommand> [<arg> [value] [opt] ...]. Subcommands are:"
        )
        entries = lines[2:-1]  # the reply ends with CRLF
        assert [line[1:] for line in entries[0::2]] == [
            sub.name.encode() for sub in command.subcommands.values()
        ]
        assert [line[1:] for line in entries[1::2]] == [
            b"    " + sub.summary.encode() for sub in command.subcommands.values()
        ]

    run(main())


def test_authentication_comes_after_arity_and_before_subcommands() -> None:
    async def main() -> None:
        async with connected(requirepass="secret") as wire:
            assert await wire.call(b"QLEASE") == b"-ERR wrong number of arguments for 'qlease' command\r\n"
            assert await wire.call(b"QLEN q") == b"-NOAUTH Authentication required.\r\n"
            assert await wire.call(b"CLIENT FOO") == b"-NOAUTH Authentication required.\r\n"
            assert await wire.call(b"AUTH secret") == b"+OK\r\n"
            assert await wire.call(b"QLEN q") == b"-NOQUEUE no such queue 'q'\r\n"

    run(main())


def test_a_restricted_user_gets_redis_noperm_texts() -> None:
    reader = UserDeclaration(name="reader", password="pw", queues=["jobs*"], commands=["consume"])

    async def main() -> None:
        async with connected(requirepass="secret", users=[reader]) as wire:
            assert await wire.call(b"AUTH reader pw") == b"+OK\r\n"
            assert await wire.call(b"QPRODUCE jobs ITEMS a") == (
                b"-NOPERM User reader has no permissions to run the 'qproduce' command\r\n"
            )
            assert await wire.call(b"QLEASE other") == b"-NOPERM No permissions to access a key\r\n"
            assert await wire.call(b"QLEASE jobs") == b"-NOQUEUE no such queue 'jobs'\r\n"

    run(main())


def test_the_table_is_built_afresh_each_time() -> None:
    """No import side effects: two builds are equal and independent."""
    first, second = build_table(), build_table()
    assert [c.name for c in first] == [c.name for c in second]
    assert len(first) == len(second) > 20
