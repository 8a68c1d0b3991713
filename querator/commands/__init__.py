"""The RESP commands: a table built once, explicitly, from each group's declarations, and its dispatcher."""

from __future__ import annotations

from querator.commands import (
    admin_cmds,
    connection_cmds,
    info_cmds,
    inspect_cmds,
    item_cmds,
    server_cmds,
)
from querator.commands.dispatch import Dispatcher
from querator.commands.table import CommandTable


def build_table() -> CommandTable:
    table = CommandTable()
    table.add(
        *connection_cmds.DECLARATIONS,
        *admin_cmds.DECLARATIONS,
        *item_cmds.DECLARATIONS,
        *inspect_cmds.DECLARATIONS,
        *info_cmds.DECLARATIONS,
        *server_cmds.DECLARATIONS,
    )
    table.add(server_cmds.command_command(table))
    return table


__all__ = ["CommandTable", "Dispatcher", "build_table"]
