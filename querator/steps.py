"""What every engine's partition actor does the same way: cut one step from its inbox, and tell a lease's
answer from the others (a lease whose caller went away gives its items back)."""

from __future__ import annotations

from typing import Any, Final, TypeGuard

from querator.engine import Request
from querator.model import LeasedItem

# Items one step applies at most (a request's weight is its item, id or lease count), so one partition
# cannot hold the event loop, or a database connection, for long however deep the clients' pipelines are.
STEP_ITEMS: Final = 20_000


def cut_step(inbox: list[Request[Any]]) -> tuple[list[Request[Any]], list[Request[Any]]]:
    """The requests of one step (all that wait, up to about `STEP_ITEMS` items, at least one request) and
    those left for the next."""
    weight = 0
    for taken, request in enumerate(inbox):
        weight += request.weight
        if weight >= STEP_ITEMS:
            return inbox[: taken + 1], inbox[taken + 1 :]
    return inbox, []


def is_lease(result: object) -> TypeGuard[list[LeasedItem]]:
    """A non-empty list of leased items (checked by exact type: cheaper than isinstance per reply)."""
    return type(result) is list and bool(result) and type(result[0]) is LeasedItem
