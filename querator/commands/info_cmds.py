"""INFO in Redis's layout: `loading:0` for ioredis, the Stats, Commandstats, Errorstats and Keyspace
fields redis_exporter reads, and one line per queue in `# Queues`. Sections are built from the server's
counters and, for the queue lines, from a snapshot read through the Service."""

import asyncio
import os
import platform
import resource
import time
from collections.abc import Callable
from typing import Any

from querator import __version__, snapshot
from querator.clients import ClientState, ServerState
from querator.commands.reply import Deferred
from querator.commands.table import Arg, Command
from querator.model import QueueStats
from querator.resp import Verbatim

# Redis version that Querator's connection-level behaviour follows; some clients read `redis_version`.
REDIS_COMPAT_VERSION = "7.4.0"
# `INFO` alone (or `default`) shows these, in Redis's order; `all` / `everything` add Commandstats.
_DEFAULT_SECTIONS = (
    "server",
    "clients",
    "memory",
    "persistence",
    "stats",
    "replication",
    "cpu",
    "errorstats",
    "keyspace",
    "queues",
)
_ALL_SECTIONS = (*_DEFAULT_SECTIONS[:7], "commandstats", *_DEFAULT_SECTIONS[7:])
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def _info(client: ClientState, args: list[bytes]) -> object:
    wanted = {a.decode("utf-8", "replace").lower() for a in args[1:]}
    if not wanted or "default" in wanted:
        wanted |= set(_DEFAULT_SECTIONS)
    if wanted & {"all", "everything"}:
        wanted |= set(_ALL_SECTIONS)
    server = client.server
    parts = [_SECTIONS[name](server) for name in _ALL_SECTIONS if name in wanted and name != "queues"]
    if "queues" not in wanted:
        return Verbatim("\r\n".join(parts))
    # Per-queue numbers are read through the partitions, so the reply waits for them.
    task = asyncio.ensure_future(snapshot.queue_stats(server.service))
    return Deferred(task, lambda queues: Verbatim("\r\n".join([*parts, _queues(server, queues)])))


def _server(server: ServerState) -> str:
    uptime = int(time.time() - server.started_at)
    return _section(
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


def _clients(server: ServerState) -> str:
    return _section(
        "Clients",
        connected_clients=len(server.clients),
        maxclients=server.config.max_clients,
        blocked_clients=server.service.waiting_consumers(),
    )


def memory_usage() -> tuple[int, int]:
    """(used, rss) in bytes from /proc/self/statm: Python has no cheap count of the bytes it allocated,
    so `used` is the resident memory not shared with other processes, and `rss` all resident memory."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            fields = statm.read().split()
        resident, shared = int(fields[1]), int(fields[2])
    except (OSError, IndexError, ValueError):
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return rss, rss
    return (resident - shared) * _PAGE_SIZE, resident * _PAGE_SIZE


def _memory(server: ServerState) -> str:
    used, rss = memory_usage()
    peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, rss)
    return _section(
        "Memory",
        used_memory=used,
        used_memory_human=_human(used),
        used_memory_rss=rss,
        used_memory_rss_human=_human(rss),
        used_memory_peak=peak,
        used_memory_peak_human=_human(peak),
        maxmemory=0,
        maxmemory_human="0B",
        maxmemory_policy="noeviction",
        mem_fragmentation_ratio=f"{rss / used:.2f}" if used else "1.00",
    )


def _persistence(server: ServerState) -> str:
    return _section(
        "Persistence",
        loading=0,
        async_loading=0,
        querator_backend=server.config.backend,
        # On postgres every reply waits for its commit; synchronous_commit decides what that survives.
        querator_durability="commit" if server.config.backend == "postgres" else server.config.durability,
        aof_enabled=0,
        rdb_changes_since_last_save=0,
    )


def _stats(server: ServerState) -> str:
    stats = server.stats
    return _section(
        "Stats",
        total_connections_received=stats.connections_received,
        total_commands_processed=stats.commands_processed,
        instantaneous_ops_per_sec=server.ops.per_second(),
        rejected_connections=stats.rejected_connections,
        total_error_replies=server.statistics.error_replies,
    )


def _replication(server: ServerState) -> str:
    # A single node: tools such as redis_exporter read the role from here.
    return _section("Replication", role="master", connected_slaves=0)


def _cpu(server: ServerState) -> str:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return _section("CPU", used_cpu_sys=f"{usage.ru_stime:.6f}", used_cpu_user=f"{usage.ru_utime:.6f}")


def _commandstats(server: ServerState) -> str:
    """Redis 7's lines: `cmdstat_<name>:calls=,usec=,usec_per_call=,rejected_calls=,failed_calls=`."""
    lines = {
        f"cmdstat_{s.name}": (
            f"calls={s.calls},usec={s.usec},usec_per_call={s.usec / s.calls if s.calls else 0:.2f},"
            f"rejected_calls={s.rejected},failed_calls={s.failed}"
        )
        for s in sorted(server.statistics.commands.values(), key=lambda s: s.name)
    }
    return _section("Commandstats", **lines)


def _errorstats(server: ServerState) -> str:
    errors = server.statistics.errors
    return _section("Errorstats", **{f"errorstat_{code}": f"count={errors[code]}" for code in sorted(errors)})


def _keyspace(server: ServerState) -> str:
    # Each queue is a "key" of db 0 for tools that count keys; Redis leaves an empty db out.
    queues = server.service.summary()["queues"]
    return _section("Keyspace", **({"db0": f"keys={queues},expires=0,avg_ttl=0"} if queues else {}))


def _queues(server: ServerState, queues: dict[str, QueueStats]) -> str:
    """The server-wide totals, then one line per queue (`queue_<name>:ready=...`), names escaped so a
    line still splits at its first `:` and its values at `,` and `=`."""
    lines: dict[str, object] = dict(server.service.summary())
    for name, stats in queues.items():
        lines[f"queue_{_escape(name)}"] = (
            f"ready={stats.ready},leased={stats.leased},scheduled={stats.scheduled},"
            f"produced={stats.produced},completed={stats.completed},retried={stats.retried},"
            f"lease_expired={stats.lease_expired},dead_lettered={stats.dead_lettered},"
            f"oldest_ready_age_ms={stats.oldest_ready_age},waiting_consumers={stats.waiting_consumers}"
        )
    return _section("Queues", **lines)


def _escape(name: str) -> str:
    return "".join(f"%{ord(c):02X}" if c in "%:,=" else c for c in name)


def _human(size: int) -> str:
    """Redis's `_human` values: 1.50M, 912.00K, 12B."""
    for unit, scale in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.2f}{unit}"
    return f"{size}B"


_SECTIONS: dict[str, Callable[[ServerState], str]] = {
    "server": _server,
    "clients": _clients,
    "memory": _memory,
    "persistence": _persistence,
    "stats": _stats,
    "replication": _replication,
    "cpu": _cpu,
    "commandstats": _commandstats,
    "errorstats": _errorstats,
    "keyspace": _keyspace,
}


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


DECLARATIONS = (INFO,)
