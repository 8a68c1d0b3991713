"""Queue administration: create / update / delete / list / info, option ranges and dead-queue rules."""

from __future__ import annotations

import pytest

from querator.errors import CommandError, NoQueueError, QueueExistsError
from querator.model import QueueOptions, QueueUpdate
from tests.support import run


def test_create_queue_defaults_in_info(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q")
            info = await svc.queue_info("q")
            assert info.name == "q"
            assert info.partitions == 1
            assert info.lease_timeout == 60_000
            assert info.expire_timeout == 0
            assert info.max_attempts == 0
            assert info.dead_queue == ""
            assert info.reference == ""
            assert info.created_at == env.now()
            assert info.updated_at == env.now()

    run(main())


def test_create_queue_with_all_options_reported_by_info(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("dlq")
            opts = QueueOptions(
                partitions=3,
                lease_timeout=1_000,
                expire_timeout=5_000,
                max_attempts=4,
                dead_queue="dlq",
                reference="ref-1",
            )
            await svc.create_queue("q", opts)
            info = await svc.queue_info("q")
            assert (info.partitions, info.lease_timeout, info.expire_timeout, info.max_attempts) == (
                3,
                1_000,
                5_000,
                4,
            )
            assert info.dead_queue == "dlq"
            assert info.reference == "ref-1"

    run(main())


def test_create_existing_queue_raises_queue_exists(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q")
            with pytest.raises(QueueExistsError) as err:
                await svc.create_queue("q", QueueOptions(partitions=2))
            assert str(err.value) == "queue 'q' already exists"
            assert err.value.code == "EXISTS"
            assert (await svc.queue_info("q")).partitions == 1

    run(main())


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"partitions": 0}, "PARTITIONS must be between 1 and 1024"),
        ({"partitions": 1025}, "PARTITIONS must be between 1 and 1024"),
        ({"lease_timeout": 0}, "LEASE-TIMEOUT must be between 1 and 604800000"),
        ({"lease_timeout": 604_800_001}, "LEASE-TIMEOUT must be between 1 and 604800000"),
        ({"expire_timeout": 1}, "EXPIRE-TIMEOUT must be 0 or at least the lease timeout (60000)"),
        (
            {"lease_timeout": 5_000, "expire_timeout": 4_999},
            "EXPIRE-TIMEOUT must be 0 or at least the lease timeout (5000)",
        ),
        ({"max_attempts": -1}, "MAX-ATTEMPTS must be between 0 and 65536"),
        ({"max_attempts": 65_537}, "MAX-ATTEMPTS must be between 0 and 65536"),
    ],
)
def test_create_queue_out_of_range_option_names_option_and_range(env, options, message) -> None:
    async def main() -> None:
        async with env.service() as svc:
            with pytest.raises(CommandError) as err:
                await svc.create_queue("q", QueueOptions(**options))
            assert str(err.value) == message
            assert err.value.code == "ERR"
            assert await svc.list_queues() == []

    run(main())


def test_create_queue_negative_expire_timeout_is_rejected_naming_option(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            with pytest.raises(CommandError, match="EXPIRE-TIMEOUT"):
                await svc.create_queue("q", QueueOptions(expire_timeout=-1))
            assert await svc.list_queues() == []

    run(main())


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"partitions": 1}, 1),
        ({"partitions": 1024}, 1024),
        ({"lease_timeout": 1}, 1),
        ({"lease_timeout": 604_800_000}, 604_800_000),
        ({"max_attempts": 65_536}, 65_536),
    ],
)
def test_create_queue_accepts_range_bounds(env, options, expected) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q", QueueOptions(**options))
            info = await svc.queue_info("q")
            (field,) = options
            assert getattr(info, field) == expected

    run(main())


def test_expire_timeout_equal_to_lease_timeout_is_accepted(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q", QueueOptions(lease_timeout=2_000, expire_timeout=2_000))
            assert (await svc.queue_info("q")).expire_timeout == 2_000

    run(main())


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "invalid queue name; it may not be empty"),
        ("a b", "invalid queue name; only visible ASCII characters, no whitespace"),
        ("tab\there", "invalid queue name; only visible ASCII characters, no whitespace"),
        ("caf\u00e9", "invalid queue name; only visible ASCII characters, no whitespace"),
        ("x" * 513, "invalid queue name; at most 512 bytes"),
    ],
)
def test_invalid_queue_names_are_rejected(env, name, message) -> None:
    async def main() -> None:
        async with env.service() as svc:
            with pytest.raises(CommandError) as err:
                await svc.create_queue(name)
            assert str(err.value) == message
            assert await svc.list_queues() == []

    run(main())


def test_queue_name_of_512_visible_bytes_is_valid(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            name = "~!" * 256
            await svc.create_queue(name)
            assert await svc.list_queues() == [name]

    run(main())


def test_missing_queue_raises_no_queue_with_name_for_every_operation(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            calls = [
                lambda: svc.queue_info("x"),
                lambda: svc.queue_stats("x"),
                lambda: svc.queue_length("x"),
                lambda: svc.update_queue("x", QueueUpdate(reference="r")),
                lambda: svc.delete_queue("x"),
                lambda: svc.produce("x", [b"a"]),
                lambda: svc.lease("x"),
                lambda: svc.complete("x", ["1-0-1"]),
                lambda: svc.retry("x", ["1-0-1"]),
                lambda: svc.extend("x", ["1-0-1"]),
                lambda: svc.items("x"),
                lambda: svc.remove("x", ["1-0-1"]),
                lambda: svc.clear("x"),
            ]
            for call in calls:
                with pytest.raises(NoQueueError) as err:
                    await call()
                assert str(err.value) == "no such queue 'x'"
                assert err.value.code == "NOQUEUE"

    run(main())


def test_update_changes_only_given_options_and_updated_at(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q", QueueOptions(lease_timeout=5_000, max_attempts=3, reference="a"))
            created = env.now()
            await env.advance(1_234)
            await svc.update_queue("q", QueueUpdate(reference="b"))
            info = await svc.queue_info("q")
            assert info.reference == "b"
            assert info.lease_timeout == 5_000
            assert info.max_attempts == 3
            assert info.partitions == 1
            assert info.created_at == created
            assert info.updated_at == created + 1_234

    run(main())


def test_update_partitions_may_only_grow(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q", QueueOptions(partitions=3))
            with pytest.raises(CommandError) as err:
                await svc.update_queue("q", QueueUpdate(partitions=2))
            assert "PARTITIONS may only grow" in str(err.value)
            assert (await svc.queue_info("q")).partitions == 3
            await svc.update_queue("q", QueueUpdate(partitions=3))
            await svc.update_queue("q", QueueUpdate(partitions=5))
            assert (await svc.queue_info("q")).partitions == 5
            stats = await svc.queue_stats("q")
            assert [p.partition for p in stats.partitions] == [0, 1, 2, 3, 4]

    run(main())


def test_grown_partitions_take_new_items(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q")
            await svc.produce("q", [b"a"])
            await svc.update_queue("q", QueueUpdate(partitions=2))
            await svc.produce("q", [b"b"])  # partition 1 has fewer ready items
            stats = await svc.queue_stats("q")
            assert [p.ready for p in stats.partitions] == [1, 1]
            leased = await svc.lease("q", count=2)
            assert sorted(i.payload for i in leased) == [b"a", b"b"]

    run(main())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (QueueUpdate(partitions=1025), "PARTITIONS must be between 1 and 1024"),
        (QueueUpdate(lease_timeout=0), "LEASE-TIMEOUT must be between 1 and 604800000"),
        (QueueUpdate(max_attempts=65_537), "MAX-ATTEMPTS must be between 0 and 65536"),
        (QueueUpdate(expire_timeout=10), "EXPIRE-TIMEOUT must be 0 or at least the lease timeout (60000)"),
    ],
)
def test_update_out_of_range_is_rejected_and_changes_nothing(env, change, message) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q", QueueOptions(reference="keep"))
            before = await svc.queue_info("q")
            await env.advance(10)
            with pytest.raises(CommandError) as err:
                await svc.update_queue("q", change)
            assert str(err.value) == message
            assert await svc.queue_info("q") == before

    run(main())


def test_update_lease_timeout_above_expire_timeout_is_rejected(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q", QueueOptions(lease_timeout=1_000, expire_timeout=2_000))
            with pytest.raises(CommandError) as err:
                await svc.update_queue("q", QueueUpdate(lease_timeout=3_000))
            assert str(err.value) == "EXPIRE-TIMEOUT must be 0 or at least the lease timeout (3000)"
            assert (await svc.queue_info("q")).lease_timeout == 1_000

    run(main())


def test_dead_queue_must_exist(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            with pytest.raises(NoQueueError) as err:
                await svc.create_queue("q", QueueOptions(dead_queue="nope"))
            assert str(err.value) == "no such queue 'nope'"
            assert await svc.list_queues() == []
            await svc.create_queue("q")
            with pytest.raises(NoQueueError):
                await svc.update_queue("q", QueueUpdate(dead_queue="nope"))
            assert (await svc.queue_info("q")).dead_queue == ""

    run(main())


def test_dead_queue_may_not_be_the_queue_itself(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            with pytest.raises(CommandError, match="DEAD-QUEUE may not be the queue itself"):
                await svc.create_queue("q", QueueOptions(dead_queue="q"))
            await svc.create_queue("q")
            with pytest.raises(CommandError, match="DEAD-QUEUE may not be the queue itself"):
                await svc.update_queue("q", QueueUpdate(dead_queue="q"))
            assert (await svc.queue_info("q")).dead_queue == ""

    run(main())


def test_dead_queue_may_not_have_its_own_dead_queue(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("d2")
            await svc.create_queue("d1", QueueOptions(dead_queue="d2"))
            with pytest.raises(CommandError) as err:
                await svc.create_queue("q", QueueOptions(dead_queue="d1"))
            assert str(err.value) == "DEAD-QUEUE 'd1' has a dead queue of its own"
            assert "q" not in await svc.list_queues()

    run(main())


def test_queue_that_is_a_dead_queue_may_not_get_one(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("dlq")
            await svc.create_queue("other")
            await svc.create_queue("q", QueueOptions(dead_queue="dlq"))
            with pytest.raises(CommandError) as err:
                await svc.update_queue("dlq", QueueUpdate(dead_queue="other"))
            assert str(err.value) == "queue 'dlq' is the dead queue of 'q' and may not have one"
            assert (await svc.queue_info("dlq")).dead_queue == ""

    run(main())


def test_update_dead_queue_empty_string_removes_it(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("dlq")
            await svc.create_queue("q", QueueOptions(dead_queue="dlq", max_attempts=1))
            assert (await svc.queue_info("q")).dead_queue == "dlq"
            await svc.update_queue("q", QueueUpdate(dead_queue=""))
            assert (await svc.queue_info("q")).dead_queue == ""
            # Without a dead queue, a dead-lettered item is deleted rather than moved.
            await svc.produce("q", [b"a"])
            (item,) = await svc.lease("q")
            assert await svc.retry("q", [item.id], dead=True) == 1
            assert (await svc.queue_stats("dlq")).total == 0
            assert (await svc.queue_stats("q")).total == 0
            # And the former dead queue may now be deleted.
            await svc.delete_queue("dlq")
            assert await svc.list_queues() == ["q"]

    run(main())


def test_delete_dead_queue_of_another_fails_naming_it(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("dlq")
            await svc.create_queue("src", QueueOptions(dead_queue="dlq"))
            with pytest.raises(CommandError) as err:
                await svc.delete_queue("dlq")
            assert "'src'" in str(err.value)
            assert "dlq" in str(err.value)
            assert await svc.list_queues() == ["dlq", "src"]

    run(main())


def test_delete_queue_removes_queue_and_items(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q")
            await svc.create_queue("keep")
            await svc.produce("q", [b"a", b"b"])
            await svc.delete_queue("q")
            assert await svc.list_queues() == ["keep"]
            with pytest.raises(NoQueueError, match="no such queue 'q'"):
                await svc.queue_info("q")
            with pytest.raises(NoQueueError):
                await svc.delete_queue("q")
            await svc.create_queue("q")
            stats = await svc.queue_stats("q")
            assert (stats.total, stats.produced) == (0, 0)
            assert await svc.lease("q") == []

    run(main())


def test_delete_queue_fails_blocked_consumers_with_no_queue(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q")
            waiting = svc.lease("q", block_ms=0)
            await env.settle()
            await svc.delete_queue("q")
            with pytest.raises(NoQueueError, match="no such queue 'q'"):
                await waiting

    run(main())


def test_list_queues_byte_order_after_and_limit(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            names = ["b", "a", "B", "_x", "a1", "Z9"]
            for name in names:
                await svc.create_queue(name)
            expected = sorted(names, key=str.encode)
            assert expected == ["B", "Z9", "_x", "a", "a1", "b"]
            assert await svc.list_queues() == expected
            assert await svc.list_queues(after="_x") == ["a", "a1", "b"]
            assert await svc.list_queues(after="a0") == ["a1", "b"]  # after a name that does not exist
            assert await svc.list_queues(limit=2) == ["B", "Z9"]
            assert await svc.list_queues(after="Z9", limit=2) == ["_x", "a"]
            assert await svc.list_queues(after="b") == []
            for limit in (0, 100_001):
                with pytest.raises(CommandError, match=r"^LIMIT must be between 1 and 100000$"):
                    await svc.list_queues(limit=limit)
            assert await svc.list_queues(limit=100_000) == expected

    run(main())


def test_list_queues_default_limit_is_1000(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            for i in range(1_001):
                await svc.create_queue(f"q{i:04d}")
            listed = await svc.list_queues()
            assert len(listed) == 1_000
            assert listed[-1] == "q0999"
            assert await svc.list_queues(after="q0999") == ["q1000"]

    run(main())
