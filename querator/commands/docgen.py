"""Generates docs/commands.md from the command table: `python -m querator.commands.docgen`.

Each command's syntax, reply and errors come from its declaration, so the reference cannot drift from
what the server accepts (a test regenerates it and compares).
"""

from __future__ import annotations

from querator.commands import build_table
from querator.commands.table import Arg, Command

_GENERIC_ERRORS = (
    "Every command answers `-ERR wrong number of arguments for '<name>' command` when its arity does not "
    "fit, and `-NOAUTH Authentication required.` before a password was given when one is needed. An option "
    "unknown to a command is `-ERR syntax error`; an option whose value should be an integer and is not is "
    "`-ERR value is not an integer or out of range; <OPTION> takes an integer`. A restricted user gets "
    "`-NOPERM ...` for a command group or a queue it may not use. Queue commands answer "
    "`-TRYAGAIN ...` when a partition is overloaded or its storage failed, and `-SHUTDOWN server is "
    "shutting down` while the server stops; in both cases nothing was applied."
)


def _syntax(arg: Arg) -> str:
    if arg.type == "pure-token":
        text = arg.token or arg.name
    elif arg.type == "oneof":
        text = " | ".join(_syntax(child) for child in arg.children)
    elif arg.type == "block":
        text = " ".join([*([arg.token] if arg.token else []), *(_syntax(child) for child in arg.children)])
    else:
        text = f"{arg.token} {arg.name}" if arg.token else arg.name
    if arg.multiple:
        text = f"{text} [{arg.name} ...]"
    return f"[{text}]" if arg.optional else text


def usage(command: Command) -> str:
    return " ".join([command.usage_name, *(_syntax(arg) for arg in command.args)])


def _entries(command: Command) -> list[Command]:
    return [command, *command.subcommands.values()]


def render() -> str:
    table = build_table()
    lines = [
        "# Commands",
        "",
        "Generated from the command table (`querator/commands/`) by `make docs`; do not edit by hand.",
        "The same table answers `COMMAND`, `COMMAND INFO` and `COMMAND DOCS`, so redis-cli shows hints.",
        "Arity follows Redis: a negative number is a minimum, counting the command name. Options are",
        "keywords, case-insensitive, in any order; what items are and how queues behave is in",
        "[items.md](items.md).",
        "",
        "**Errors every command shares.** " + _GENERIC_ERRORS,
        "",
    ]
    groups: dict[str, list[Command]] = {}
    for command in table:
        groups.setdefault(command.group, []).append(command)
    for group in sorted(groups):
        lines += [f"## {group}", "", "| command | arity | flags | summary |", "| --- | --- | --- | --- |"]
        commands = sorted(groups[group], key=lambda c: c.name)
        for command in commands:
            for entry in _entries(command):
                syntax = usage(entry).replace("|", "\\|")
                flags = ", ".join(entry.flags) or "-"
                lines.append(f"| `{syntax}` | {entry.arity} | {flags} | {entry.summary} |")
        lines.append("")
        for command in commands:
            if not command.reply and not command.errors:
                continue
            lines += [f"### {command.name}", "", f"`{usage(command)}`", "", command.summary, ""]
            if command.acl is not None:
                lines += [f"- Permission group: `{command.acl}`."]
            if command.reply:
                lines += [f"- Reply: {command.reply}."]
            if command.errors:
                lines += ["- Errors:", *(f"  - {error}" for error in command.errors)]
            lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(render(), end="")
