"""The one dispatcher: from a parsed request to its handler's result, every check taken from the table.

In Redis's order (`processCommand`): the command must exist, its arity must fit, the client must be
authenticated (unless the command is `no-auth`), a container command must name a known subcommand whose
arity fits, and a restricted user must hold the command's permission group and may only name queues its
patterns allow. A failed check raises a `QueratorError` with Redis's exact text; nothing has run.

It also keeps Redis's command statistics (INFO's Commandstats, the duration histogram, SLOWLOG): a command
refused by a check is `rejected`, one whose handler raised is `failed`. A reply that is not ready yet (a
`Deferred`) carries its counters to the connection, which counts its failure and its full duration.
"""

from __future__ import annotations

from bisect import bisect_left
from time import perf_counter_ns

from querator.auth import User
from querator.clients import ClientState
from querator.commands.reply import Deferred
from querator.commands.table import Command, CommandTable
from querator.commandstats import BUCKET_BOUNDS_NS, CommandStats
from querator.errors import (
    AUTH_REQUIRED,
    CommandError,
    NoAuthError,
    NoPermError,
    QueratorError,
    unknown_subcommand,
    wrong_arity,
)

# Redis shows at most this many bytes of the arguments of an unknown command.
_UNKNOWN_ARGS_SHOWN = 128
# Their arguments hold passwords: never in the slow log (Redis redacts them).
_NOT_SLOWLOGGED = frozenset({"auth", "hello"})
_FIRST_BOUND_NS = BUCKET_BOUNDS_NS[0]


class Dispatcher:
    __slots__ = ("table",)

    def __init__(self, table: CommandTable) -> None:
        self.table = table

    def __call__(self, client: ClientState, args: list[bytes]) -> object:
        command = self.table.get(args[0].lower())
        if command is None:
            raise CommandError(_unknown_command_text(args))
        client.last_command = command.name
        server = client.server
        # The checks stay inline: this runs for every command, and a call per command is measurable.
        try:
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
        except QueratorError:
            server.statistics.of(command).rejected += 1
            raise
        handler = command.handler
        assert handler is not None, f"{command.full_name} has no handler"
        stats = server.statistics.by_id.get(id(command)) or server.statistics.of(command)
        start = perf_counter_ns()
        try:
            result = handler(client, args)
        except Exception:
            _failed(client, command, stats, args, perf_counter_ns() - start)
            raise
        elapsed = perf_counter_ns() - start
        stats.calls += 1
        stats.run_ns += elapsed
        if type(result) is Deferred:
            # The connection counts its failure and its whole duration once the reply is ready.
            result.stats = stats
            result.started_ns = start
            result.ran_ns = elapsed
        elif elapsed <= _FIRST_BOUND_NS:  # most commands: one comparison instead of a bisect
            stats.buckets[0] += 1
        else:
            stats.buckets[bisect_left(BUCKET_BOUNDS_NS, elapsed)] += 1
        if elapsed >= server.slowlog.threshold_ns:
            _slow(client, command, args, elapsed)
        return result


def _failed(
    client: ClientState, command: Command, stats: CommandStats, args: list[bytes], elapsed: int
) -> None:
    stats.calls += 1
    stats.failed += 1
    stats.run_ns += elapsed
    stats.buckets[bisect_left(BUCKET_BOUNDS_NS, elapsed)] += 1
    if elapsed >= client.server.slowlog.threshold_ns:
        _slow(client, command, args, elapsed)


def _slow(client: ClientState, command: Command, args: list[bytes], elapsed_ns: int) -> None:
    """Into the slow log, as Redis logs every command that ran, failed ones included."""
    if command.name.lower() not in _NOT_SLOWLOGGED:
        client.server.slowlog.add(args, elapsed_ns, client.addr, client.name)


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
