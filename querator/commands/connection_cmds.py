"""Connection commands that Redis clients send when they connect: PING, ECHO, HELLO, AUTH, CLIENT,
SELECT, QUIT, RESET. They behave as in Redis, because client libraries depend on their exact replies."""

from __future__ import annotations

import logging
import time
from typing import NoReturn

from querator import __version__
from querator.clients import ClientState
from querator.commands.cursor import ArgCursor
from querator.commands.table import Arg, Command, with_subcommands
from querator.errors import (
    SYNTAX_ERROR,
    CommandError,
    NoAuthError,
    NoProtoError,
    WrongPassError,
    wrong_arity,
)
from querator.resp import SimpleString, Verbatim

log = logging.getLogger("querator.auth")

OK = SimpleString("OK")
PONG = SimpleString("PONG")


def _ping(client: ClientState, args: list[bytes]) -> object:
    if len(args) > 2:
        raise wrong_arity("ping")
    return PONG if len(args) == 1 else args[1]


PING = Command(
    "PING",
    -1,
    "connection",
    "Returns PONG, or the message given.",
    _ping,
    flags=("fast",),
    args=(Arg("message", optional=True),),
)


def _echo(client: ClientState, args: list[bytes]) -> object:
    return args[1]


ECHO = Command("ECHO", 2, "connection", "Returns the given string.", _echo, ("fast",), (Arg("message"),))


def _auth(client: ClientState, args: list[bytes]) -> object:
    if len(args) > 3:
        raise CommandError(SYNTAX_ERROR)
    if not client.server.users.default_needs_password() and len(args) == 2:
        raise CommandError(
            "AUTH <password> called without any password configured for the default user. "
            "Are you sure your configuration is correct?"
        )
    name = args[1].decode("utf-8", "replace") if len(args) == 3 else "default"
    user = client.server.users.authenticate(name, args[-1])
    if user is None:
        _failed_login(client, name)
    client.log_in(user)
    return OK


AUTH = Command(
    "AUTH",
    -2,
    "connection",
    "Authenticates the connection.",
    _auth,
    ("no-auth", "fast"),
    (Arg("username", optional=True), Arg("password")),
)


def _failed_login(client: ClientState, user: str) -> NoReturn:
    """Log who tried (never the password) and from where, then refuse with Redis's WRONGPASS."""
    log.warning("failed login", extra={"fields": {"user": user, "addr": client.addr}})
    raise WrongPassError()


def _hello(client: ClientState, args: list[bytes]) -> object:
    cursor = ArgCursor(args)
    proto = client.proto
    if cursor:
        try:
            proto = int(cursor.next_bytes())
        except ValueError:
            raise CommandError("Protocol version is not an integer or out of range") from None
        if proto not in (2, 3):
            raise NoProtoError()
    name: str | None = None
    while cursor:
        option = cursor.next_bytes().upper()
        if option == b"AUTH" and cursor.remaining() >= 2:
            user_name = cursor.next_str()
            user = client.server.users.authenticate(user_name, cursor.next_bytes())
            if user is None:
                _failed_login(client, user_name)
            client.log_in(user)
        elif option == b"SETNAME" and cursor.remaining() >= 1:
            name = _valid_name(cursor.next_str())
        else:
            raise CommandError(f"Syntax error in HELLO option '{option.decode('utf-8', 'replace')}'")
    if not client.authenticated:
        raise NoAuthError(
            "HELLO must be called with the client already authenticated, otherwise the HELLO <proto> "
            "AUTH <user> <pass> option can be used to authenticate the client and select the RESP "
            "protocol version at the same time"
        )
    if name is not None:
        client.name = name
    client.proto = proto
    return {
        "server": "querator",
        "version": __version__,
        "proto": proto,
        "id": client.id,
        "mode": "standalone",
        "role": "master",
        "modules": [],
    }


HELLO = Command(
    "HELLO",
    -1,
    "connection",
    "Handshakes with the server: selects RESP2 or RESP3, optionally authenticates and names the client.",
    _hello,
    ("no-auth", "fast"),
    (
        Arg(
            "arguments",
            "block",
            optional=True,
            children=(
                Arg("protover", "integer"),
                Arg(
                    "auth",
                    "block",
                    token="AUTH",
                    optional=True,
                    children=(Arg("username"), Arg("password")),
                ),
                Arg("clientname", token="SETNAME", optional=True),
            ),
        ),
    ),
)


def _valid_name(name: str) -> str:
    if any(c <= " " or c > "~" for c in name):
        raise CommandError("Client names cannot contain spaces, newlines or special characters.")
    return name


def _select(client: ClientState, args: list[bytes]) -> object:
    cursor = ArgCursor(args)
    if cursor.next_int() != 0:
        raise CommandError("DB index is out of range")
    return OK


SELECT = Command(
    "SELECT",
    2,
    "connection",
    "Selects the database; Querator has only database 0.",
    _select,
    ("fast",),
    (Arg("index", "integer"),),
)


def _quit(client: ClientState, args: list[bytes]) -> object:
    client.close_after_reply = True
    return OK


QUIT = Command("QUIT", -1, "connection", "Closes the connection.", _quit, ("no-auth", "fast"))


def _reset(client: ClientState, args: list[bytes]) -> object:
    client.proto = 2
    client.name = ""
    client.log_out()
    return SimpleString("RESET")


# -- CLIENT -------------------------------------------------------------------------------------------


RESET = Command("RESET", 1, "connection", "Resets the connection to its initial state.", _reset, ("no-auth",))


def _client_id(client: ClientState, args: list[bytes]) -> object:
    return client.id


_CLIENT_ID = Command("ID", 2, "connection", "Returns the unique client ID of the connection.", _client_id)


def _client_setname(client: ClientState, args: list[bytes]) -> object:
    client.name = _valid_name(args[2].decode("utf-8", "replace"))
    return OK


_CLIENT_SETNAME = Command(
    "SETNAME", 3, "connection", "Sets the connection name.", _client_setname, args=(Arg("name"),)
)


def _client_getname(client: ClientState, args: list[bytes]) -> object:
    return client.name.encode() if client.name else None


_CLIENT_GETNAME = Command("GETNAME", 2, "connection", "Returns the name of the connection.", _client_getname)


def _client_setinfo(client: ClientState, args: list[bytes]) -> object:
    attr = args[2].upper()
    value = args[3].decode("utf-8", "replace")
    if any(c <= " " or c > "~" for c in value):
        raise CommandError(f"{attr.decode().lower()} cannot contain spaces, newlines or special characters.")
    if attr == b"LIB-NAME":
        client.lib_name = value
    elif attr == b"LIB-VER":
        client.lib_ver = value
    else:
        raise CommandError(f"Unrecognized option '{args[2].decode('utf-8', 'replace')}'")
    return OK


_CLIENT_SETINFO = Command(
    "SETINFO",
    4,
    "connection",
    "Sets information about the client library (LIB-NAME or LIB-VER).",
    _client_setinfo,
    args=(Arg("attr", "oneof", children=(Arg("libname", token="LIB-NAME"), Arg("libver", token="LIB-VER"))),),
)


def _client_info(client: ClientState, args: list[bytes]) -> object:
    return Verbatim(client.info_line(time.monotonic()) + "\n")


_CLIENT_INFO = Command("INFO", 2, "connection", "Returns information about the connection.", _client_info)


def _client_list(client: ClientState, args: list[bytes]) -> object:
    now = time.monotonic()
    lines = [c.info_line(now) for c in client.server.clients.values()]
    return Verbatim("".join(line + "\n" for line in lines))


_CLIENT_LIST = Command("LIST", -2, "connection", "Lists open connections.", _client_list)


def _client_kill(client: ClientState, args: list[bytes]) -> object:
    """Redis's two forms: `CLIENT KILL ip:port` (OK, or an error when no client has that address) and
    `CLIENT KILL <filter> <value> ...` (the number killed; filters ID, ADDR, LADDR, USER, SKIPME)."""
    clients = list(client.server.clients.values())
    if len(args) == 3:
        addr = args[2].decode("utf-8", "replace")
        victims = [c for c in clients if c.addr == addr]
        if not victims:
            raise CommandError("No such client")
        _kill(client, victims)
        return OK
    cursor = ArgCursor(args, 2)
    skip_me = True
    while cursor:
        option = cursor.next_bytes().upper()
        if not cursor:
            raise CommandError(SYNTAX_ERROR)
        if option == b"ID":
            try:
                wanted_id = int(cursor.next_bytes())
            except ValueError:
                wanted_id = 0
            if wanted_id <= 0:
                raise CommandError("client-id should be greater than 0")
            clients = [c for c in clients if c.id == wanted_id]
        elif option in (b"ADDR", b"LADDR"):
            value = cursor.next_str()
            clients = [c for c in clients if (c.addr if option == b"ADDR" else c.laddr) == value]
        elif option == b"USER":
            user = cursor.next_str()
            if user not in client.server.users:
                raise CommandError(f"No such user '{user}'")
            clients = [c for c in clients if c.user == user]
        elif option == b"SKIPME":
            answer = cursor.next_bytes().lower()
            if answer not in (b"yes", b"no"):
                raise CommandError(SYNTAX_ERROR)
            skip_me = answer == b"yes"
        else:
            raise CommandError(SYNTAX_ERROR)
    victims = [c for c in clients if not (skip_me and c is client)]
    _kill(client, victims)
    return len(victims)


def _kill(me: ClientState, victims: list[ClientState]) -> None:
    for victim in victims:
        if victim is me:
            me.close_after_reply = True  # Redis answers the killer first when it kills itself
        elif victim.link is not None:
            victim.link.kill()


_CLIENT_KILL = Command(
    "KILL",
    -3,
    "connection",
    "Closes client connections: by address (old form) or by ID, ADDR, LADDR, USER filters.",
    _client_kill,
    acl="admin",
    args=(
        Arg(
            "filter",
            "oneof",
            children=(
                Arg("old-format", "string"),
                Arg(
                    "new-format",
                    "oneof",
                    multiple=True,
                    children=(
                        Arg("client-id", "integer", token="ID", optional=True),
                        Arg("addr", token="ADDR", optional=True),
                        Arg("laddr", token="LADDR", optional=True),
                        Arg("username", token="USER", optional=True),
                        Arg("yes/no", token="SKIPME", optional=True),
                    ),
                ),
            ),
        ),
    ),
)


def _client_accept_on_off(client: ClientState, args: list[bytes]) -> object:
    # MAINT_NOTIFICATIONS, NO-EVICT, NO-TOUCH: accepted so clients that send them at connect work; a queue
    # server has no eviction, key touching or cluster maintenance events to change.
    if args[2].upper() not in (b"ON", b"OFF"):
        raise CommandError(SYNTAX_ERROR)
    return OK


_ON_OFF = Arg(
    "enabled", "oneof", children=(Arg("on", "pure-token", token="ON"), Arg("off", "pure-token", token="OFF"))
)
_CLIENT_ACCEPTED = tuple(
    Command(name, -3, "connection", summary, _client_accept_on_off, args=(_ON_OFF,))
    for name, summary in (
        ("MAINT_NOTIFICATIONS", "Accepted for compatibility: there are no maintenance notifications."),
        ("NO-EVICT", "Accepted for compatibility: Querator never evicts."),
        ("NO-TOUCH", "Accepted for compatibility: Querator keeps no access times."),
    )
)
CLIENT = with_subcommands(
    Command("CLIENT", -2, "connection", "A container for client connection commands."),
    _CLIENT_ID,
    _CLIENT_SETNAME,
    _CLIENT_GETNAME,
    _CLIENT_SETINFO,
    _CLIENT_INFO,
    _CLIENT_LIST,
    _CLIENT_KILL,
    *_CLIENT_ACCEPTED,
)

DECLARATIONS = (PING, ECHO, AUTH, HELLO, SELECT, QUIT, RESET, CLIENT)
