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

from querator.config import Config, ConfigError, UserDeclaration

GROUPS: Final = frozenset({"produce", "consume", "admin"})
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
    if declaration.password and declaration.password_sha256:
        raise ConfigError(f"user '{declaration.name}': give password or password-sha256, not both")
    if declaration.password_sha256:
        try:
            digest: bytes | None = bytes.fromhex(declaration.password_sha256)
        except ValueError:
            raise ConfigError(f"user '{declaration.name}': password-sha256 is not hex") from None
        if digest is None or len(digest) != 32:
            raise ConfigError(f"user '{declaration.name}': password-sha256 must be 64 hex digits")
    elif declaration.password:
        digest = _digest(declaration.password.encode())
    else:
        digest = None
    unknown = set(declaration.commands) - GROUPS
    if unknown:
        raise ConfigError(
            f"user '{declaration.name}': unknown command groups {sorted(unknown)}; use {sorted(GROUPS)}"
        )
    return User(declaration.name, digest, tuple(declaration.queues), frozenset(declaration.commands))
