"""The RESP commands: a table built once, explicitly, from each group's declarations, and its dispatcher."""

from __future__ import annotations

from querator.commands import connection_cmds, queue_cmds, server_cmds
from querator.commands.dispatch import Dispatcher
from querator.commands.table import CommandTable


def build_table() -> CommandTable:
    table = CommandTable()
    table.add(*connection_cmds.DECLARATIONS, *queue_cmds.DECLARATIONS, *server_cmds.DECLARATIONS)
    table.add(server_cmds.command_command(table))
    return table


__all__ = ["CommandTable", "Dispatcher", "build_table"]
