"""A reply that is not ready yet: a future from `Service` plus how to turn its result into a RESP value.

Handlers return `Deferred` for work done by partition actors. The connection keeps replies in command
order, so later commands of a pipeline can be submitted while earlier ones wait for their group commit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any


class Deferred:
    __slots__ = ("blocking", "convert", "future", "proto", "weight")

    def __init__(
        self,
        future: asyncio.Future[Any],
        convert: Callable[[Any], Any] | None = None,
        *,
        blocking: bool = False,
    ) -> None:
        self.future = future
        self.convert = convert
        # A blocking command (QLEASE ... BLOCK) holds back the client's later commands until it answers,
        # as a blocked Redis client does.
        self.blocking = blocking
        self.proto = 2
        # Bytes of the request, counted against the connection's in-flight budget until it is answered.
        self.weight = 0
