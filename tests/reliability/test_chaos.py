"""The chaos checker on hand-written histories, and one short end-to-end crash run per durability mode.

The synthetic histories use the record format of `bench.chaos` (see its docstring). `H` hands out call
numbers and timestamps: `mono` in seconds and `wall` in Unix ms move together, as on a real machine.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import redis

from bench.chaos import DEAD_QUEUE, QUEUE, CheckResult, RunConfig, check, error_code, load_histories, run
from bench.pgcluster import PgCluster

LEASE_MS = 2000


class H:
    """A builder of history records for several processes on one shared clock."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.calls: dict[str, int] = {}
        self.now_ms = 1_000_000.0

    def at(self, wall_ms: float) -> H:
        self.now_ms = wall_ms
        return self

    def _rec(self, type_: str, op: str, proc: str, call: int, **data: Any) -> None:
        self.records.append(
            {
                "type": type_,
                "op": op,
                "proc": proc,
                "call": call,
                "mono": self.now_ms / 1000,
                "wall": self.now_ms,
                **data,
            }
        )
        self.now_ms += 1

    def _call(self, proc: str) -> int:
        self.calls[proc] = self.calls.get(proc, 0) + 1
        return self.calls[proc]

    def produce(self, proc: str, *payloads: str, outcome: str = "ok") -> H:
        call = self._call(proc)
        self._rec("invoke", "produce", proc, call, payloads=list(payloads))
        if outcome == "ok":
            self._rec("ok", "produce", proc, call, ids=[f"0-{p}" for p in payloads])
        elif outcome == "fail":
            self._rec("fail", "produce", proc, call, error="TRYAGAIN partition overloaded")
        elif outcome == "unknown":
            self._rec("unknown", "produce", proc, call, error="ConnectionError: reset")
        return self  # outcome "none": the invoke has no outcome at all

    def lease(self, proc: str, *items: tuple[str, str, int], lease_ms: int = LEASE_MS) -> H:
        """items: (id, payload, attempts); the server's deadline is the invoke time + lease_ms."""
        call = self._call(proc)
        self._rec("invoke", "lease", proc, call, count=10, block=200)
        deadline = int(self.now_ms) + lease_ms
        self._rec("ok", "lease", proc, call, items=[[i, p, a, deadline] for i, p, a in items])
        return self

    def complete(self, proc: str, *ids: str, n: int | None = None, outcome: str = "ok") -> H:
        call = self._call(proc)
        self._rec("invoke", "complete", proc, call, ids=list(ids), payloads=[])
        if outcome == "ok":
            self._rec("ok", "complete", proc, call, n=len(ids) if n is None else n)
        else:
            self._rec(outcome, "complete", proc, call, error="x")
        return self

    def retry(
        self, proc: str, *ids: str, dead: bool = False, reason: str = "r", payloads: list[str] | None = None,
        n: int | None = None, outcome: str = "ok",
    ) -> H:  # fmt: skip
        call = self._call(proc)
        self._rec(
            "invoke", "retry", proc, call, ids=list(ids), payloads=payloads or [], dead=dead, reason=reason
        )
        if outcome == "ok":
            self._rec("ok", "retry", proc, call, n=len(ids) if n is None else n)
        else:
            self._rec(outcome, "retry", proc, call, error="x")
        return self

    def redrive(self, *payloads: str, n: int | None = None, outcome: str = "ok") -> H:
        """The admin's QREDRIVE of the first listed payloads (ids made up: the checker reads payloads)."""
        call = self._call("A0")
        ids = [f"d-{p}" for p in payloads]
        self._rec("invoke", "redrive", "A0", call, limit=len(payloads), ids=ids, payloads=list(payloads))
        if outcome == "ok":
            self._rec("ok", "redrive", "A0", call, n=len(payloads) if n is None else n)
        else:
            self._rec(outcome, "redrive", "A0", call, error="x")
        return self

    def snapshot(self, queue: str, *items: dict[str, str]) -> H:
        """The drain's final listing of `queue`: each item's fields beyond id / payload default to empty."""
        full = [{"id": "", "state": "ready", "attempts": 0, "reason": "", "source-queue": "", "source-id": "",
                 "dead-reason": "", **it} for it in items]  # fmt: skip
        self._rec("snapshot", "snapshot", "drain", 0, queue=queue, items=full)
        return self

    def ended(self, dead: list[dict[str, str]] | None = None, queue: list[dict[str, str]] | None = None) -> H:
        """Both final snapshots (empty unless given)."""
        return self.snapshot(QUEUE, *(queue or [])).snapshot(DEAD_QUEUE, *(dead or []))

    def check(self) -> CheckResult:
        return check(self.records)


def dead_item(payload: str, source_id: str, reason: str = "r", **fields: str) -> dict[str, str]:
    """An item of the final dead-queue snapshot, with the provenance a QRETRY DEAD gives."""
    item = {"payload": payload, "reason": reason, "source-queue": QUEUE, "source-id": source_id}
    return {**item, "dead-reason": "retry-dead", **fields}


def _only(result: CheckResult, **expected: int) -> None:
    """Every must-be-0 count is 0 except the ones named, which have exactly the value given."""
    got = {name: getattr(result, name) for name in CheckResult.MUST_BE_ZERO}
    want = {name: expected.get(name, 0) for name in CheckResult.MUST_BE_ZERO}
    assert got == want, result.examples


def test_clean_history_passes() -> None:
    h = H().produce("P0", "a", "b").lease("C0", ("1", "a", 1), ("2", "b", 1)).complete("C0", "1", "2")
    r = h.check()
    _only(r)
    assert r.ok and r.acknowledged == 2 and r.delivered_payloads == 2 and r.duplicates_pct == 0
    assert r.completed_acked == 2 and r.produce_calls == {"ok": 1} and r.produce_items == {"ok": 2}


def test_acknowledged_item_never_delivered_is_lost() -> None:
    h = H().produce("P0", "a", "b").lease("C0", ("1", "a", 1)).complete("C0", "1")
    r = h.check()
    _only(r, lost=1)
    assert not r.ok
    assert r.examples["lost"][0]["payload"] == "b"


def test_unacknowledged_produces_may_vanish() -> None:
    h = H().produce("P0", "u", outcome="unknown").produce("P0", "f", outcome="fail")
    h.produce("P0", "n", outcome="none")  # the producer died before the reply
    r = h.check()
    _only(r)
    assert r.produce_calls == {"unknown": 2, "fail": 1}


def test_unknown_produce_that_was_applied_is_fine() -> None:
    h = H().produce("P0", "u", outcome="unknown").lease("C0", ("1", "u", 1)).complete("C0", "1")
    r = h.check()
    _only(r)
    assert r.unknown_produces_delivered == 1


def test_delivered_payload_nobody_produced_is_unexpected() -> None:
    h = H().produce("P0", "a").lease("C0", ("1", "a", 1), ("2", "ghost", 1))
    r = h.check()
    _only(r, unexpected=1)
    assert r.examples["unexpected"][0]["payload"] == "ghost"


def test_payload_of_an_error_reply_must_not_be_delivered() -> None:
    h = H().produce("P0", "f", outcome="fail").lease("C0", ("1", "f", 1))
    _only(h.check(), failed_produce_applied=1)


def test_delivery_after_acknowledged_complete_is_a_redelivery() -> None:
    h = H().produce("P0", "a").lease("C0", ("1", "a", 1)).complete("C0", "1")
    h.at(1_010_000).lease("drain", ("9", "a", 2))  # e.g. the completion did not survive a crash
    r = h.check()
    _only(r, redelivered_after_complete=1)
    assert [d["proc"] for d in r.examples["redelivered_after_complete"][0]["deliveries"]] == ["C0", "drain"]


def test_redelivery_after_unknown_or_partial_complete_is_only_a_duplicate() -> None:
    h = H().produce("P0", "a", "b").lease("C0", ("1", "a", 1), ("2", "b", 1))
    h.complete("C0", "1", outcome="unknown").at(1_002_100).complete("C0", "2", n=0)  # after the deadline
    h.at(1_003_000).lease("C1", ("3", "a", 2), ("4", "b", 2)).complete("C1", "3", "4")
    r = h.check()
    _only(r)
    assert r.duplicated_payloads == 2 and r.duplicates_pct == 100.0


def test_overlapping_leases_count() -> None:
    h = H().produce("P0", "a").at(1_001_000).lease("C0", ("1", "a", 1))  # deadline 1_003_000
    h.at(1_002_000).lease("C1", ("2", "a", 2))  # while C0's lease still runs
    r = h.check()
    _only(r, concurrent_leases=1)
    assert len(r.examples["concurrent_leases"][0]["deliveries"]) == 2


def test_overlap_after_unacknowledged_complete_still_counts() -> None:
    h = H().produce("P0", "a").at(1_001_000).lease("C0", ("1", "a", 1)).complete("C0", "1", outcome="unknown")
    h.at(1_001_500).lease("C1", ("2", "a", 2))
    _only(h.check(), concurrent_leases=1)


def test_redelivery_after_expiry_is_not_an_overlap() -> None:
    h = H().produce("P0", "a", "b").at(1_001_000).lease("C0", ("1", "a", 1))  # deadline 1_003_000
    h.at(1_003_400).lease("C1", ("2", "a", 2), ("3", "b", 1)).complete("C1", "2", "3")
    r = h.check()
    _only(r)
    assert r.duplicated_payloads == 1 and r.duplicates_pct == 50.0


def test_clock_slack_tolerates_a_reply_stamped_just_before_the_deadline() -> None:
    h = H().produce("P0", "a").at(1_001_000).lease("C0", ("1", "a", 1))  # deadline 1_003_000
    h.at(1_002_970).lease("C1", ("2", "a", 2))  # 30 ms early: within the 50 ms slack
    _only(h.check())
    h.at(1_010_000).lease("C2", ("3", "a", 3))  # and a third delivery after C1's lease ended
    _only(h.check())
    h2 = H().produce("P0", "a").at(1_001_000).lease("C0", ("1", "a", 1))
    h2.at(1_002_900).lease("C1", ("2", "a", 2))  # 100 ms early: an overlap
    _only(h2.check(), concurrent_leases=1)


def test_old_id_completed_after_the_item_was_leased_again() -> None:
    h = H().produce("P0", "a").at(1_001_000).lease("C0", ("1", "a", 1))
    h.at(1_003_500).lease("C1", ("2", "a", 2))  # legit: C0's lease expired
    h.complete("C0", "1")  # C0 wakes up late; the server must not count the stale id
    _only(h.check(), stale_complete_accepted=1)


def test_late_complete_that_counts_nothing_is_fine() -> None:
    h = H().produce("P0", "a").at(1_001_000).lease("C0", ("1", "a", 1))
    h.at(1_003_500).lease("C1", ("2", "a", 2))
    h.complete("C0", "1", n=0).complete("C1", "2")
    _only(h.check())


def test_attempts_must_grow_from_one_delivery_to_the_next() -> None:
    h = H().produce("P0", "a").at(1_001_000).lease("C0", ("1", "a", 2))
    h.at(1_004_000).lease("C1", ("2", "a", 2))  # a lease was acknowledged, then forgotten by a crash
    _only(h.check(), attempts_not_increasing=1)


def test_complete_before_the_deadline_must_count_every_id() -> None:
    h = H().produce("P0", "a", "b").lease("C0", ("1", "a", 1), ("2", "b", 1)).complete("C0", "1", "2", n=1)
    _only(h.check(), unexpired_lease_not_completed=1)


def test_duplicates_are_a_percentage_of_delivered_payloads() -> None:
    h = H().produce("P0", "a", "b", "c", "d")
    h.at(1_001_000).lease("C0", ("1", "a", 1), ("2", "b", 1), ("3", "c", 1), ("4", "d", 1))
    h.complete("C0", "2", "3", "4")  # "a" abandoned twice, delivered three times
    h.at(1_004_000).lease("C1", ("5", "a", 2))
    h.at(1_007_000).lease("drain", ("6", "a", 3)).complete("drain", "6")
    r = h.check()
    _only(r)
    assert r.deliveries == 6 and r.delivered_payloads == 4 and r.duplicated_payloads == 1
    assert r.duplicates_pct == pytest.approx(25.0)


def test_histories_load_and_skip_a_torn_last_line(tmp_path: Path) -> None:
    h = H().produce("P0", "a").lease("C0", ("1", "a", 1)).complete("C0", "1")
    path = tmp_path / "h.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in h.records) + '{"type": "inv')
    records = load_histories([path])
    assert records == h.records
    _only(check(records))


@pytest.mark.slow
@pytest.mark.timeout(150)
@pytest.mark.parametrize("durability", ["fsync", "flush"])
def test_quick_chaos_run_keeps_the_contract(tmp_path: Path, durability: str) -> None:
    result = run(RunConfig(durability=durability, kills=6, seed=7), tmp_path / durability, verbose=False)
    detail = f"{result.summary()}\n{result.details()}\n{result.check.examples}\n{result.worker_errors}"
    assert result.check.violations() == {}, detail
    assert not result.worker_errors, detail
    assert len(result.restart_s) == 6
    assert result.counters_match(), detail  # QSTATS produced / completed survive the kills
    assert result.check.acknowledged >= 500, "too little work to prove anything\n" + detail
    assert result.check.completed_acked >= 250, detail
    # Retries, the dead queue and redrives took part (SPEC 7), and the dead queue's counters agree too.
    c = result.check
    assert c.retried_acked > 0 and c.dead_acked > 0 and c.redriven_acked > 0, detail
    assert c.dead_exactly_once == c.dead_expected, detail
    assert (
        result.check.produce_calls.get("unknown", 0)
        + result.check.lease_calls.get("unknown", 0)
        + (result.check.complete_calls.get("unknown", 0))
        > 0
    ), "no call was ever cut by a kill\n" + detail


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_quick_chaos_run_on_three_postgres_nodes_keeps_the_contract(
    tmp_path: Path, pg_cluster: PgCluster
) -> None:
    """SPEC 9: three nodes on one database are one Querator, so the same histories must pass the same
    checker while random nodes are SIGKILLed under load (the others keep serving)."""
    dsn = pg_cluster.create_database(prefix="chaos")
    config = RunConfig(kills=6, seed=11, backend="postgres", nodes=3, postgres_dsn=dsn)
    result = run(config, tmp_path / "pg", verbose=False)
    detail = f"{result.summary()}\n{result.details()}\n{result.check.examples}\n{result.worker_errors}"
    assert result.check.violations() == {}, detail
    assert not result.worker_errors, detail
    assert not result.disturbances, detail
    assert len(result.restart_s) == 6
    assert result.counters_match(), detail  # the QSTATS counters, summed over nodes, match the histories
    assert result.check.acknowledged >= 300, "too little work to prove anything\n" + detail
    c = result.check
    assert c.completed_acked >= 150 and c.retried_acked > 0 and c.dead_acked > 0, detail
    assert c.dead_exactly_once == c.dead_expected, detail
    cut = sum(calls.get("unknown", 0) for calls in (c.produce_calls, c.lease_calls, c.complete_calls))
    assert cut > 0, "no call was ever cut by a kill\n" + detail


# Retries, the dead queue and redrives


def test_retried_item_comes_back_with_a_new_id_and_higher_attempts() -> None:
    h = H().produce("P0", "a").at(1_001_000).lease("C0", ("1", "a", 1)).retry("C0", "1", reason="soft")
    h.at(1_001_100).lease("C1", ("2", "a", 2)).complete("C1", "2").ended()  # within C0's old deadline: fine
    r = h.check()
    _only(r)
    assert r.retried_acked == 1 and r.retry_calls == {"ok": 1}


def test_retried_then_never_seen_again_is_unfinished() -> None:
    h = H().produce("P0", "a").lease("C0", ("1", "a", 1)).retry("C0", "1").ended()
    _only(h.check(), unfinished=1)


def test_dead_item_must_be_in_the_dead_queue_exactly_once_with_its_reason() -> None:
    h = H().produce("P0", "a", "b").lease("C0", ("1", "a", 1), ("2", "b", 1))
    h.retry("C0", "1", dead=True, reason="dead C0 1").complete("C0", "2")
    ok = h.records + H().ended(dead=[dead_item("a", "1", "dead C0 1")]).records
    r = check(ok)
    _only(r)
    assert r.dead_expected == r.dead_exactly_once == r.dead_final == 1 and r.dead_acked == 1
    missing = check(h.records + H().ended().records)
    _only(missing, dead_missing=1, unfinished=1)
    twice = check(h.records + H().ended(dead=[dead_item("a", "1", "dead C0 1")] * 2).records)
    _only(twice, dead_duplicated=1)
    wrong = check(h.records + H().ended(dead=[dead_item("a", "1", "another call's reason")]).records)
    _only(wrong, dead_wrong_provenance=1)
    expired = check(
        h.records + H().ended(dead=[dead_item("a", "1", "dead C0 1", **{"dead-reason": "expired"})]).records
    )
    _only(expired, dead_wrong_provenance=1)


def test_dead_item_in_the_queue_too_or_never_sent_there() -> None:
    h = H().produce("P0", "a", "b").lease("C0", ("1", "a", 1), ("2", "b", 1)).retry("C0", "1", dead=True)
    h.complete("C0", "2").ended(dead=[dead_item("a", "1")], queue=[{"payload": "a", "id": "9"}])
    _only(h.check(), in_both_queues=1)
    h2 = H().produce("P0", "b").lease("C0", ("2", "b", 1)).complete("C0", "2")
    _only(h2.ended(dead=[dead_item("b", "2")]).check(), dead_unexplained=1, completed_and_dead=1)


def test_dead_item_delivered_again_without_a_redrive() -> None:
    h = H().produce("P0", "a").lease("C0", ("1", "a", 1)).retry("C0", "1", dead=True)
    h.at(1_010_000).lease("drain", ("5", "a", 2)).complete("drain", "5").ended()
    _only(h.check(), dead_delivered=1)


def test_redriven_item_is_a_new_item_with_attempts_from_zero() -> None:
    h = H().produce("P0", "a").lease("C0", ("1", "a", 3)).retry("C0", "1", dead=True, reason="x")
    h.redrive("a").lease("C1", ("7", "a", 1)).complete("C1", "7").ended()
    r = h.check()
    _only(r)
    assert r.redriven_acked == 1 and r.redriven_delivered == 1 and r.dead_expected == 0
    # Redriven, dead again, and left in the dead queue with the second call's reason.
    h2 = H().produce("P0", "a").lease("C0", ("1", "a", 1)).retry("C0", "1", dead=True, reason="x")
    h2.redrive("a").lease("C1", ("7", "a", 1)).retry("C1", "7", dead=True, reason="y")
    r2 = h2.ended(dead=[dead_item("a", "7", "y")]).check()
    _only(r2)
    assert r2.dead_exactly_once == 1


def test_unknown_redrive_may_or_may_not_have_moved_the_item() -> None:
    def history() -> H:
        h = H().produce("P0", "a").lease("C0", ("1", "a", 1)).retry("C0", "1", dead=True)
        return h.redrive("a", outcome="unknown")

    _only(history().ended(dead=[dead_item("a", "1")]).check())  # it did not move
    r = history().lease("C1", ("7", "a", 1)).complete("C1", "7").ended().check()  # it did
    _only(r)
    assert r.redriven_maybe == 1 and r.redriven_acked == 0


def test_completed_item_listed_in_the_dead_queue_later() -> None:
    h = H().produce("P0", "a").lease("C0", ("1", "a", 1)).complete("C0", "1")
    call = h._call("A0")
    h._rec("invoke", "items", "A0", call, queue=DEAD_QUEUE)
    h._rec("ok", "items", "A0", call, items=[dead_item("a", "1")])
    _only(h.ended().check(), completed_and_dead=1)


def test_item_back_in_the_queue_carries_its_last_retry_reason_only() -> None:
    h = H().produce("P0", "a").lease("C0", ("1", "a", 1)).retry("C0", "1", reason="soft C0 1")
    h.ended(queue=[{"payload": "a", "id": "2", "reason": "soft C0 1"}])
    _only(h.lease("drain", ("2", "a", 2)).complete("drain", "2").check())
    h2 = H().produce("P0", "a").lease("C0", ("1", "a", 1)).retry("C0", "1", reason="soft C0 1")
    bad = h2.ended(queue=[{"payload": "a", "id": "2", "reason": "soft C0 1", "source-queue": QUEUE}])
    _only(bad.lease("drain", ("2", "a", 2)).complete("drain", "2").check(), wrong_reason=1)


def test_error_codes_are_recorded_although_redis_py_drops_some() -> None:
    assert error_code(redis.exceptions.TryAgainError("database unavailable; x")) == "TRYAGAIN"
    assert error_code(redis.ResponseError("NOQUEUE no such queue 'q'")) == "NOQUEUE"
    assert error_code(redis.ResponseError("wrong number of arguments for 'qlease' command")) == "ERR"
