"""`GET /metrics`: the metric families of SPEC section 8 that the server can tell today.

Everything is read at scrape time: per-queue numbers through `Service`'s public reads (QSTATS's numbers),
command durations from the dispatcher's counters, so updating a metric costs the RESP path nothing beyond
those counters. Series are bounded by the number of queues and of commands. The registry is the server's
own (not prometheus_client's global one), so several servers in one process do not share series.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import accumulate

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from querator import snapshot
from querator.auth import User
from querator.clients import ServerState
from querator.commandstats import DURATION_BUCKETS_S
from querator.model import QueueStats

# Items dead-lettered before the engine counted them by dead-reason (an earlier data directory).
UNKNOWN_REASON = "unknown"
_BUCKET_BOUNDS = [repr(bound) for bound in DURATION_BUCKETS_S] + ["+Inf"]


class QueratorCollector(Collector):
    """Turns one snapshot of the server into metric families; `queues` is set just before a scrape."""

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.queues: dict[str, QueueStats] = {}

    def collect(self) -> Iterator[Metric]:
        queues = self.queues
        items = GaugeMetricFamily(
            "querator_queue_items", "Items in a queue, by state.", labels=["queue", "state"]
        )
        oldest = GaugeMetricFamily(
            "querator_queue_oldest_item_age_seconds",
            "Time since the oldest ready item became ready (0 when none is ready).",
            labels=["queue"],
        )
        waiters = GaugeMetricFamily(
            "querator_lease_waiters", "Consumers blocked in QLEASE ... BLOCK.", labels=["queue"]
        )
        counters = {
            field: CounterMetricFamily(f"querator_items_{field}", help_text, labels=["queue"])
            for field, help_text in (
                ("produced", "Items produced into the queue."),
                ("leased", "Items handed to consumers by QLEASE."),
                ("completed", "Leased items completed."),
                ("retried", "Leased items handed back by QRETRY."),
                ("lease_expired", "Leases that ran out (the item went back, or to the dead queue)."),
                ("deduplicated", "QPRODUCE calls answered from the dedup window, storing nothing."),
            )
        }
        dead = CounterMetricFamily(
            "querator_items_dead_lettered",
            "Items moved to the dead queue, or dropped for want of one.",
            labels=["queue", "reason"],
        )
        for name, stats in queues.items():
            for state in ("ready", "leased", "scheduled"):
                items.add_metric([name, state], getattr(stats, state))
            oldest.add_metric([name], stats.oldest_ready_age / 1000)
            waiters.add_metric([name], stats.waiting_consumers)
            for field, family in counters.items():
                family.add_metric([name], stats.leased_total if field == "leased" else getattr(stats, field))
            by_reason = stats.dead_lettered_by_reason
            for reason, count in by_reason.items():
                dead.add_metric([name, reason], count)
            unknown = stats.dead_lettered - sum(by_reason.values())
            if unknown > 0:
                dead.add_metric([name, UNKNOWN_REASON], unknown)
        yield from (items, oldest, *counters.values(), dead, waiters)
        yield self._command_durations()
        yield self._commit_durations()
        yield GaugeMetricFamily(
            "querator_connected_clients", "Open RESP connections.", value=len(self.state.clients)
        )

    def _command_durations(self) -> HistogramMetricFamily:
        family = HistogramMetricFamily(
            "querator_command_duration_seconds",
            "Time from a command's dispatch until its reply is ready (group commit and BLOCK included).",
            labels=["command"],
        )
        for stats in sorted(self.state.statistics.commands.values(), key=lambda s: s.name):
            cumulative = list(accumulate(stats.buckets))
            if not cumulative[-1]:
                continue  # only rejected so far: no duration to show
            family.add_metric(
                [stats.name],
                list(zip(_BUCKET_BOUNDS, cumulative, strict=True)),
                (stats.run_ns + stats.wait_ns) / 1e9,
            )
        return family

    def _commit_durations(self) -> HistogramMetricFamily:
        commits = self.state.statistics.commits
        family = HistogramMetricFamily(
            "querator_storage_commit_duration_seconds",
            "Time from a partition step's write until it is durable (its group commit).",
        )
        cumulative = list(accumulate(commits.buckets))
        family.add_metric([], list(zip(_BUCKET_BOUNDS, cumulative, strict=True)), commits.sum_ns / 1e9)
        return family


class Metrics:
    """The registry of one server: its own collector and the standard process metrics."""

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.registry = CollectorRegistry(auto_describe=False)
        self.collector = QueratorCollector(state)
        self.registry.register(self.collector)
        ProcessCollector(registry=self.registry)

    async def render(self, accept: str, user: User | None = None) -> tuple[bytes, str]:
        """The exposition (OpenMetrics when `accept` asks for it) and its content type; with `user`, only
        the queues its patterns allow."""
        queues = await snapshot.queue_stats(self.state.service)
        if user is not None and not user.unrestricted:
            queues = {name: stats for name, stats in queues.items() if user.may_access(name)}
        # No await between setting the snapshot and encoding it, so concurrent scrapes cannot mix.
        self.collector.queues = queues
        encoder, content_type = choose_encoder(accept)
        try:
            return encoder(self.registry), content_type
        finally:
            self.collector.queues = {}
