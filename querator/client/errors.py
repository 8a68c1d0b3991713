"""The client's exceptions: one class per wire error code, so applications branch on a type or on `.code`.

Invariant: every error reply of the server reaches the caller as a `QueratorError` whose `code` is the
first word of that reply (redis-py strips it for the codes it knows; `code_of` puts it back).
"""

from __future__ import annotations

from redis.exceptions import RedisError


class QueratorError(Exception):
    """An error reply of the server; `code` is its first word ("ERR" for the generic ones)."""

    code = "ERR"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return f"{self.code} {self.message}"


class NoQueue(QueratorError):
    code = "NOQUEUE"


class QueueExists(QueratorError):
    code = "EXISTS"


class TryAgain(QueratorError):
    """A partition is overloaded or its storage failed; nothing was applied, so the call may be repeated."""

    code = "TRYAGAIN"


class Shutdown(QueratorError):
    code = "SHUTDOWN"


class NoAuth(QueratorError):
    code = "NOAUTH"


class WrongPass(QueratorError):
    code = "WRONGPASS"


class NoPerm(QueratorError):
    code = "NOPERM"


_BY_CODE: dict[str, type[QueratorError]] = {
    cls.code: cls for cls in (NoQueue, QueueExists, TryAgain, Shutdown, NoAuth, WrongPass, NoPerm)
}


def code_of(exc: Exception) -> tuple[str, str]:
    """(code, message) of a redis-py error. redis-py keeps the code in `status_code` for the codes it
    knows (ERR, TRYAGAIN, NOAUTH, ...) and leaves the others (NOQUEUE, EXISTS) at the head of the text."""
    text = str(exc)
    status = getattr(exc, "status_code", None)
    if status:
        return str(status), text
    head, _, rest = text.partition(" ")
    if head in _BY_CODE:
        return head, rest
    return "ERR", text


def from_redis(exc: RedisError) -> QueratorError:
    """The `QueratorError` subclass for one error reply."""
    code, message = code_of(exc)
    cls = _BY_CODE.get(code)
    if cls is None:
        return QueratorError(message, code)
    return cls(message)
