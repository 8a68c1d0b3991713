"""What the queue command modules share: the queue argument, the declaration of a command whose first
argument is a queue (its "key" for COMMAND INFO and the permission check), and the error texts their
declarations list in docs/commands.md."""

from __future__ import annotations

from typing import Any

from querator.commands.cursor import ArgCursor
from querator.commands.table import Arg, Command
from querator.errors import wrong_arity
from querator.resp import SimpleString

OK = SimpleString("OK")
_QUEUE = Arg("queue", "key")
IDS_ARG = Arg("id", multiple=True)
NOQUEUE_TEXT = "`-NOQUEUE no such queue 'name'`"
BAD_ID_TEXT = "`-ERR invalid id 'x'` (a malformed id fails the whole call)"
TOO_MANY_IDS_TEXT = "`-ERR too many ids; at most 1000 per call` (`max-batch`)"


def ok_reply(_: object) -> SimpleString:
    return OK


def queue_name(cursor: ArgCursor) -> str:
    return cursor.next_str()


def queue_command(
    name: str,
    arity: int,
    acl: str,
    summary: str,
    handler: Any,
    flags: tuple[str, ...],
    *args: Arg,
    reply: str,
    errors: tuple[str, ...] = (NOQUEUE_TEXT,),
) -> Command:
    """A command whose first argument is a queue (its "key" for COMMAND INFO and the ACL check)."""
    return Command(
        name,
        arity,
        "queue",
        summary,
        handler,
        flags,
        (_QUEUE, *args),
        first_key=1,
        last_key=1,
        key_step=1,
        acl=acl,
        reply=reply,
        errors=errors,
    )


def required_ids(cursor: ArgCursor, command: str) -> list[bytes]:
    ids = cursor.rest()
    if not ids:
        raise wrong_arity(command)
    return ids
