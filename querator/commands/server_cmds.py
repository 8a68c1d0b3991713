"""Server commands: INFO (Redis's layout, `loading:0` for ioredis), TIME, CONFIG GET for the keys tools
ask for, and COMMAND with its subcommands, generated from the command table."""

from __future__ import annotations

import fnmatch
import os
import platform
import resource
import time
from typing import Any

from querator import __version__
from querator.clients import ClientState
from querator.commands.table import Arg, Command, CommandTable, with_subcommands
from querator.errors import SYNTAX_ERROR, CommandError
from querator.resp import SimpleString, Verbatim

# Redis version that Querator's connection-level behaviour follows; some clients read `redis_version`.
REDIS_COMPAT_VERSION = "7.4.0"
_SECTIONS = ("server", "clients", "memory", "persistence", "stats", "queues")


def _info(client: ClientState, args: list[bytes]) -> object:
    wanted = {a.decode("utf-8", "replace").lower() for a in args[1:]}
    if not wanted or wanted & {"all", "everything", "default"}:
        wanted = set(_SECTIONS)
    server = client.server
    parts: list[str] = []
    if "server" in wanted:
        uptime = int(time.time() - server.started_at)
        parts.append(
            _section(
                "Server",
                redis_version=REDIS_COMPAT_VERSION,
                querator_version=__version__,
                redis_mode="standalone",
                os=f"{platform.system()} {platform.release()} {platform.machine()}",
                arch_bits=64,
                process_id=os.getpid(),
                tcp_port=server.tcp_port,
                uptime_in_seconds=uptime,
                uptime_in_days=uptime // 86400,
                executable="querator",
            )
        )
    if "clients" in wanted:
        parts.append(
            _section(
                "Clients",
                connected_clients=len(server.clients),
                maxclients=server.config.max_clients,
                blocked_clients=server.service.waiting_consumers(),
            )
        )
    if "memory" in wanted:
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        parts.append(_section("Memory", used_memory_peak=rss, maxmemory=0, maxmemory_policy="noeviction"))
    if "persistence" in wanted:
        parts.append(
            _section(
                "Persistence",
                loading=0,
                async_loading=0,
                querator_backend=server.config.backend,
                querator_durability=server.config.durability,
                aof_enabled=0,
                rdb_changes_since_last_save=0,
            )
        )
    if "stats" in wanted:
        stats = server.stats
        parts.append(
            _section(
                "Stats",
                total_connections_received=stats.connections_received,
                total_commands_processed=stats.commands_processed,
                rejected_connections=stats.rejected_connections,
                total_error_replies=stats.protocol_errors,
            )
        )
    if "queues" in wanted:
        summary = server.service.summary()
        parts.append(_section("Queues", **summary))
    return Verbatim("\r\n".join(parts))


INFO = Command(
    "INFO",
    -1,
    "server",
    "Returns information and statistics about the server, in Redis's layout plus a Queues section.",
    _info,
    args=(Arg("section", optional=True, multiple=True),),
)


def _section(title: str, **fields: Any) -> str:
    lines = [f"# {title}"]
    lines.extend(f"{key}:{value}" for key, value in fields.items())
    return "\r\n".join(lines) + "\r\n"


def _time(client: ClientState, args: list[bytes]) -> object:
    now_us = time.time_ns() // 1000
    return [str(now_us // 1_000_000).encode(), str(now_us % 1_000_000).encode()]


TIME = Command("TIME", 1, "server", "Returns the server time (seconds and microseconds).", _time, ("fast",))


# CONFIG GET: the keys tools ask for (redis-benchmark asks `save` and `appendonly`), answered with what
# they mean for Querator. Parameters are matched with glob patterns, as in Redis.
def _config_values(client: ClientState) -> dict[str, str]:
    config = client.server.config
    return {
        "save": "",
        "appendonly": "no",
        "maxclients": str(config.max_clients),
        "port": str(client.server.tcp_port),
        "bind": config.bind,
        "databases": "1",
        "proto-max-bulk-len": str(config.max_bulk_bytes),
        "client-query-buffer-limit": str(config.max_query_buffer_bytes),
        "maxmemory": "0",
        "durability": config.durability,
        "backend": config.backend,
        "max-item-bytes": str(config.max_item_bytes),
    }


def _config_get(client: ClientState, args: list[bytes]) -> object:
    values = _config_values(client)
    found: dict[str, str] = {}
    for pattern in args[2:]:
        text = pattern.decode("utf-8", "replace").lower()
        for key, value in values.items():
            if fnmatch.fnmatchcase(key, text):
                found[key] = value
    return found


def _config_set(client: ClientState, args: list[bytes]) -> object:
    raise CommandError(
        "CONFIG SET is not supported; settings are read once at start: change the config file given to "
        "--config (or the flags) and restart"
    )


def _config_resetstat(client: ClientState, args: list[bytes]) -> object:
    return SimpleString("OK")


CONFIG = with_subcommands(
    Command(
        "CONFIG",
        -2,
        "server",
        "Reads configuration parameters (CONFIG GET pattern ...); set them in the config file.",
    ),
    Command(
        "GET",
        -3,
        "server",
        "Returns the values of configuration parameters.",
        _config_get,
        args=(Arg("parameter", multiple=True),),
    ),
    Command(
        "SET",
        -4,
        "server",
        "Refused: settings are read once at start.",
        _config_set,
        args=(Arg("parameter"), Arg("value")),
    ),
    Command("RESETSTAT", 2, "server", "Accepted for compatibility: resets nothing.", _config_resetstat),
)


# -- COMMAND ------------------------------------------------------------------------------------------


def command_info(command: Command) -> list[Any]:
    name = command.full_name
    flags = [SimpleString(flag) for flag in command.flags]
    subs = [command_info(sub) for sub in command.subcommands.values()]
    categories = [SimpleString(f"@{command.group}")]
    return [
        name,
        command.arity,
        flags,
        command.first_key,
        command.last_key,
        command.key_step,
        categories,
        [],
        [],
        subs,
    ]


def _arg_doc(arg: Arg) -> dict[str, Any]:
    doc: dict[str, Any] = {"name": arg.name, "type": arg.type}
    if arg.type not in ("block", "oneof", "pure-token"):
        doc["display_text"] = arg.name
    if arg.token is not None:
        doc["token"] = arg.token
    flags = [SimpleString(f) for f, on in (("optional", arg.optional), ("multiple", arg.multiple)) if on]
    if flags:
        doc["flags"] = flags
    if arg.children:
        doc["arguments"] = [_arg_doc(child) for child in arg.children]
    return doc


def command_doc(command: Command) -> dict[str, Any]:
    doc: dict[str, Any] = {"summary": command.summary, "since": command.since, "group": command.group}
    if command.args:
        doc["arguments"] = [_arg_doc(arg) for arg in command.args]
    if command.subcommands:
        doc["subcommands"] = {sub.full_name: command_doc(sub) for sub in command.subcommands.values()}
    return doc


def command_command(table: CommandTable) -> Command:
    """COMMAND and its subcommands, answered from `table` (which this declaration joins)."""

    def everything(client: ClientState, args: list[bytes]) -> object:
        return [command_info(c) for c in table]

    def count(client: ClientState, args: list[bytes]) -> object:
        return len(table)

    def named(args: list[bytes]) -> list[Command | None]:
        if len(args) == 2:
            return list(table)
        return [table.get(name.lower()) for name in args[2:]]

    def info(client: ClientState, args: list[bytes]) -> object:
        return [None if c is None else command_info(c) for c in named(args)]

    def docs(client: ClientState, args: list[bytes]) -> object:
        return {c.full_name: command_doc(c) for c in named(args) if c is not None}

    def names(client: ClientState, args: list[bytes]) -> object:
        if len(args) > 2:
            raise CommandError(SYNTAX_ERROR)
        return [c.full_name for c in table]

    return with_subcommands(
        Command("COMMAND", -1, "server", "Returns details about all commands.", everything),
        Command("COUNT", 2, "server", "Returns a count of commands.", count),
        Command(
            "INFO",
            -2,
            "server",
            "Returns information about commands.",
            info,
            args=(Arg("command-name", optional=True, multiple=True),),
        ),
        Command(
            "DOCS",
            -2,
            "server",
            "Returns documentary information about commands.",
            docs,
            args=(Arg("command-name", optional=True, multiple=True),),
        ),
        Command("LIST", -2, "server", "Returns a list of command names.", names),
    )


DECLARATIONS = (INFO, TIME, CONFIG)
