"""A reply that is not ready yet: a future from `Service` plus how to turn its result into a RESP value.

Handlers return `Deferred` for work done by partition actors. The connection keeps replies in command
order, so later commands of a pipeline can be submitted while earlier ones wait for their group commit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from querator.commandstats import CommandStats


class Deferred:
    __slots__ = ("blocking", "convert", "future", "proto", "ran_ns", "started_ns", "stats", "weight")

    def __init__(
        self,
        future: asyncio.Future[Any],
        convert: Callable[[Any], Any] | None = None,
        *,
        blocking: bool = False,
    ) -> None:
        # `Service` methods return futures (ADR 5, ADR 9): replies are taken from them without awaiting,
        # with done() and callbacks.
        self.future = future
        self.convert = convert
        # A blocking command (QLEASE ... BLOCK) holds back the client's later commands until it answers,
        # as a blocked Redis client does.
        self.blocking = blocking
        self.proto = 2
        # Bytes of the request, counted against the connection's in-flight budget until it is answered.
        self.weight = 0
        # Set by the dispatcher: the command's counters, when it started (perf_counter_ns) and how long
        # its handler ran, so the connection can count a failure and the whole duration once it is ready.
        self.stats: CommandStats | None = None
        self.started_ns = 0
        self.ran_ns = 0
