"""QRETRY REASON and the provenance of dead-lettered items (SPEC section 7, Reason; Provenance).

An item's `reason` is that of its last QRETRY (empty when that QRETRY gave none). An item that reaches a
dead queue remembers `source-queue`, `source-id` (its id when it left), `dead-reason` (`max-attempts`,
`expired` or `retry-dead`) and `reason`; every other item reads empty strings there.

Interpretations where the SPEC leaves a choice (the implementation follows them):
- Lease expiry, a schedule coming due and a dead-lettering are not QRETRYs: the reason stays as it was.
- QRETRY DEAD is `retry-dead` even when the item has also reached max attempts or expired: the consumer's
  explicit choice names the cause. A QRETRY without DEAD that dead-letters an item at max attempts is
  `max-attempts`; one that dead-letters an expired item is `expired`.
- Inside the dead queue the item keeps its provenance when it is leased and requeued (lease expiry,
  QRETRY), until a redrive takes it out; a QRETRY there sets its reason like anywhere else.
"""

from __future__ import annotations

import pytest

from querator.errors import CommandError
from querator.model import QueueOptions
from tests.service.features import NO_PROVENANCE, dead_letter, exact, provenance
from tests.support import run


async def _queues(svc, **options) -> None:
    await svc.create_queue("dlq")
    await svc.create_queue("q", QueueOptions(dead_queue="dlq", **options))


async def _only(svc, queue: str):
    (item,) = await svc.items(queue, limit=1000)
    return item


# -- reason -------------------------------------------------------------------------------------------------


def test_produced_item_has_no_reason_and_no_provenance(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await _queues(svc)
            (pid,) = await svc.produce("q", [b"a"])
            item = await _only(svc, "q")
            assert item.id == pid
            assert provenance(item) == NO_PROVENANCE

    run(main())


def test_retry_reason_is_kept_on_the_requeued_item(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await _queues(svc)
            await svc.produce("q", [b"a"])
            (leased,) = await svc.lease("q")
            assert await svc.retry("q", [leased.id], reason=b"timeout talking to db") == 1
            item = await _only(svc, "q")
            assert (item.state, item.attempts) == ("ready", 1)
            assert provenance(item) == (b"timeout talking to db", "", "", "")

    run(main())


def test_reason_is_that_of_the_last_retry_and_empty_when_it_gave_none(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await _queues(svc)
            await svc.produce("q", [b"a"])
            (leased,) = await svc.lease("q")
            await svc.retry("q", [leased.id], reason=b"first")
            (leased,) = await svc.lease("q")
            await svc.retry("q", [leased.id], reason=b"second")
            assert (await _only(svc, "q")).reason == b"second"
            (leased,) = await svc.lease("q")
            await svc.retry("q", [leased.id])
            assert (await _only(svc, "q")).reason == b""

    run(main())


def test_reason_is_kept_through_schedule_and_lease_expiry(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await _queues(svc, lease_timeout=1_000)
            await svc.produce("q", [b"a"])
            (leased,) = await svc.lease("q")
            await svc.retry("q", [leased.id], delay_ms=500, reason=b"later")
            scheduled = await _only(svc, "q")
            assert (scheduled.state, scheduled.reason) == ("scheduled", b"later")
            await env.advance(500)
            due = await _only(svc, "q")
            assert (due.state, due.reason) == ("ready", b"later")
            await svc.lease("q")
            await env.advance(1_000)  # the lease runs out: not a QRETRY
            requeued = await _only(svc, "q")
            assert (requeued.state, requeued.attempts, requeued.reason) == ("ready", 2, b"later")

    run(main())


def test_reason_with_retry_at_keeps_any_bytes(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await _queues(svc)
            await svc.produce("q", [b"a"])
            (leased,) = await svc.lease("q")
            reason = b"\x00\xff\r\nline two \xe2\x9c\x93"
            await svc.retry("q", [leased.id], at_ms=env.now() + 1_000, reason=reason)
            assert (await _only(svc, "q")).reason == reason

    run(main())


def test_reason_may_be_4_kib_and_no_longer(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await _queues(svc)
            await svc.produce("q", [b"a", b"b"])
            a, b = await svc.lease("q", count=2)
            with pytest.raises(CommandError, match=exact("REASON must be at most 4096 bytes")):
                await svc.retry("q", [a.id, b.id], reason=b"r" * 4097)
            items = await svc.items("q")
            assert [(i.id, i.state) for i in items] == [(a.id, "leased"), (b.id, "leased")]
            assert (await svc.queue_stats("q")).retried == 0
            assert await svc.retry("q", [a.id], reason=b"r" * 4096) == 1
            assert (await svc.items("q"))[-1].reason == b"r" * 4096

    run(main())


def test_reason_is_carried_to_the_dead_queue(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await _queues(svc)
            (source_id,) = await dead_letter(svc, "q", [b"a"], reason=b"poison")
            dead = await _only(svc, "dlq")
            assert provenance(dead) == (b"poison", "q", source_id, "retry-dead")

    run(main())


def test_dead_without_reason_after_a_retry_with_one_has_an_empty_reason(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await _queues(svc)
            await svc.produce("q", [b"a"])
            (leased,) = await svc.lease("q")
            await svc.retry("q", [leased.id], reason=b"first")
            (leased,) = await svc.lease("q")
            await svc.retry("q", [leased.id], dead=True)
            assert provenance(await _only(svc, "dlq")) == (b"", "q", leased.id, "retry-dead")

    run(main())


# -- provenance, one test per dead-reason -------------------------------------------------------------------


def test_max_attempts_by_lease_expiry_keeps_the_last_retry_reason(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await _queues(svc, lease_timeout=1_000, max_attempts=2)
            await svc.produce("q", [b"a"], kind=b"k", reference=b"r", encoding=b"e")
            (first,) = await svc.lease("q")
            await svc.retry("q", [first.id], reason=b"flaky")
            (second,) = await svc.lease("q")
            await env.advance(1_000)
            assert await svc.items("q") == []
            dead = await _only(svc, "dlq")
            assert provenance(dead) == (b"flaky", "q", second.id, "max-attempts")
            assert (dead.payload, dead.kind, dead.reference, dead.encoding, dead.attempts) == (
                b"a",
                b"k",
                b"r",
                b"e",
                0,
            )

    run(main())


def test_max_attempts_by_lease_expiry_without_any_retry_has_empty_reason(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await _queues(svc, lease_timeout=1_000, max_attempts=1)
            await svc.produce("q", [b"a"])
            (leased,) = await svc.lease("q")
            await env.advance(1_000)
            assert provenance(await _only(svc, "dlq")) == (b"", "q", leased.id, "max-attempts")

    run(main())


def test_max_attempts_by_retry_even_with_delay(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await _queues(svc, max_attempts=1)
            await svc.produce("q", [b"a"])
            (leased,) = await svc.lease("q")
            assert await svc.retry("q", [leased.id], delay_ms=60_000, reason=b"boom") == 1
            assert provenance(await _only(svc, "dlq")) == (b"boom", "q", leased.id, "max-attempts")

    run(main())


def test_retry_dead_is_retry_dead_even_at_max_attempts(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await _queues(svc, max_attempts=1)
            await svc.produce("q", [b"a"])
            (leased,) = await svc.lease("q")
            assert await svc.retry("q", [leased.id], dead=True, reason=b"bad input") == 1
            assert provenance(await _only(svc, "dlq")) == (b"bad input", "q", leased.id, "retry-dead")

    run(main())


def test_expired_ready_item_remembers_its_ready_id(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await _queues(svc, lease_timeout=1_000, expire_timeout=5_000)
            (pid,) = await svc.produce("q", [b"a"])
            await env.advance(5_000)
            assert provenance(await _only(svc, "dlq")) == (b"", "q", pid, "expired")

    run(main())


def test_expired_item_keeps_the_reason_of_its_last_retry(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await _queues(svc, lease_timeout=1_000, expire_timeout=5_000)
            await svc.produce("q", [b"a"])
            (leased,) = await svc.lease("q")
            await svc.retry("q", [leased.id], reason=b"try again")
            (ready,) = await svc.items("q")
            await env.advance(5_000)
            assert provenance(await _only(svc, "dlq")) == (b"try again", "q", ready.id, "expired")

    run(main())


def test_expired_scheduled_item_remembers_its_scheduled_id(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await _queues(svc, lease_timeout=1_000, expire_timeout=5_000)
            (pid,) = await svc.produce("q", [b"a"], delay_ms=60_000)
            await env.advance(5_000)
            assert provenance(await _only(svc, "dlq")) == (b"", "q", pid, "expired")

    run(main())


def test_expired_leased_item_remembers_its_lease_id_when_the_lease_ends(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await _queues(svc, lease_timeout=1_000, expire_timeout=5_000)
            await svc.produce("q", [b"a"])
            await env.advance(4_500)
            (leased,) = await svc.lease("q")
            await env.advance(1_000)
            assert provenance(await _only(svc, "dlq")) == (b"", "q", leased.id, "expired")

    run(main())


def test_expired_leased_item_retried_is_expired_with_the_retry_reason(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await _queues(svc, lease_timeout=1_000, expire_timeout=5_000)
            await svc.produce("q", [b"a"])
            await env.advance(4_500)
            (leased,) = await svc.lease("q")
            await env.advance(600)
            assert await svc.retry("q", [leased.id], reason=b"too late") == 1
            assert provenance(await _only(svc, "dlq")) == (b"too late", "q", leased.id, "expired")

    run(main())


def test_provenance_names_each_source_queue(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("dlq", QueueOptions(partitions=2))
            await svc.create_queue("orders", QueueOptions(dead_queue="dlq"))
            await svc.create_queue("mails", QueueOptions(dead_queue="dlq"))
            (order_id,) = await dead_letter(svc, "orders", [b"o"])
            (mail_id,) = await dead_letter(svc, "mails", [b"m"], reason=b"bounce")
            dead = {i.payload: provenance(i) for i in await svc.items("dlq")}
            assert dead == {
                b"o": (b"", "orders", order_id, "retry-dead"),
                b"m": (b"bounce", "mails", mail_id, "retry-dead"),
            }

    run(main())


def test_item_produced_into_a_dead_queue_has_no_provenance(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await _queues(svc)
            await svc.produce("dlq", [b"direct"])
            assert provenance(await _only(svc, "dlq")) == NO_PROVENANCE

    run(main())


def test_provenance_is_kept_while_the_item_is_requeued_in_the_dead_queue(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("dlq", QueueOptions(lease_timeout=1_000))
            await svc.create_queue("q", QueueOptions(dead_queue="dlq"))
            (source_id,) = await dead_letter(svc, "q", [b"a"], reason=b"poison")
            await svc.lease("dlq")
            await env.advance(1_000)
            requeued = await _only(svc, "dlq")
            assert (requeued.state, requeued.attempts) == ("ready", 1)
            assert provenance(requeued) == (b"poison", "q", source_id, "retry-dead")
            (leased,) = await svc.lease("dlq")
            await svc.retry("dlq", [leased.id], reason=b"inspected")
            assert provenance(await _only(svc, "dlq")) == (b"inspected", "q", source_id, "retry-dead")

    run(main())


def test_qget_and_qitems_show_the_same_provenance(env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await _queues(svc)
            await dead_letter(svc, "q", [b"a"], reason=b"why")
            listed = await _only(svc, "dlq")
            assert await svc.get("dlq", listed.id) == listed

    run(main())


def test_provenance_and_reason_survive_restart(rocks_env) -> None:
    env = rocks_env

    async def main() -> None:
        async with env.service() as svc:
            await _queues(svc)
            (source_id,) = await dead_letter(svc, "q", [b"a"], reason=b"poison")
            await svc.produce("q", [b"b"])
            (leased,) = await svc.lease("q")
            await svc.retry("q", [leased.id], reason=b"retried", delay_ms=10_000)
            before = {q: await svc.items(q) for q in ("q", "dlq")}
        async with env.service() as svc:
            after = {q: await svc.items(q) for q in ("q", "dlq")}
            assert after == before
            assert provenance(after["dlq"][0]) == (b"poison", "q", source_id, "retry-dead")
            assert after["q"][0].reason == b"retried"

    run(main())
