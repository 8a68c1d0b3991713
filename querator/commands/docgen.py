"""Generates docs/commands.md from the command table: `python -m querator.commands.docgen`."""

from __future__ import annotations

from querator.commands import load_commands
from querator.commands.table import COMMANDS, Arg, Command


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


def _usage(name: str, command: Command) -> str:
    return " ".join([name, *(_syntax(arg) for arg in command.args)])


def render() -> str:
    load_commands()
    lines = [
        "# Commands",
        "",
        "Generated from the command table (`querator/commands/`) by `make docs`; do not edit by hand.",
        "The same table answers `COMMAND`, `COMMAND INFO` and `COMMAND DOCS`, so redis-cli shows hints.",
        "Arity follows Redis: a negative number is a minimum, counting the command name.",
        "",
    ]
    groups: dict[str, list[Command]] = {}
    for command in COMMANDS.values():
        groups.setdefault(command.group, []).append(command)
    for group in sorted(groups):
        lines += [f"## {group}", "", "| command | arity | flags | summary |", "| --- | --- | --- | --- |"]
        for command in sorted(groups[group], key=lambda c: c.name):
            rows = [(command.name, command)]
            rows += [(f"{command.name} {sub.name}", sub) for sub in command.subcommands.values()]
            for name, entry in rows:
                usage = _usage(name, entry).replace("|", "\\|")
                flags = ", ".join(entry.flags) or "-"
                lines.append(f"| `{usage}` | {entry.arity} | {flags} | {entry.summary} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(render(), end="")
