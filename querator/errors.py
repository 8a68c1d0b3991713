"""Errors that carry their wire code, so every front end (RESP, in-process) reports them the same way.

The message after the code starts with a fixed sentence that clients may match; details follow `; `.
"""

from __future__ import annotations


class QueratorError(Exception):
    """Base class: `code` is the first word of the RESP error reply."""

    code = "ERR"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class CommandError(QueratorError):
    """A bad argument or a request that cannot be applied; nothing was changed."""


class NoQueueError(QueratorError):
    code = "NOQUEUE"

    def __init__(self, name: str) -> None:
        super().__init__(f"no such queue '{name}'")


class QueueExistsError(QueratorError):
    code = "EXISTS"

    def __init__(self, name: str) -> None:
        super().__init__(f"queue '{name}' already exists")


class OutcomeUnknownError(QueratorError):
    """The database connection was lost while the change was being committed: it may have been applied
    or not, and no reply can say which. The RESP front end hangs up instead of replying (a client then
    treats it as it would a crashed server); in-process callers get this error."""

    def __init__(self, detail: str) -> None:
        super().__init__(
            f"connection to the database lost during the commit; the change may be applied; {detail}"
        )


class TryAgainError(QueratorError):
    """The partition is overloaded or its storage failed; nothing was applied."""

    code = "TRYAGAIN"


class ShutdownError(QueratorError):
    code = "SHUTDOWN"

    def __init__(self) -> None:
        super().__init__("server is shutting down")


class NoAuthError(QueratorError):
    code = "NOAUTH"


class NoPermError(QueratorError):
    """The user may not run this command, or not on this queue (Redis's ACL texts)."""

    code = "NOPERM"


class WrongPassError(QueratorError):
    code = "WRONGPASS"

    def __init__(self) -> None:
        super().__init__("invalid username-password pair or user is disabled.")


class NoProtoError(QueratorError):
    code = "NOPROTO"

    def __init__(self) -> None:
        super().__init__("unsupported protocol version")


SYNTAX_ERROR = "syntax error"
NOT_AN_INTEGER = "value is not an integer or out of range"
AUTH_REQUIRED = "Authentication required."


def wrong_arity(full_name: str) -> CommandError:
    """Redis's arity text; `full_name` is `qlease` or `client|setname`."""
    return CommandError(f"wrong number of arguments for '{full_name}' command")


def unknown_subcommand(given: str, parent: str) -> CommandError:
    return CommandError(f"unknown subcommand '{given}'. Try {parent} HELP.")
