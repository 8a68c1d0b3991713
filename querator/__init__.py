"""Querator: a durable lease-based FIFO queue that speaks the Redis protocol.

`Service` is the product (the queue API as async methods); the RESP server is one front end of it.
"""

__version__ = "0.1.0"

from querator.clock import Clock, ManualClock
from querator.config import Config, load_config
from querator.errors import (
    CommandError,
    NoQueueError,
    QueratorError,
    QueueExistsError,
    ShutdownError,
    TryAgainError,
)
from querator.model import LeasedItem, QueueInfo, QueueOptions, QueueStats, QueueUpdate, StoredItem
from querator.service import Service

__all__ = [
    "Clock",
    "CommandError",
    "Config",
    "LeasedItem",
    "ManualClock",
    "NoQueueError",
    "QueratorError",
    "QueueExistsError",
    "QueueInfo",
    "QueueOptions",
    "QueueStats",
    "QueueUpdate",
    "Service",
    "ShutdownError",
    "StoredItem",
    "TryAgainError",
    "__version__",
    "load_config",
]
