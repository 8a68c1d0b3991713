"""The declarative command table: every command is declared once, as data.

The dispatcher alone checks existence and arity (with Redis's exact texts); `COMMAND`, `COMMAND DOCS`
and `docs/commands.md` are generated from the same declarations, so they cannot drift apart.
Arity follows Redis: a positive number is exact, a negative one a minimum (the name counts as one).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from querator.errors import NOT_AN_INTEGER, SYNTAX_ERROR, CommandError

if TYPE_CHECKING:
    from querator.clients import ClientState

Handler = Callable[["ClientState", list[bytes]], Any]


@dataclass(slots=True, frozen=True)
class Arg:
    """One argument as COMMAND DOCS describes it (`type` is Redis's: string, integer, key, pure-token,
    oneof, block)."""

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
    subcommands: dict[str, Command] = field(default_factory=dict)

    @property
    def no_auth(self) -> bool:
        return "no-auth" in self.flags


COMMANDS: dict[bytes, Command] = {}


def register(command: Command) -> Command:
    COMMANDS[command.name.lower().encode()] = command
    return command


def subcommand(parent: Command, sub: Command) -> Command:
    parent.subcommands[sub.name.lower()] = sub
    return sub


def arity_ok(arity: int, argc: int) -> bool:
    return argc == arity if arity > 0 else argc >= -arity


def wrong_arity(name: str) -> CommandError:
    return CommandError(f"wrong number of arguments for '{name}' command")


class ArgCursor:
    """Reads a command's arguments left to right, with one error text per kind of mistake."""

    __slots__ = ("args", "pos")

    def __init__(self, args: list[bytes], pos: int = 1) -> None:
        self.args = args
        self.pos = pos

    def __bool__(self) -> bool:
        return self.pos < len(self.args)

    def remaining(self) -> int:
        return len(self.args) - self.pos

    def peek_upper(self) -> bytes | None:
        return self.args[self.pos].upper() if self.pos < len(self.args) else None

    def next_bytes(self) -> bytes:
        if self.pos >= len(self.args):
            raise CommandError(SYNTAX_ERROR)
        value = self.args[self.pos]
        self.pos += 1
        return value

    def next_str(self) -> str:
        return self.next_bytes().decode("utf-8", "surrogateescape")

    def next_int(self) -> int:
        """The next argument as an integer; ranges are the `Service`'s to check, so they live in one place."""
        return parse_int(self.next_bytes())

    def rest(self) -> list[bytes]:
        rest = self.args[self.pos :]
        self.pos = len(self.args)
        return rest


def parse_int(raw: bytes) -> int:
    """Redis's integer rules: optional '-', decimal digits, fits in a signed 64-bit integer."""
    digits = raw[1:] if raw[:1] == b"-" else raw
    if not digits.isdigit() or len(raw) > 20 or (digits[:1] == b"0" and len(digits) > 1):
        raise CommandError(NOT_AN_INTEGER)
    value = int(raw)
    if not -(2**63) <= value < 2**63:
        raise CommandError(NOT_AN_INTEGER)
    return value
