"""Command modules register themselves in the table when imported."""

from __future__ import annotations


def load_commands() -> None:
    from querator.commands import connection_cmds, queue_cmds, server_cmds  # noqa: F401
