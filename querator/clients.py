"""What the command handlers may know about a client and about the server, without any socket code.

`ClientState` is one connection's session (protocol version, name, authentication); `ServerState` is what
is shared by all connections (config, the `Service`, the client registry, counters for INFO).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from querator.auth import User, Users
from querator.commandstats import OpsMeter, Statistics
from querator.config import Config
from querator.slowlog import SlowLog

if TYPE_CHECKING:
    from querator.service import Service


@dataclass(slots=True)
class ServerStats:
    connections_received: int = 0
    rejected_connections: int = 0
    commands_processed: int = 0
    protocol_errors: int = 0
    # Clients refused at max-clients are logged at most once a second (a flood must not flood the log).
    rejections_logged_at: float = -1.0
    rejections_unlogged: int = 0


class ClientLink(Protocol):
    """What CLIENT LIST and CLIENT KILL need from a client's connection, without knowing sockets."""

    def fd(self) -> int: ...

    def memory(self) -> tuple[int, int]:
        """Bytes buffered: (unparsed requests, replies not yet written)."""
        ...

    def blocked(self) -> bool: ...

    def kill(self) -> None: ...


@dataclass(slots=True)
class ServerState:
    config: Config
    service: Service
    started_at: float = field(default_factory=time.time)
    clients: dict[int, ClientState] = field(default_factory=dict)
    stats: ServerStats = field(default_factory=ServerStats)
    tcp_port: int = 0
    tls_port: int = 0
    users: Users = field(default_factory=lambda: Users({"default": User("default", None)}))
    statistics: Statistics = field(default_factory=Statistics)
    ops: OpsMeter = field(default_factory=OpsMeter)
    slowlog: SlowLog = field(init=False)
    # "starting", "serving" or "stopping": what /health reports.
    phase: str = "serving"
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def __post_init__(self) -> None:
        self.slowlog = SlowLog(self.config.slowlog_log_slower_than, self.config.slowlog_max_len)

    def next_client_id(self) -> int:
        return next(self._ids)


@dataclass(slots=True, eq=False)
class ClientState:
    server: ServerState
    id: int
    addr: str = ""
    laddr: str = ""
    proto: int = 2
    authenticated: bool = True
    acl: User = field(default_factory=lambda: User("default", None))
    name: str = ""
    lib_name: str = ""
    lib_ver: str = ""
    created_at: float = field(default_factory=time.monotonic)
    last_command_at: float = field(default_factory=time.monotonic)
    last_command: str = "NULL"
    # Set by the connection: close after the replies that are already due have been written.
    close_after_reply: bool = False
    # Set by the connection so commands such as RESET can change parser limits.
    on_auth_change: Callable[[bool], None] | None = None
    # Set by the connection: its file descriptor, buffers and blocked state, and a way to close it.
    link: ClientLink | None = None

    @property
    def user(self) -> str:
        return self.acl.name

    def log_in(self, user: User) -> None:
        self.acl = user
        self._set_authenticated(True)

    def log_out(self) -> None:
        """Back to the default user, as a new connection starts (RESET)."""
        users = self.server.users
        self.acl = users.default
        self._set_authenticated(not users.default_needs_password())

    def _set_authenticated(self, value: bool) -> None:
        self.authenticated = value
        if self.on_auth_change is not None:
            self.on_auth_change(value)

    def info_line(self, now: float) -> str:
        """One line of CLIENT LIST / CLIENT INFO in Redis's layout."""
        age = int(now - self.created_at)
        idle = int(now - self.last_command_at)
        link = self.link
        fd, buffered, omem, flags = -1, 0, 0, "N"
        if link is not None:
            fd = link.fd()
            buffered, omem = link.memory()
            flags = "b" if link.blocked() else "N"
        # tot-mem: an estimate, the bytes this connection buffers (Redis adds its fixed client struct too).
        tot_mem = buffered + omem
        return (
            f"id={self.id} addr={self.addr} laddr={self.laddr} fd={fd} name={self.name} age={age} "
            f"idle={idle} flags={flags} db=0 sub=0 psub=0 ssub=0 multi=-1 watch=0 qbuf={buffered} "
            f"qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 omem={omem} tot-mem={tot_mem} "
            f"events=r cmd={self.last_command} "
            f"user={self.user} redir=-1 resp={self.proto} lib-name={self.lib_name} lib-ver={self.lib_ver}"
        )
