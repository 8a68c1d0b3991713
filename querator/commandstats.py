"""Per-command and per-error counters for INFO's Commandstats / Errorstats and the duration histogram.

Kept as plain integers on slotted objects, bumped by the dispatcher and the connection: one dict lookup and
a few additions per command, so counting costs next to nothing on the RESP path. Readers (INFO, the
Prometheus collector) only read; nothing is reset while the server runs (CONFIG RESETSTAT resets nothing).
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Protocol

# Upper bounds of the command-duration histogram, in seconds (Prometheus's `le`), then in nanoseconds.
DURATION_BUCKETS_S = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
)  # fmt: skip
BUCKET_BOUNDS_NS = tuple(round(bound * 1e9) for bound in DURATION_BUCKETS_S)


class CommandStats:
    """One command's counters, in Redis's sense: `calls` ran (failed ones included), `failed` ran and
    replied an error, `rejected` was refused before running (arity, authentication, permission).
    `usec` is the time the handler itself took; the histogram also covers waiting for the group commit."""

    __slots__ = ("buckets", "calls", "failed", "name", "rejected", "run_ns", "wait_ns")

    def __init__(self, name: str) -> None:
        self.name = name
        self.calls = 0
        self.failed = 0
        self.rejected = 0
        self.run_ns = 0
        # Histogram of whole durations: one count per bucket of `DURATION_BUCKETS_S`, the last for +Inf
        # (not cumulative). Its sum is `run_ns + wait_ns`, so the hot path adds to one total only.
        self.buckets = [0] * (len(BUCKET_BOUNDS_NS) + 1)
        # Time deferred replies waited after their handler returned (group commit, BLOCK).
        self.wait_ns = 0

    @property
    def usec(self) -> int:
        return self.run_ns // 1000

    def reply_ready(self, started_ns: int, ran_ns: int, now_ns: int) -> None:
        """A deferred reply is ready: its whole duration into the histogram."""
        self.buckets[bisect_left(BUCKET_BOUNDS_NS, now_ns - started_ns)] += 1
        self.wait_ns += now_ns - started_ns - ran_ns


class Histogram:
    """Durations in the buckets of `DURATION_BUCKETS_S` (not cumulative; the last is +Inf) and their sum:
    one bisect and two additions per observation."""

    __slots__ = ("buckets", "sum_ns")

    def __init__(self) -> None:
        self.buckets = [0] * (len(BUCKET_BOUNDS_NS) + 1)
        self.sum_ns = 0

    def observe(self, duration_ns: int) -> None:
        self.buckets[bisect_left(BUCKET_BOUNDS_NS, duration_ns)] += 1
        self.sum_ns += duration_ns


class Named(Protocol):
    @property
    def full_name(self) -> str: ...


class Statistics:
    """What INFO's Commandstats and Errorstats sections show, for one server."""

    __slots__ = ("by_id", "commands", "commits", "error_replies", "errors")

    def __init__(self) -> None:
        # Each partition step's write until durable: querator_storage_commit_duration_seconds.
        self.commits = Histogram()
        self.commands: dict[str, CommandStats] = {}
        # The same objects by the identity of the command declaration: the dispatcher's lookup, which
        # skips building the name. Declarations live as long as the command table.
        self.by_id: dict[int, CommandStats] = {}
        # Error replies by their first word (`ERR`, `NOQUEUE`, ...), as Redis's `errorstat_<code>`.
        self.errors: dict[str, int] = {}
        self.error_replies = 0

    def command(self, name: str) -> CommandStats:
        stats = self.commands.get(name)
        if stats is None:
            stats = self.commands[name] = CommandStats(name)
        return stats

    def of(self, command: Named) -> CommandStats:
        stats = self.by_id.get(id(command))
        if stats is None:
            stats = self.by_id[id(command)] = self.command(command.full_name)
        return stats

    def error(self, code: str) -> None:
        self.error_replies += 1
        self.errors[code] = self.errors.get(code, 0) + 1


class OpsMeter:
    """`instantaneous_ops_per_sec` as Redis computes it: the command count sampled every 100 ms by the
    server, the rate averaged over the last 16 samples. Without samples (no running server) it is 0."""

    __slots__ = ("_samples",)

    SAMPLES = 16

    def __init__(self) -> None:
        self._samples: list[tuple[float, int]] = []

    def sample(self, now: float, commands: int) -> None:
        self._samples.append((now, commands))
        if len(self._samples) > self.SAMPLES + 1:
            del self._samples[0]

    def per_second(self) -> int:
        if len(self._samples) < 2:
            return 0
        (t0, c0), (t1, c1) = self._samples[0], self._samples[-1]
        return round((c1 - c0) / (t1 - t0)) if t1 > t0 else 0
