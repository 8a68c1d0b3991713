"""Queues declared in the config file (`[[queue]]` tables), applied at start.

A table is the source of truth for the options it names: a missing queue is created, an existing one gets
the named options that differ, as QUPDATE would, and one log line per change. Options a table does not
name are left as they are. Declarations are applied dead queues first, whatever their order in the file
(ADR 0011). Only `Service`'s public methods are used, so the rules are those of QCREATE and QUPDATE.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Sequence
from typing import Any, Protocol

from querator.config import ConfigError, QueueDeclaration
from querator.errors import NoQueueError, QueratorError
from querator.model import QueueInfo, QueueOptions, QueueUpdate

log = logging.getLogger("querator.declared")

# The options a table may name, in the order changes are logged.
OPTIONS = ("partitions", "lease_timeout", "expire_timeout", "max_attempts", "dead_queue", "reference")


class DeclarationError(ConfigError):
    """The declared queues cannot be applied to the queues that exist; nothing more is changed."""


def _where(declaration: QueueDeclaration) -> str:
    source = f"{declaration.source}: " if declaration.source else ""
    return f"{source}[[queue]] '{declaration.name}'"


def dependency_order(declarations: Sequence[QueueDeclaration], existing: set[str]) -> list[QueueDeclaration]:
    """The declarations with each named dead queue before the queues that name it.

    A dead queue must be declared or in `existing`; a name declared twice or a cycle is an error.
    """
    by_name: dict[str, QueueDeclaration] = {}
    for declaration in declarations:
        if declaration.name in by_name:
            raise DeclarationError(f"queue declared twice; {_where(declaration)} appears more than once")
        by_name[declaration.name] = declaration
    ordered: list[QueueDeclaration] = []
    done: set[str] = set()
    for declaration in declarations:
        path: list[str] = []
        current: QueueDeclaration | None = declaration
        # Walk down the chain of dead queues; each queue has at most one, so this is a path, not a tree.
        while current is not None and current.name not in done:
            if current.name in path:
                cycle = " -> ".join([*path[path.index(current.name) :], current.name])
                raise DeclarationError(
                    f"declared dead queues form a cycle; {_where(current)}: {cycle}; a dead queue may not "
                    "have a dead queue of its own"
                )
            path.append(current.name)
            dead = current.dead_queue
            if dead and dead not in by_name and dead not in existing:
                raise DeclarationError(
                    f"declared dead queue does not exist; {_where(current)} names dead-queue '{dead}', "
                    "which is neither declared in the file nor an existing queue"
                )
            current = by_name.get(dead) if dead else None
        for name in reversed(path):
            done.add(name)
            ordered.append(by_name[name])
    return ordered


def changes(declaration: QueueDeclaration, info: QueueInfo) -> dict[str, tuple[Any, Any]]:
    """Named options whose declared value differs from the queue's: option -> (current, declared)."""
    found: dict[str, tuple[Any, Any]] = {}
    for option in OPTIONS:
        if option in declaration.named:
            current, wanted = getattr(info, option), getattr(declaration, option)
            if current != wanted:
                found[option] = (current, wanted)
    return found


class QueueAdmin(Protocol):
    """The part of `Service` that declarations use: handed in, so this module sits below the Service."""

    def list_queues(self, after: str = "", limit: int = 1000) -> Awaitable[list[str]]: ...

    def queue_info(self, name: str) -> Awaitable[QueueInfo]: ...

    def create_queue(self, name: str, options: QueueOptions | None = None) -> Awaitable[None]: ...

    def update_queue(self, name: str, changes: QueueUpdate) -> Awaitable[None]: ...

    async def close(self) -> None: ...


async def _existing(service: QueueAdmin) -> set[str]:
    names: list[str] = []
    while batch := await service.list_queues(after=names[-1] if names else "", limit=100_000):
        names.extend(batch)
    return set(names)


async def apply_declarations(service: QueueAdmin, declarations: Sequence[QueueDeclaration]) -> None:
    """Create the declared queues that are missing and bring the named options of the others in line."""
    if not declarations:
        return
    try:
        existing = await _existing(service)
        for declaration in dependency_order(declarations, existing):
            try:
                await _apply(service, declaration)
            except QueratorError as exc:
                raise DeclarationError(
                    f"declared queue cannot be applied; {_where(declaration)}: {exc}"
                ) from exc
    except BaseException:
        # This runs inside Service.start(): a failed start leaves no one to close the service, and its
        # storage (RocksDB's lock) must be released. Declarations applied before the failure stay applied.
        await service.close()
        raise


async def _apply(service: QueueAdmin, declaration: QueueDeclaration) -> None:
    name = declaration.name
    try:
        info = await service.queue_info(name)
    except NoQueueError:
        await service.create_queue(name, declaration.options())
        log.info("declared queue '%s' created", name)
        return
    found = changes(declaration, info)
    if not found:
        return
    if "partitions" in found and declaration.partitions < info.partitions:
        raise DeclarationError(
            f"declared partitions may only grow; {_where(declaration)} has partitions = "
            f"{declaration.partitions} but the queue has {info.partitions}: raise it, or remove the key"
        )
    await service.update_queue(name, QueueUpdate(**{option: new for option, (_, new) in found.items()}))
    for option, (old, new) in found.items():
        log.info("declared queue '%s': %s %r -> %r", name, option.replace("_", "-"), old, new)
