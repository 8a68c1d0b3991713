"""Server commands: TIME, CONFIG GET for the keys tools ask for, SLOWLOG, LATENCY (empty, so tools that
ask do not log errors), and COMMAND with its subcommands, generated from the command table."""

import fnmatch
import time
from typing import Any

from querator.clients import ClientState
from querator.commands.cursor import ArgCursor
from querator.commands.table import Arg, Command, CommandTable, with_subcommands
from querator.errors import SYNTAX_ERROR, CommandError
from querator.resp import SimpleString


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
        "slowlog-log-slower-than": str(config.slowlog_log_slower_than),
        "slowlog-max-len": str(config.slowlog_max_len),
        "http-port": str(config.http_port),
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


# -- SLOWLOG ------------------------------------------------------------------------------------------

_SLOWLOG_DEFAULT_COUNT = 10


def _slowlog_get(client: ClientState, args: list[bytes]) -> object:
    count = _SLOWLOG_DEFAULT_COUNT
    if len(args) == 3:
        count = ArgCursor(args, 2).next_int()
        if count < -1:
            raise CommandError("count should be greater than or equal to -1")
    elif len(args) > 3:
        raise CommandError(SYNTAX_ERROR)
    return [entry.reply() for entry in client.server.slowlog.get(count)]


def _slowlog_len(client: ClientState, args: list[bytes]) -> object:
    return len(client.server.slowlog)


def _slowlog_reset(client: ClientState, args: list[bytes]) -> object:
    client.server.slowlog.reset()
    return SimpleString("OK")


SLOWLOG = with_subcommands(
    Command("SLOWLOG", -2, "server", "A container for slow log commands."),
    Command(
        "GET",
        -2,
        "server",
        "Returns the slow log's entries, newest first (10 by default, -1 for all).",
        _slowlog_get,
        acl="admin",
        args=(Arg("count", "integer", optional=True),),
    ),
    Command("LEN", 2, "server", "Returns the number of entries in the slow log.", _slowlog_len, acl="admin"),
    Command("RESET", 2, "server", "Clears the slow log.", _slowlog_reset, acl="admin"),
)


# -- LATENCY ------------------------------------------------------------------------------------------
# Querator keeps no latency-monitor events (the command histograms live on /metrics): LATENCY answers with
# Redis's replies for "nothing recorded", so monitoring tools that ask (redis_exporter) see no error.


def _latency_latest(client: ClientState, args: list[bytes]) -> object:
    return []


def _latency_histogram(client: ClientState, args: list[bytes]) -> object:
    return {}


LATENCY = with_subcommands(
    Command("LATENCY", -2, "server", "A container for latency monitor commands; no events are recorded."),
    Command("LATEST", 2, "server", "Returns the latest latency events: none are recorded.", _latency_latest),
    Command(
        "HISTOGRAM",
        -2,
        "server",
        "Returns per-command latency histograms: none here (see /metrics).",
        _latency_histogram,
        args=(Arg("command", optional=True, multiple=True),),
    ),
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


DECLARATIONS = (TIME, CONFIG, SLOWLOG, LATENCY)
