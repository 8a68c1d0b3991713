"""A data directory written by the version before SPEC 7 (`tests/fixtures/data-0.1-before-spec7`, made by
that version's code: queues jobs (2 partitions, max attempts 2, dead queue `dead`) and dead) opens and
serves unchanged: the records without extras and the counters of that format read as they were."""

from __future__ import annotations

import shutil
from pathlib import Path

from querator.clock import ManualClock
from querator.config import Config
from querator.model import QueueOptions
from querator.service import Service
from tests.support import run

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "data-0.1-before-spec7"
WRITTEN_AT = 1_800_000_000_000  # the ManualClock time the fixture was written at


def _open(tmp_path: Path) -> Service:
    data = tmp_path / "data"
    shutil.copytree(FIXTURE, data)
    return Service(Config(data=str(data)), clock=ManualClock(WRITTEN_AT))


def test_an_earlier_data_directory_reads_as_it_was_written(tmp_path: Path) -> None:
    async def main() -> None:
        async with _open(tmp_path) as svc:
            assert await svc.list_queues() == ["dead", "jobs"]
            info = await svc.queue_info("jobs")
            assert (info.partitions, info.max_attempts, info.dead_queue, info.reference) == (
                2,
                2,
                "dead",
                "ref",
            )
            assert (info.paused, info.dedup_window) == (False, QueueOptions().dedup_window)
            items = await svc.items("jobs", limit=100)
            assert [(i.id, i.state, i.attempts, i.payload, i.kind) for i in items] == [
                ("2-0-3", "ready", 0, b"a3", b""),
                ("2-0-4", "ready", 0, b"doomed", b""),
                ("2-1-1", "leased", 1, b"b1", b"k"),
                ("2-1-2", "scheduled", 0, b"later", b""),
            ]
            assert all(
                (i.reason, i.source_queue, i.source_id, i.dead_reason) == (b"", "", "", "") for i in items
            )
            (dead,) = await svc.items("dead")
            assert (dead.id, dead.payload, dead.source_queue, dead.dead_reason) == ("1-0-1", b"a2", "", "")
            stats = await svc.queue_stats("jobs")
            assert (stats.ready, stats.leased, stats.scheduled) == (2, 1, 1)
            assert (stats.produced, stats.completed, stats.retried, stats.dead_lettered) == (6, 1, 1, 1)
            assert stats.deduplicated == 0

    run(main())


def test_an_earlier_data_directory_serves_every_command(tmp_path: Path) -> None:
    async def main() -> None:
        async with _open(tmp_path) as svc:
            (first,) = await svc.lease("jobs")
            assert (first.id, first.payload, first.attempts) == ("2-0-3", b"a3", 1)
            assert await svc.complete("jobs", ["2-1-1", first.id]) == 2
            (doomed,) = await svc.lease("jobs")
            assert await svc.retry("jobs", [doomed.id], dead=True, reason=b"old record, new reason") == 1
            dead_items = await svc.items("dead")
            assert [(i.payload, i.reason, i.source_queue, i.dead_reason) for i in dead_items] == [
                (b"a2", b"", "", ""),
                (b"doomed", b"old record, new reason", "jobs", "retry-dead"),
            ]
            # The old dead item has no provenance: only a TO redrive moves it.
            assert await svc.redrive("dead") == 1
            assert await svc.redrive("dead", to="jobs") == 1
            ids = await svc.produce("jobs", [b"x"], dedup=b"k1")
            assert await svc.produce("jobs", [b"x"], dedup=b"k1") == ids
            assert (await svc.queue_stats("jobs")).deduplicated == 1
            await svc.pause("jobs")
            assert await svc.lease("jobs") == []

    run(main())
