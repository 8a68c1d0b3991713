"""Per-queue statistics for INFO's `# Queues` and `/metrics`, read at request time.

Only `Service`'s public methods are used (`list_queues`, `queue_stats`), so a read waits its turn behind
writes already handed to a partition and sees them, exactly as QSTATS does. A queue deleted while the
snapshot is taken is left out; nothing is cached between requests.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from querator.errors import QueratorError
from querator.model import QueueStats

if TYPE_CHECKING:
    from querator.service import Service

# Queues shown per INFO / scrape: bounds the cost of one request and the series a scrape creates.
MAX_QUEUES = 10_000


async def queue_stats(service: Service, limit: int = MAX_QUEUES) -> dict[str, QueueStats]:
    """Every queue's QSTATS numbers, by name (sorted); empty while the service shuts down."""
    try:
        names = await service.list_queues(limit=limit)
        reads = [service.queue_stats(name) for name in names]
    except QueratorError:
        return {}
    results = await asyncio.gather(*reads, return_exceptions=True)
    found: dict[str, QueueStats] = {}
    for name, result in zip(names, results, strict=True):
        if isinstance(result, QueueStats):
            found[name] = result
        elif not isinstance(result, QueratorError):
            raise result
    return found
