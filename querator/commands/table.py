"""The command table: every command is declared once, as data, beside its handler.

The dispatcher checks existence, arity, authentication, subcommands and permissions from these
declarations alone; `COMMAND`, `COMMAND DOCS`, the generated `HELP` subcommands and `docs/commands.md` are
generated from the same declarations, so they cannot drift apart. Arity follows Redis: a positive number
is exact, a negative one a minimum (the name counts as one). The table is built explicitly by
`querator.commands.build_table`, never by import side effects.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace

from querator.clients import ClientState
from querator.resp import SimpleString

Handler = Callable[[ClientState, list[bytes]], object]


@dataclass(slots=True, frozen=True)
class Arg:
    """One argument as COMMAND DOCS describes it (`type` is Redis's: string, integer, key, pure-token,
    oneof, block). Optional arguments with a token are the command's keyword options."""

    name: str
    type: str = "string"
    token: str | None = None
    optional: bool = False
    multiple: bool = False
    children: tuple[Arg, ...] = ()

    def __post_init__(self) -> None:
        # redis-cli builds its hints from COMMAND DOCS and crashes on a oneof/block without arguments.
        if self.type in ("oneof", "block") and not self.children:
            raise ValueError(f"argument '{self.name}' of type {self.type} needs children")


@dataclass(slots=True)
class Command:
    name: str
    arity: int
    group: str
    summary: str
    handler: Handler | None = None
    flags: tuple[str, ...] = ()
    args: tuple[Arg, ...] = ()
    # Key positions for COMMAND INFO (the queue name is the "key" of queue commands).
    first_key: int = 0
    last_key: int = 0
    key_step: int = 0
    since: str = "0.1.0"
    # Permission group checked for restricted users (querator.auth): produce, consume, admin, read; None:
    # any authenticated user may run it.
    acl: str | None = None
    # For docs/commands.md: what a success replies, and the errors beyond the generic ones (arity,
    # unknown option, not an integer) that every command shares.
    reply: str = ""
    errors: tuple[str, ...] = ()
    subcommands: dict[bytes, Command] = field(default_factory=dict)
    # The container command of a subcommand (`CLIENT` for `CLIENT SETNAME`); empty for a command.
    parent: str = ""

    @property
    def no_auth(self) -> bool:
        return "no-auth" in self.flags

    @property
    def full_name(self) -> str:
        """The name Redis uses in errors and COMMAND INFO: `qlease`, `client|setname`."""
        return f"{self.parent.lower()}|{self.name.lower()}" if self.parent else self.name.lower()

    @property
    def usage_name(self) -> str:
        """The name as typed: `QLEASE`, `CLIENT SETNAME`."""
        return f"{self.parent} {self.name}" if self.parent else self.name


def with_subcommands(parent: Command, *subs: Command) -> Command:
    """`parent` with its subcommands, named `parent|sub`, plus a generated `HELP` listing them."""
    help_sub = Command("HELP", 2, parent.group, "Returns helpful text about the subcommands.")
    children = [*subs, help_sub]
    lines = _help_lines(parent.name, children)
    help_sub.handler = lambda _client, _args: lines
    table = {sub.name.lower().encode(): replace(sub, parent=parent.name) for sub in children}
    return replace(parent, subcommands=table)


def _help_lines(parent: str, subs: Iterable[Command]) -> list[SimpleString]:
    lines = [f"{parent} <subcommand> [<arg> [value] [opt] ...]. Subcommands are:"]
    for sub in subs:
        lines.append(sub.name)
        lines.append(f"    {sub.summary}")
    return [SimpleString(line) for line in lines]


class CommandTable:
    """Commands by lower-case name; built once at start, read by the dispatcher and COMMAND."""

    __slots__ = ("_commands",)

    def __init__(self) -> None:
        self._commands: dict[bytes, Command] = {}

    def add(self, *commands: Command) -> None:
        for command in commands:
            key = command.name.lower().encode()
            if key in self._commands:
                raise ValueError(f"command {command.name} declared twice")
            self._commands[key] = command

    def get(self, lower_name: bytes) -> Command | None:
        return self._commands.get(lower_name)

    def __len__(self) -> int:
        return len(self._commands)

    def __iter__(self) -> Iterator[Command]:
        return iter(self._commands.values())
