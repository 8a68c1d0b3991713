"""What every engine's partition actor does the same way: cut one step from its inbox, answer the step's
requests (a lease whose caller went away gives its items back), and log its dead letters."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Final, TypeGuard

from querator.engine import QueueView, Request
from querator.ids import seq_of
from querator.model import LeasedItem
from querator.records import DEAD_REASONS

log = logging.getLogger("querator.partition")

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


def answer(results: list[tuple[asyncio.Future[Any], object]], error: BaseException | None) -> list[int]:
    """Answer a step's requests: each with its result, or all with `error`. Returns the seqs of items
    leased to callers that went away before their reply, for the caller to release: nothing is then held
    by nobody until its lease times out."""
    abandoned: list[int] = []
    for future, result in results:
        if future.done():
            if error is None and is_lease(result):
                abandoned.extend(seq_of(item.id) for item in result)
            continue
        if error is not None:
            future.set_exception(error)
        elif isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)
    return abandoned


def log_dead_letters(queue: QueueView, partition: int, dead: dict[int, int]) -> None:
    """One line per step and dead-reason, not per item: a burst of expiries must not flood the log."""
    for why, count in dead.items():
        fields = {
            "queue": queue.name,
            "partition": partition,
            "count": count,
            "reason": DEAD_REASONS[why],
            "dead_queue": queue.options.dead_queue or "-",
        }
        log.info("items dead-lettered", extra={"fields": fields})
