"""What the command handlers may know about a client and about the server, without any socket code.

`ClientState` is one connection's session (protocol version, name, authentication); `ServerState` is what
is shared by all connections (config, the `Service`, the client registry, counters for INFO).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from querator.auth import User, Users
from querator.config import Config

if TYPE_CHECKING:
    from querator.service import Service


@dataclass(slots=True)
class ServerStats:
    connections_received: int = 0
    rejected_connections: int = 0
    commands_processed: int = 0
    protocol_errors: int = 0


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
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

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

    def info_line(self, now: float, buffered: int = 0) -> str:
        """One line of CLIENT LIST / CLIENT INFO in Redis's layout."""
        age = int(now - self.created_at)
        idle = int(now - self.last_command_at)
        return (
            f"id={self.id} addr={self.addr} laddr={self.laddr} fd=-1 name={self.name} age={age} idle={idle} "
            f"flags=N db=0 sub=0 psub=0 ssub=0 multi=-1 watch=0 qbuf={buffered} qbuf-free=0 argv-mem=0 "
            f"multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 omem=0 tot-mem=0 events=r cmd={self.last_command} "
            f"user={self.user} redir=-1 resp={self.proto} lib-name={self.lib_name} lib-ver={self.lib_ver}"
        )
