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
from querator.commands.table import COMMANDS, Arg, Command, register, subcommand, wrong_arity
from querator.errors import CommandError
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


def _section(title: str, **fields: Any) -> str:
    lines = [f"# {title}"]
    lines.extend(f"{key}:{value}" for key, value in fields.items())
    return "\r\n".join(lines) + "\r\n"


def _time(client: ClientState, args: list[bytes]) -> object:
    now_us = time.time_ns() // 1000
    return [str(now_us // 1_000_000).encode(), str(now_us % 1_000_000).encode()]


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


def _config(client: ClientState, args: list[bytes]) -> object:
    sub = args[1].upper()
    if sub == b"GET":
        if len(args) < 3:
            raise wrong_arity("config|get")
        values = _config_values(client)
        found: dict[str, str] = {}
        for pattern in args[2:]:
            text = pattern.decode("utf-8", "replace").lower()
            for key, value in values.items():
                if fnmatch.fnmatchcase(key, text):
                    found[key] = value
        return found
    if sub == b"SET":
        raise CommandError("CONFIG SET is not supported; change conf/querator.toml and restart")
    if sub == b"RESETSTAT":
        return SimpleString("OK")
    raise CommandError(f"unknown subcommand '{args[1].decode('utf-8', 'replace')}'. Try CONFIG HELP.")


# -- COMMAND ------------------------------------------------------------------------------------------


def command_info(command: Command, parent: str | None = None) -> list[Any]:
    name = f"{parent}|{command.name.lower()}" if parent else command.name.lower()
    flags = [SimpleString(flag) for flag in command.flags]
    subs = [command_info(sub, command.name.lower()) for sub in command.subcommands.values()]
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
        doc["subcommands"] = {
            f"{command.name.lower()}|{sub.name.lower()}": command_doc(sub)
            for sub in command.subcommands.values()
        }
    return doc


def _lookup(name: bytes) -> Command | None:
    return COMMANDS.get(name.lower())


def _command(client: ClientState, args: list[bytes]) -> object:
    if len(args) == 1:
        return [command_info(c) for c in COMMANDS.values()]
    sub = args[1].upper()
    if sub == b"COUNT" and len(args) == 2:
        return len(COMMANDS)
    if sub == b"INFO":
        names = args[2:] or [c.name.encode() for c in COMMANDS.values()]
        return [command_info(c) if (c := _lookup(n)) else None for n in names]
    if sub == b"DOCS":
        names = args[2:] or [c.name.encode() for c in COMMANDS.values()]
        return {c.name.lower(): command_doc(c) for n in names if (c := _lookup(n)) is not None}
    if sub == b"LIST" and len(args) == 2:
        return [c.name.lower() for c in COMMANDS.values()]
    if sub in (b"COUNT", b"LIST"):
        raise CommandError(SYNTAX)
    raise CommandError(f"unknown subcommand '{args[1].decode('utf-8', 'replace')}'. Try COMMAND HELP.")


SYNTAX = "syntax error"

register(
    Command(
        "INFO",
        -1,
        "server",
        "Returns information and statistics about the server, in Redis's layout plus a Queues section.",
        _info,
        args=(Arg("section", optional=True, multiple=True),),
    )
)
register(
    Command("TIME", 1, "server", "Returns the server time (seconds and microseconds).", _time, ("fast",))
)
CONFIG = register(
    Command(
        "CONFIG",
        -2,
        "server",
        "Reads configuration parameters (CONFIG GET pattern ...); set them in the config file.",
        _config,
    )
)
subcommand(
    CONFIG,
    Command(
        "GET",
        -3,
        "server",
        "Returns the values of configuration parameters.",
        _config,
        args=(Arg("parameter", multiple=True),),
    ),
)
COMMAND = register(
    Command(
        "COMMAND",
        -1,
        "server",
        "Returns details about all commands.",
        _command,
    )
)
subcommand(COMMAND, Command("COUNT", 2, "server", "Returns a count of commands.", _command))
subcommand(
    COMMAND,
    Command(
        "INFO",
        -2,
        "server",
        "Returns information about commands.",
        _command,
        args=(Arg("command-name", optional=True, multiple=True),),
    ),
)
subcommand(
    COMMAND,
    Command(
        "DOCS",
        -2,
        "server",
        "Returns documentary information about commands.",
        _command,
        args=(Arg("command-name", optional=True, multiple=True),),
    ),
)
subcommand(COMMAND, Command("LIST", -2, "server", "Returns a list of command names.", _command))
