"""`[[queue]]` tables at start: created in dependency order, and the options a table names kept in step
with the file on every start (ADR 0011)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from querator.config import QueueDeclaration, load_config
from querator.declared import DeclarationError, dependency_order
from querator.model import QueueUpdate
from tests.support import run


def declared(tmp_path: Path, text: str) -> list[QueueDeclaration]:
    path = tmp_path / "queues.toml"
    path.write_text(text)
    return load_config(path).queues


def test_a_table_records_the_options_it_names(tmp_path: Path) -> None:
    [jobs] = declared(tmp_path, '[[queue]]\nname = "jobs"\nlease-timeout = 5000\ndead-queue = ""\n')
    assert jobs.named == frozenset({"lease_timeout", "dead_queue"})
    assert jobs.source == str(tmp_path / "queues.toml")
    assert jobs.options().lease_timeout == 5000


def test_dead_queues_come_first_whatever_the_file_order() -> None:
    a = QueueDeclaration(name="a", dead_queue="c")
    b = QueueDeclaration(name="b", dead_queue="old")
    c = QueueDeclaration(name="c")
    order = [d.name for d in dependency_order([a, b, c], existing={"old"})]
    assert order == ["c", "a", "b"]


def test_declaration_order_does_not_matter(env, tmp_path: Path) -> None:
    queues = declared(
        tmp_path,
        '[[queue]]\nname = "emails"\ndead-queue = "emails-dead"\nmax-attempts = 3\n'
        '[[queue]]\nname = "emails-dead"\n',
    )

    async def main() -> None:
        async with env.service(queues=queues) as svc:
            assert await svc.list_queues() == ["emails", "emails-dead"]
            info = await svc.queue_info("emails")
            assert (info.dead_queue, info.max_attempts) == ("emails-dead", 3)

    run(main())


def test_an_existing_queue_may_be_the_dead_queue_of_a_declared_one(rocks_env, tmp_path: Path) -> None:
    env = rocks_env
    queues = declared(tmp_path, '[[queue]]\nname = "jobs"\ndead-queue = "made-by-hand"\n')

    async def create() -> None:
        async with env.service() as svc:
            await env.create(svc, "made-by-hand")

    async def reopen() -> None:
        async with env.service(queues=queues) as svc:
            assert (await svc.queue_info("jobs")).dead_queue == "made-by-hand"

    run(create())
    run(reopen())


def test_a_failed_declaration_closes_the_service(env, tmp_path: Path) -> None:
    queues = declared(tmp_path, '[[queue]]\nname = "jobs"\nmax-attempts = -1\n')

    async def main() -> None:
        svc = env.service(queues=queues)
        with pytest.raises(
            DeclarationError, match=r"^declared queue cannot be applied; .*'jobs': MAX-ATTEMPTS"
        ):
            await svc.start()
        async with env.service() as again:  # the storage was released (RocksDB's lock too)
            assert await again.list_queues() == []

    run(main())


def test_named_options_follow_the_file_and_others_stay(
    rocks_env, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    env = rocks_env
    first = declared(tmp_path, '[[queue]]\nname = "jobs"\nlease-timeout = 60000\npartitions = 2\n')
    second = declared(
        tmp_path, '[[queue]]\nname = "jobs"\nlease-timeout = 5000\npartitions = 4\nreference = "billing"\n'
    )

    async def create() -> None:
        async with env.service(queues=first) as svc:
            await svc.produce("jobs", [b"a", b"b"])
            # Set by hand, and not named by the table: the next start must keep it.
            await svc.update_queue("jobs", QueueUpdate(max_attempts=7))

    async def restart() -> None:
        async with env.service(queues=second) as svc:
            info = await svc.queue_info("jobs")
            assert (info.lease_timeout, info.partitions, info.reference) == (5000, 4, "billing")
            assert info.max_attempts == 7
            assert (await svc.queue_stats("jobs")).ready == 2

    run(create())
    with caplog.at_level(logging.INFO, logger="querator.declared"):
        run(restart())
    changes = [r.getMessage() for r in caplog.records if r.name == "querator.declared"]
    assert changes == [
        "declared queue 'jobs': partitions 2 -> 4",
        "declared queue 'jobs': lease-timeout 60000 -> 5000",
        "declared queue 'jobs': reference '' -> 'billing'",
    ]


def test_an_unchanged_declaration_changes_and_logs_nothing(
    rocks_env, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    env = rocks_env
    queues = declared(tmp_path, '[[queue]]\nname = "jobs"\nlease-timeout = 5000\n')

    async def start() -> int:
        async with env.service(queues=queues) as svc:
            return (await svc.queue_info("jobs")).updated_at

    created_at = run(start())
    env.clock.advance(1000)
    with caplog.at_level(logging.INFO, logger="querator.declared"):
        assert run(start()) == created_at
    assert [r for r in caplog.records if r.name == "querator.declared"] == []


def test_declared_partitions_may_only_grow(rocks_env, tmp_path: Path) -> None:
    env = rocks_env
    wide = declared(tmp_path, '[[queue]]\nname = "jobs"\npartitions = 4\n')
    narrow = declared(tmp_path, '[[queue]]\nname = "jobs"\npartitions = 2\nlease-timeout = 5000\n')

    async def start(queues: list[QueueDeclaration]) -> None:
        async with env.service(queues=queues):
            pass

    run(start(wide))
    with pytest.raises(DeclarationError) as error:
        run(start(narrow))
    assert str(error.value) == (
        f"declared partitions may only grow; {tmp_path / 'queues.toml'}: [[queue]] 'jobs' has partitions = 2 "
        "but the queue has 4: raise it, or remove the key"
    )

    async def unchanged() -> None:
        async with env.service() as svc:
            info = await svc.queue_info("jobs")
            assert (info.partitions, info.lease_timeout) == (4, 60_000)

    run(unchanged())
