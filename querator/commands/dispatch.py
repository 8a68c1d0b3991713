"""The one dispatcher: from a parsed request to its handler's result, every check taken from the table.

In Redis's order (`processCommand`): the command must exist, its arity must fit, the client must be
authenticated (unless the command is `no-auth`), a container command must name a known subcommand whose
arity fits, and a restricted user must hold the command's permission group and may only name queues its
patterns allow. A failed check raises a `QueratorError` with Redis's exact text; nothing has run.
"""

from __future__ import annotations

from querator.auth import User
from querator.clients import ClientState
from querator.commands.table import Command, CommandTable
from querator.errors import (
    AUTH_REQUIRED,
    CommandError,
    NoAuthError,
    NoPermError,
    unknown_subcommand,
    wrong_arity,
)

# Redis shows at most this many bytes of the arguments of an unknown command.
_UNKNOWN_ARGS_SHOWN = 128


class Dispatcher:
    __slots__ = ("table",)

    def __init__(self, table: CommandTable) -> None:
        self.table = table

    def __call__(self, client: ClientState, args: list[bytes]) -> object:
        command = self.table.get(args[0].lower())
        if command is None:
            raise CommandError(_unknown_command_text(args))
        client.last_command = command.name
        argc = len(args)
        arity = command.arity
        if arity != argc and (arity > 0 or argc < -arity):
            raise wrong_arity(command.full_name)
        if not client.authenticated and not command.no_auth:
            raise NoAuthError(AUTH_REQUIRED)
        if command.subcommands and argc > 1:
            command = _subcommand(command, args)
        if command.acl is not None and not client.acl.unrestricted:
            _check_permission(client.acl, command, args)
        handler = command.handler
        assert handler is not None, f"{command.full_name} has no handler"
        return handler(client, args)


def _subcommand(parent: Command, args: list[bytes]) -> Command:
    sub = parent.subcommands.get(args[1].lower())
    if sub is None:
        raise unknown_subcommand(args[1].decode("utf-8", "replace"), parent.name)
    arity = sub.arity
    if arity != len(args) and (arity > 0 or len(args) < -arity):
        raise wrong_arity(sub.full_name)
    return sub


def _check_permission(user: User, command: Command, args: list[bytes]) -> None:
    """Redis's NOPERM replies: the user may not run this command group, or not on this queue."""
    assert command.acl is not None
    if not user.may_use(command.acl):
        raise NoPermError(f"User {user.name} has no permissions to run the '{command.full_name}' command")
    if command.first_key and len(args) > command.first_key:
        queue = args[command.first_key].decode("utf-8", "surrogateescape")
        if not user.may_access(queue):
            raise NoPermError("No permissions to access a key")


def _unknown_command_text(args: list[bytes]) -> str:
    """Redis's text: `unknown command 'FOO', with args beginning with: 'a' 'b' `. The argument list stops
    growing once it reaches 128 bytes; each one is cut to what is left of that. Bytes that are not UTF-8
    come back exactly as sent (surrogate escapes, undone by the encoder)."""
    shown = b""
    for arg in args[1:]:
        if len(shown) >= _UNKNOWN_ARGS_SHOWN:
            break
        shown += b"'" + arg[: _UNKNOWN_ARGS_SHOWN - len(shown)] + b"' "
    name = args[0][:_UNKNOWN_ARGS_SHOWN]
    text = b"unknown command '%b', with args beginning with: %b" % (name, shown)
    return text.decode("utf-8", "surrogateescape")
