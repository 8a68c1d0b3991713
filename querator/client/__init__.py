"""Python client and worker for a Querator server (SPEC section 10), built on redis-py.

`Client` / `AsyncClient` wrap every queue command with typed results that are the same under RESP2 and
RESP3; `Worker` / `AsyncWorker` run the lease loop for an application. The server never imports this
package, so it needs none of the `client` extra (redis, rich).
"""

from __future__ import annotations

from querator.client.aio import AsyncClient
from querator.client.errors import (
    NoAuth,
    NoPerm,
    NoQueue,
    QueratorError,
    QueueExists,
    Shutdown,
    TryAgain,
    WrongPass,
)
from querator.client.options import DEFAULT_URL
from querator.client.sync import Client
from querator.client.types import Item, PartitionStats, QueueInfo, QueueStats, StoredItem
from querator.client.worker import AsyncWorker, Dead, Worker

__all__ = [
    "DEFAULT_URL",
    "AsyncClient",
    "AsyncWorker",
    "Client",
    "Dead",
    "Item",
    "NoAuth",
    "NoPerm",
    "NoQueue",
    "PartitionStats",
    "QueratorError",
    "QueueExists",
    "QueueInfo",
    "QueueStats",
    "Shutdown",
    "StoredItem",
    "TryAgain",
    "Worker",
    "WrongPass",
]
