"""Reading a command's arguments: one cursor, and one option parser driven by the command's declaration.

Handlers never loop over keywords themselves: the options a command takes are the tokens of its `Arg`
declarations (the same ones COMMAND DOCS shows), so what is documented is exactly what is accepted. Every
error text for a bad argument is written here once: Redis's fixed sentence, then `; ` and the details.
"""

from __future__ import annotations

from querator.commands.table import Arg
from querator.errors import NOT_AN_INTEGER, SYNTAX_ERROR, CommandError

_FLAG = "pure-token"
_INTEGER = "integer"


class OptionSpec:
    """The keyword options of a command, read from its `Arg` declarations: a token followed by an integer
    or a string, or a token alone (a flag). `oneof` children are options of their own (the Service judges
    combinations such as DELAY with AT). A token with `multiple` (QPRODUCE's ITEMS) ends the options and
    starts the variadic tail."""

    __slots__ = ("args", "kinds", "tail_name", "tail_token")

    def __init__(self, *args: Arg) -> None:
        self.args = args
        self.kinds: dict[bytes, str] = {}
        self.tail_token: bytes | None = None
        self.tail_name = ""
        for arg in args:
            self._collect(arg)

    def _collect(self, arg: Arg) -> None:
        if arg.type == "oneof":
            for child in arg.children:
                self._collect(child)
        elif arg.token is not None and arg.multiple:
            self.tail_token = arg.token.encode()
            self.tail_name = arg.name
        elif arg.token is not None:
            self.kinds[arg.token.encode()] = arg.type


class Options:
    """The options one call gave: token -> value (an int, bytes, or True for a flag)."""

    __slots__ = ("_values",)

    def __init__(self, values: dict[bytes, int | bytes | bool]) -> None:
        self._values = values

    def integer(self, token: bytes) -> int | None:
        value = self._values.get(token)
        return value if type(value) is int else None

    def raw(self, token: bytes) -> bytes | None:
        value = self._values.get(token)
        return value if type(value) is bytes else None

    def text(self, token: bytes) -> str | None:
        value = self.raw(token)
        return None if value is None else value.decode("utf-8", "surrogateescape")

    def flag(self, token: bytes) -> bool:
        return self._values.get(token) is True


class ArgCursor:
    """Reads a command's arguments left to right."""

    __slots__ = ("args", "pos")

    def __init__(self, args: list[bytes], pos: int = 1) -> None:
        self.args = args
        self.pos = pos

    def __bool__(self) -> bool:
        return self.pos < len(self.args)

    def remaining(self) -> int:
        return len(self.args) - self.pos

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

    def finish(self) -> None:
        """Nothing may be left over: a word no declaration accounts for is a syntax error, as in Redis."""
        if self.pos < len(self.args):
            raise CommandError(SYNTAX_ERROR)

    def options(self, spec: OptionSpec, *, then_tail: bool = False) -> Options:
        """Read keyword options, in any order (the last of a repeated one wins).

        Without `then_tail`, options run to the end (or to the spec's tail token, which must come: the
        rest is the tail). With it, they stop at the first word that is not an option, where a required
        variadic tail (ids) begins.
        """
        args = self.args
        kinds = spec.kinds
        values: dict[bytes, int | bytes | bool] = {}
        while self.pos < len(args):
            word = args[self.pos].upper()
            kind = kinds.get(word)
            if kind is None:
                if then_tail:
                    break
                if word == spec.tail_token:
                    self.pos += 1
                    return Options(values)
                raise CommandError(self._unknown_option(spec))
            self.pos += 1
            if kind == _FLAG:
                values[word] = True
                continue
            if self.pos >= len(args):
                raise CommandError(SYNTAX_ERROR)
            raw = args[self.pos]
            self.pos += 1
            values[word] = parse_int(raw, word) if kind == _INTEGER else raw
        if spec.tail_token is not None and not then_tail:
            raise CommandError(self._missing_tail(spec))
        return Options(values)

    def _unknown_option(self, spec: OptionSpec) -> str:
        """An unknown option is Redis's bare `syntax error`; but when the tail's token never comes, the
        word was most likely meant as the first payload, so say what is missing."""
        if spec.tail_token is None or any(a.upper() == spec.tail_token for a in self.args[self.pos :]):
            return SYNTAX_ERROR
        return self._missing_tail(spec)

    @staticmethod
    def _missing_tail(spec: OptionSpec) -> str:
        assert spec.tail_token is not None
        token = spec.tail_token.decode()
        return f"{SYNTAX_ERROR}; {token} is missing: it must come before the first {spec.tail_name}"


def parse_int(raw: bytes, option: bytes | None = None) -> int:
    """Redis's integer rules: optional '-', decimal digits, fits in a signed 64-bit integer. With `option`
    the error names it, after Redis's text."""
    digits = raw[1:] if raw[:1] == b"-" else raw
    if digits.isdigit() and len(raw) <= 20 and (digits[:1] != b"0" or len(digits) == 1):
        value = int(raw)
        if -(2**63) <= value < 2**63:
            return value
    detail = f"; {option.decode()} takes an integer" if option is not None else ""
    raise CommandError(NOT_AN_INTEGER + detail)
