"""Users, passwords and permissions.

A user has a password (kept only as its SHA-256), queue-name glob patterns and command groups: `produce`,
`consume`, `admin` (and `read`, which any group allows). `requirepass` is the password of the `default`
user, as in Redis. Passwords are compared in constant time on digests, and the same work is done for an
unknown user name, so timing reveals neither a password nor which users exist. Nothing here logs secrets.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
from dataclasses import dataclass, field
from typing import Final

from querator.config import COMMAND_GROUPS, Config, UserDeclaration, check_user

GROUPS: Final = COMMAND_GROUPS
# A command in the `read` group is allowed to a user with any group on the queue.
READ: Final = "read"
_UNKNOWN_USER_DIGEST: Final = hashlib.sha256(b"querator: no such user").digest()


@dataclass(frozen=True, slots=True)
class User:
    name: str
    password_sha256: bytes | None  # None: no password needed ("nopass")
    queue_patterns: tuple[str, ...] = ("*",)
    groups: frozenset[str] = GROUPS
    # Checked on every queue command, so computed once: may this user run everything on every queue?
    unrestricted: bool = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "unrestricted", self.groups == GROUPS and self.queue_patterns == ("*",))

    def may_use(self, group: str) -> bool:
        return (group == READ and bool(self.groups)) or group in self.groups

    def may_access(self, queue: str) -> bool:
        return any(fnmatch.fnmatchcase(queue, pattern) for pattern in self.queue_patterns)


class Users:
    def __init__(self, users: dict[str, User]) -> None:
        self._users = users

    @classmethod
    def from_config(cls, config: Config) -> Users:
        default_digest = _digest(config.requirepass.encode()) if config.requirepass else None
        users = {"default": User("default", default_digest)}
        for declaration in config.users:
            users[declaration.name] = _user_of(declaration)
        return cls(users)

    def __contains__(self, name: object) -> bool:
        return name in self._users

    @property
    def default(self) -> User:
        return self._users["default"]

    def nopass_names(self) -> list[str]:
        """Declared users any password logs in as (`nopass = true`); `default` is such when requirepass is
        empty, as in Redis, and is not listed."""
        return [n for n, u in self._users.items() if n != "default" and u.password_sha256 is None]

    def default_needs_password(self) -> bool:
        return self.default.password_sha256 is not None

    def authenticate(self, name: str, password: bytes) -> User | None:
        user = self._users.get(name)
        expected = (
            _UNKNOWN_USER_DIGEST if user is None or user.password_sha256 is None else user.password_sha256
        )
        matches = hmac.compare_digest(_digest(password), expected)
        if user is None:
            return None
        if user.password_sha256 is None:
            return user  # nopass: any password is accepted, as in Redis
        return user if matches else None


def _digest(password: bytes) -> bytes:
    return hashlib.sha256(password).digest()


def _user_of(declaration: UserDeclaration) -> User:
    # The config loader has already refused bad tables, naming the file; checked again so that a `Config`
    # built in code is just as safe: no password means no login unless `nopass` (ADR 0011).
    check_user(declaration, f"user '{declaration.name}'")
    if declaration.nopass:
        digest = None
    elif declaration.password_sha256:
        digest = bytes.fromhex(declaration.password_sha256)
    else:
        digest = _digest(declaration.password.encode())
    return User(declaration.name, digest, tuple(declaration.queues), frozenset(declaration.commands))
