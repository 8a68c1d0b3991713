"""QDELETE drops the queue's storage, and key spaces a crash left behind are dropped at start."""

from __future__ import annotations

from pathlib import Path

from querator import Config, QueueOptions, Service
from tests.support import run


def test_delete_drops_every_partition_key_space(tmp_path: Path) -> None:
    config = Config(data=str(tmp_path / "data"))

    async def main() -> tuple[list[str], list[str], int]:
        async with Service(config) as svc:
            await svc.create_queue("keep")
            await svc.create_queue("gone", QueueOptions(partitions=3))
            await svc.produce("gone", [b"x"] * 10)
            before = sorted(svc.store.space_names())
            await svc.delete_queue("gone")
            after = sorted(svc.store.space_names())
        async with Service(config) as svc:
            return before, after, len(svc.queues)

    before, after, queues_after_restart = run(main())
    # The three partitions of "gone" and its deduplication keys; nothing of "keep".
    assert sorted(set(before) - set(after)) == ["q2.dedup", "q2.p0", "q2.p1", "q2.p2"]
    assert set(after) < set(before)
    assert queues_after_restart == 1


def test_key_spaces_of_no_queue_are_dropped_at_start(tmp_path: Path) -> None:
    config = Config(data=str(tmp_path / "data"))

    async def main() -> tuple[bool, bool]:
        async with Service(config) as svc:
            await svc.create_queue("q")
            # What a crash between creating a queue's key spaces and its metadata write leaves behind.
            orphan = svc.store.space("q999.p0")
            ws = svc.store.new_write_set()
            ws.put(orphan, b"r\x00", b"stale")
            svc.store.write(ws)
            present = "q999.p0" in svc.store.space_names()
        async with Service(config) as svc:
            return present, "q999.p0" in svc.store.space_names()

    present_before, present_after = run(main())
    assert present_before and not present_after
