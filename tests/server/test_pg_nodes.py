"""Three `querator serve --backend postgres` nodes on one database are one Querator (SPEC 9): an item moves
through any node, a blocked consumer is woken by a produce on another node, timers (lease expiry,
schedules, expiry, max attempts) fire once for all nodes, no item is leased twice, a SIGKILLed node loses
nothing and its leases run out, admin changes reach every node within 1 s, and a node that loses its
database answers -TRYAGAIN and recovers by itself.

Real processes and real redis-py clients on 127.0.0.1; the database is the session's throwaway cluster
(tests/pg_fixtures.py), except for the database-loss test, which stops a cluster of its own.
"""

from __future__ import annotations

import functools
import glob
import math
import signal
import statistics
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from bench.pgcluster import PgCluster
from bench.servers import QueratorServer
from tests.pg_fixtures import needs_postgres
from tests.pg_nodes import (
    client,
    create_queue,
    get_item,
    lease,
    list_items,
    queue_info,
    restart_node,
    running_nodes,
    start_nodes,
    stats,
    stop_nodes,
    wait_until,
)

pytestmark = needs_postgres

# The counters of QSTATS that every node reads from the database; `waiting-consumers` is per node.
SHARED_COUNTERS = [
    "ready", "leased", "scheduled", "total", "produced", "completed", "retried", "lease-expired",
    "dead-lettered", "deduplicated",
]  # fmt: skip
# SPEC 4 / 9: an expired lease or a due expiry is acted on within 1 s; a schedule within 100 ms. The
# margins below add the time to lease what came back.
TIMER_SLACK_S = 1.0
# The test's clock and the database's are one machine's clock; what a reply is stamped with lags a bit.
CLOCK_SLACK_MS = 50


@pytest.fixture(scope="module")
def nodes(pg_dsn: str) -> Iterator[list[QueratorServer]]:
    """Three nodes with LISTEN/NOTIFY (the default), shared by the tests of this module."""
    started = start_nodes(pg_dsn, 3)
    yield started
    assert stop_nodes(started) == []


@pytest.fixture(scope="module")
def polling_nodes(pg_cluster: PgCluster) -> Iterator[list[QueratorServer]]:
    """Three nodes with `--postgres-notify false`, on a database of their own."""
    started = start_nodes(pg_cluster.create_database(prefix="polling"), 3, notify=False)
    yield started
    assert stop_nodes(started) == []


@pytest.fixture
def rs(nodes: list[QueratorServer]) -> Iterator[list[Any]]:
    """One client per node."""
    clients = [client(node.port) for node in nodes]
    yield clients
    for r in clients:
        r.close()


def agreed_stats(rs: list[Any], queue: str, **expected: int) -> dict[str, Any]:
    """Wait (at most 1 s, SPEC 9) until QSTATS on every node shows `expected` and the nodes agree."""

    def check() -> dict[str, Any] | None:
        seen = [stats(r, queue) for r in rs]
        shared = [{k: s[k] for k in SHARED_COUNTERS} for s in seen]
        if any(s != shared[0] for s in shared) or any(shared[0][k] != v for k, v in expected.items()):
            return None
        return shared[0]

    result, _ = wait_until(check, 1.0, what=f"QSTATS {queue} {expected} on every node")
    assert result is not None
    return result


def lease_everything(
    rs: list[Any], queue: str, expected: int, within: float
) -> list[tuple[str, str, int, int]]:
    """Lease from the nodes in turn (COUNT 50) until `expected` items came back or `within` s passed."""
    got: list[tuple[str, str, int, int]] = []
    deadline = time.monotonic() + within
    turn = 0
    while len(got) < expected and time.monotonic() < deadline:
        batch = lease(rs[turn % len(rs)], queue, 50)
        turn += 1
        got += batch
        if not batch:
            time.sleep(0.02)
    return got


def test_item_produced_on_one_node_is_leased_on_another_and_completed_on_a_third(rs: list[Any]) -> None:
    a, b, c = rs
    create_queue(rs, "through")
    [item_id] = [i.decode() for i in a.execute_command("QPRODUCE", "through", "ITEMS", "hello")]
    # QGET is current at once on every node (SPEC 9).
    assert all((get_item(r, "through", item_id) or {}).get("state") == "ready" for r in rs)
    [(leased_id, payload, attempts, _)] = lease(b, "through")
    assert (leased_id, payload, attempts) == (item_id, "hello", 1)
    assert all((get_item(r, "through", item_id) or {}).get("state") == "leased" for r in rs)
    assert lease(a, "through") == [] and lease(c, "through") == []  # nobody else gets it
    assert c.execute_command("QCOMPLETE", "through", item_id) == 1
    assert [get_item(r, "through", item_id) for r in rs] == [None, None, None]
    assert [lease(r, "through") for r in rs] == [[], [], []]
    agreed_stats(rs, "through", ready=0, leased=0, total=0, produced=1, completed=1)
    assert c.execute_command("QCOMPLETE", "through", item_id) == 0  # once only, wherever asked


def wait_for_one(consumer: Any, queue: str, got: list[Any], done_at: list[float]) -> None:
    got.extend(lease(consumer, queue, 1, block_ms=5000))
    done_at.append(time.perf_counter())


def handoff_latencies(
    producer: Any, consumer_port: int, consumer_stats: Any, queue: str, rounds: int
) -> list[float]:
    """Seconds from a QPRODUCE reply on one node to the reply of a QLEASE BLOCK already waiting on another,
    `rounds` times."""
    latencies: list[float] = []
    consumer = client(consumer_port)
    try:
        for n in range(rounds):
            got: list[Any] = []
            done_at: list[float] = []
            waiter = threading.Thread(target=wait_for_one, args=(consumer, queue, got, done_at))
            waiter.start()
            # The consumer is in the line on its node before the produce (QSTATS counts it there, SPEC 9).
            wait_until(lambda: stats(consumer_stats, queue)["waiting-consumers"] == 1, 5.0, what="waiter")
            producer.execute_command("QPRODUCE", queue, "ITEMS", f"wake-{n}")
            produced_at = time.perf_counter()
            waiter.join(10)
            assert not waiter.is_alive()
            assert [it[1] for it in got] == [f"wake-{n}"], "the blocked consumer missed the item"
            latencies.append(done_at[0] - produced_at)
            consumer.execute_command("QCOMPLETE", queue, got[0][0])
    finally:
        consumer.close()
    return latencies


def p99(values: list[float]) -> float:
    """The nearest-rank 99th percentile: below 100 values the largest, from 100 on one outlier is allowed."""
    return sorted(values)[math.ceil(len(values) * 0.99) - 1]


def test_blocked_consumer_on_one_node_is_woken_by_a_produce_on_another(
    nodes: list[QueratorServer], rs: list[Any]
) -> None:
    create_queue(rs, "wake")
    latencies = handoff_latencies(rs[0], nodes[1].port, rs[1], "wake", rounds=100)
    print(f"\nNOTIFY hand-off across nodes: median {statistics.median(latencies) * 1000:.1f} ms, "
          f"p99 {p99(latencies) * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms")  # fmt: skip
    # SPEC 9: 100 ms p99. Measured on a shared 2-CPU machine with the three nodes and PostgreSQL on it,
    # five runs of 30 rounds: median 1.7-3.7 ms, max 20-42 ms; so the spec's bound itself is held, over
    # 100 rounds (one outlier allowed).
    assert p99(latencies) < 0.1, latencies
    assert max(latencies) < 1.0, latencies


def test_blocked_consumer_is_woken_across_nodes_by_polling_too(polling_nodes: list[QueratorServer]) -> None:
    rs = [client(node.port) for node in polling_nodes]
    try:
        create_queue(rs, "wake-polled")
        latencies = handoff_latencies(rs[0], polling_nodes[2].port, rs[2], "wake-polled", rounds=20)
    finally:
        for r in rs:
            r.close()
    print(f"\npolling hand-off across nodes: median {statistics.median(latencies) * 1000:.1f} ms, "
          f"p99 {p99(latencies) * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms")  # fmt: skip
    # A poll every postgres-poll-ms (100 by default) finds the item: within one period plus a lease step.
    # Measured as above, eight runs of 20 rounds: median 65-89 ms, max 92-198 ms. Polling is not held to
    # the spec's 100 ms (a poll period is 100 ms); the bound only says the wake-up is a poll, not a timeout.
    assert p99(latencies) < 0.5, latencies


def produce_spread(rs: list[Any], queue: str, payloads: list[str], *options: Any) -> list[str]:
    """QPRODUCE the payloads in calls of 20, each call through the next node; the ids in order."""
    ids: list[str] = []
    for n, start in enumerate(range(0, len(payloads), 20)):
        chunk = payloads[start : start + 20]
        reply = rs[n % len(rs)].execute_command("QPRODUCE", queue, *options, "ITEMS", *chunk)
        ids += [i.decode() for i in reply]
    return ids


def test_lease_expiry_happens_once_across_nodes(rs: list[Any]) -> None:
    create_queue(rs, "expiring", "PARTITIONS", 3, "LEASE-TIMEOUT", 1000)
    payloads = [f"e{n}" for n in range(200)]
    produce_spread(rs, "expiring", payloads)
    first = lease_everything(rs, "expiring", 200, within=10)
    assert sorted(p for _, p, _, _ in first) == sorted(payloads)
    assert {a for _, _, a, _ in first} == {1}
    # Nobody completes: every lease ends once, and every item comes back once, with a new id (SPEC 1).
    time.sleep(1.0)
    second = lease_everything(rs, "expiring", 200, within=1.0 + TIMER_SLACK_S + 3)
    assert Counter(p for _, p, _, _ in second) == Counter(payloads), "each item back exactly once"
    assert {a for _, _, a, _ in second} == {2}
    assert not {i for i, _, _, _ in first} & {i for i, _, _, _ in second}
    completed = 0
    for n, start in enumerate(range(0, 200, 50)):
        ids = [i for i, _, _, _ in second[start : start + 50]]
        completed += rs[n % 3].execute_command("QCOMPLETE", "expiring", *ids)
    assert completed == 200
    agreed_stats(rs, "expiring", total=0, produced=200, completed=200, **{"lease-expired": 200})
    assert [lease(r, "expiring", 10) for r in rs] == [[], [], []]


def test_scheduled_items_become_ready_once_across_nodes(rs: list[Any]) -> None:
    create_queue(rs, "later", "PARTITIONS", 3)
    payloads = [f"s{n}" for n in range(200)]
    # Long enough to look at every node before they are due, on a busy machine too.
    produce_spread(rs, "later", payloads, "DELAY", 1500)
    agreed_stats(rs, "later", scheduled=200, ready=0, produced=200)
    assert [lease(r, "later", 10) for r in rs] == [[], [], []]
    got = lease_everything(rs, "later", 200, within=1.5 + TIMER_SLACK_S + 3)
    assert Counter(p for _, p, _, _ in got) == Counter(payloads), "each scheduled item delivered once"
    time.sleep(0.5)  # no node moves a schedule twice: nothing more arrives
    assert [lease(r, "later", 10) for r in rs] == [[], [], []]
    agreed_stats(rs, "later", scheduled=0, ready=0, leased=200, total=200, produced=200)


def dead_payloads(rs: list[Any], dead_queue: str, reason: str) -> Counter[str]:
    items = list_items(rs[1], dead_queue)
    assert {it["dead-reason"] for it in items} <= {reason}
    return Counter(it["payload"] for it in items)


@pytest.mark.parametrize("reason", ["expired", "max-attempts"])
def test_dead_lettering_happens_once_across_nodes(rs: list[Any], reason: str) -> None:
    queue, dead = f"dl-{reason}", f"dl-{reason}-dead"
    create_queue(rs, dead)
    # Created through the node that made the dead queue: the others may learn of it up to 1 s later.
    limit = ["EXPIRE-TIMEOUT", 1000] if reason == "expired" else ["MAX-ATTEMPTS", 1]
    create_queue(rs, queue, "PARTITIONS", 3, "LEASE-TIMEOUT", 1000, *limit, "DEAD-QUEUE", dead)
    payloads = [f"{reason}-{n}" for n in range(200)]
    produce_spread(rs, queue, payloads)
    if reason == "max-attempts":  # leased through every node and never completed: each lease ends once
        assert len(lease_everything(rs, queue, 200, within=10)) == 200
    wait_until(lambda: stats(rs[2], queue)["total"] == 0, 1.0 + TIMER_SLACK_S + 3, what="all dead-lettered")
    assert dead_payloads(rs, dead, reason) == Counter(payloads)
    agreed_stats(rs, queue, total=0, produced=200, **{"dead-lettered": 200})
    agreed_stats(rs, dead, ready=200, total=200, produced=200)


def test_consumers_on_three_nodes_never_hold_one_item_together(
    nodes: list[QueratorServer], rs: list[Any]
) -> None:
    create_queue(rs, "contended", "PARTITIONS", 2, "LEASE-TIMEOUT", 60000)
    payloads = [f"c{n}" for n in range(1200)]
    produce_spread(rs, "contended", payloads)
    taken: list[tuple[str, str, int, int]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def consume(port: int, count: int) -> None:
        r = client(port)
        try:
            for _ in range(2000):
                batch = lease(r, "contended", count)
                # Empty can mean that the rest is being leased by others right now (rows another node
                # has locked are skipped): stop once nothing is ready any more.
                if not batch and r.execute_command("QLEN", "contended") == 0:
                    return
                with lock:
                    taken.extend(batch)
        except BaseException as exc:  # the assertion below shows it
            errors.append(exc)
        finally:
            r.close()

    # Four consumers a node, leasing 1 to 7 at a time, all at once; one lease period covers the whole run.
    workers = [
        threading.Thread(target=consume, args=(node.port, 1 + 2 * k)) for node in nodes for k in range(4)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert not errors, errors
    assert not any(w.is_alive() for w in workers)
    assert Counter(i for i, _, _, _ in taken).most_common(1)[0][1] == 1, "one id handed out twice"
    assert Counter(p for _, p, _, _ in taken) == Counter(payloads), "every item handed out exactly once"
    agreed_stats(rs, "contended", ready=0, leased=1200)
    assert (
        sum(
            rs[n % 3].execute_command("QCOMPLETE", "contended", *[i for i, *_ in taken[n::3]])
            for n in range(3)
        )
        == 1200
    )


def test_killed_node_loses_nothing_and_its_leases_run_out(nodes: list[QueratorServer], rs: list[Any]) -> None:
    create_queue(rs, "survivor", "LEASE-TIMEOUT", 2000)
    victim = rs[2]
    produced = [i.decode() for i in victim.execute_command("QPRODUCE", "survivor", "ITEMS", *range(50))]
    held = lease(victim, "survivor", 10)
    assert len(held) == 10
    victim.close()
    assert nodes[2].proc is not None
    nodes[2].proc.kill()  # while it holds 10 leases; it stays down until they have run out
    nodes[2].proc.wait(10)
    # What the dead node acknowledged is there; the leases it handed out still run (SPEC 9).
    agreed_stats(rs[:2], "survivor", total=50, leased=10, produced=50)
    first = lease_everything(rs[:2], "survivor", 40, within=5)
    assert sorted(i for i, *_ in first) == sorted(set(produced) - {i for i, *_ in held})
    assert rs[0].execute_command("QCOMPLETE", "survivor", *[i for i, *_ in first]) == 40  # before they expire
    # Then the leases run out without the node that granted them (lease expiry stops for no node that
    # dies), and those items are ready again.
    wait_until(
        lambda: stats(rs[1], "survivor")["ready"] == 10, 2.0 + TIMER_SLACK_S + 3, what="the leases ended"
    )
    agreed_stats(rs[:2], "survivor", ready=10, leased=0, completed=40, **{"lease-expired": 10})
    took = restart_node(nodes[2], signal.SIGKILL)  # already dead: just started again
    restarted = client(nodes[2].port)
    try:
        back = lease(restarted, "survivor", 20)  # the node serves again, and each item comes back once
        assert Counter(p for _, p, _, _ in back) == Counter(p for _, p, _, _ in held)
        assert {a for _, _, a, _ in back} == {2}
        assert restarted.execute_command("QCOMPLETE", "survivor", *[i for i, *_ in back]) == 10
    finally:
        restarted.close()
    print(f"\nnode restarted after SIGKILL, serving in {took:.2f} s")


# libfaketime (Debian's faketime package), preloaded through `env`, which execs: the server stays the
# process we started and stop. (The `faketime` wrapper forks instead, and a SIGTERM to it orphans the
# server.) An hour ahead on the wall clock, what deadlines are made of; the monotonic clock left alone.
FAKETIME_LIBRARY = next(iter(sorted(glob.glob("/usr/lib/*/faketime/libfaketimeMT.so.1"))), "")
SKEWED_CLOCK = ("env", f"LD_PRELOAD={FAKETIME_LIBRARY}", "FAKETIME=+1h", "FAKETIME_DONT_FAKE_MONOTONIC=1")


@pytest.mark.skipif(not FAKETIME_LIBRARY, reason="libfaketime not found (Debian: apt-get install faketime)")
def test_a_node_with_a_wrong_clock_judges_no_deadline(pg_dsn: str, rs: list[Any]) -> None:
    """SPEC 9: deadlines are judged by the database's clock, so a node whose clock is an hour ahead neither
    ends another node's lease early nor grants leases or schedules by its own time."""
    skewed = QueratorServer(backend="postgres", postgres_dsn=pg_dsn, prefix=SKEWED_CLOCK).start(timeout=60)
    try:
        r = client(skewed.port)
        assert int(r.execute_command("TIME")[0]) > time.time() + 3000, "the node's clock is not skewed"
        create_queue([*rs, r], "clock", "LEASE-TIMEOUT", 5000)
        rs[0].execute_command("QPRODUCE", "clock", "ITEMS", "held")
        [(held_id, _, _, deadline)] = lease(rs[0], "clock")
        # Lease expiry runs about once a second on every node: by its own clock the skewed node would end
        # the lease at once. It does not, and it hands out nothing.
        time.sleep(1.5)
        assert (get_item(r, "clock", held_id) or {}).get("state") == "leased"
        assert lease(r, "clock") == []
        # Its own leases and schedules are timed by the database's clock too.
        r.execute_command("QPRODUCE", "clock", "ITEMS", "mine")
        [(_, payload, _, own_deadline)] = lease(r, "clock")
        assert payload == "mine" and abs(own_deadline - (time.time() * 1000 + 5000)) < 2000, own_deadline
        r.execute_command("QPRODUCE", "clock", "DELAY", 500, "ITEMS", "later")
        due = lease_everything(rs, "clock", 1, within=0.5 + TIMER_SLACK_S + 2)
        assert [p for _, p, _, _ in due] == ["later"]
        # The first lease ends at its deadline (within the second SPEC 4 allows), not before.
        assert time.time() * 1000 < deadline
        wait_s = (deadline - time.time() * 1000) / 1000 + TIMER_SLACK_S + 2
        back = lease_everything([r], "clock", 1, within=wait_s)
        assert [(p, a) for _, p, a, _ in back] == [("held", 2)]
        assert time.time() * 1000 >= deadline - CLOCK_SLACK_MS
        r.close()
    finally:
        skewed.stop()
    assert skewed.problems == []


def option(rs: list[Any], queue: str, name: str) -> list[Any]:
    """One QINFO field as each node shows it (None where a node does not know the queue)."""
    return [(queue_info(r, queue) or {}).get(name) for r in rs]


def test_admin_changes_on_one_node_hold_on_every_node_within_a_second(
    nodes: list[QueratorServer], rs: list[Any]
) -> None:
    a, b, c = rs
    reach = {"QCREATE": create_queue(rs, "admin")}  # the others know it, with the same options
    c.execute_command("QPRODUCE", "admin", "ITEMS", "one")

    # QUPDATE LEASE-TIMEOUT: shown by QINFO, and used by the next lease on another node.
    b.execute_command("QUPDATE", "admin", "LEASE-TIMEOUT", 123456)
    _, reach["QUPDATE"] = wait_until(
        lambda: option(rs, "admin", "lease-timeout") == [123456] * 3, 1.0, what="QUPDATE"
    )
    [(item_id, _, _, deadline)] = lease(c, "admin")
    assert abs(deadline - (time.time() * 1000 + 123456)) < 5000, "the lease used the new lease timeout"
    assert c.execute_command("QRETRY", "admin", item_id) == 1

    # QPAUSE on one node: no node hands anything out; a consumer blocked on another node keeps waiting.
    c.execute_command("QPAUSE", "admin")
    _, reach["QPAUSE"] = wait_until(lambda: option(rs, "admin", "paused") == [1] * 3, 1.0, what="QPAUSE")
    assert [lease(r, "admin") for r in rs] == [[], [], []]
    assert stats(a, "admin")["ready"] == 1
    got: list[Any] = []
    waiting = client(nodes[1].port)
    blocked = threading.Thread(target=lambda: got.extend(lease(waiting, "admin", 1, 10000)))
    blocked.start()
    wait_until(lambda: stats(b, "admin")["waiting-consumers"] == 1, 5.0, what="consumer waiting on b")
    time.sleep(0.3)
    assert got == [] and blocked.is_alive(), "a paused queue handed an item out"

    # QRESUME on a third node: the waiting consumer gets the item within a second.
    a.execute_command("QRESUME", "admin")
    resumed_at = time.monotonic()
    blocked.join(5)
    assert [p for _, p, _, _ in got] == ["one"]
    reach["QRESUME"] = time.monotonic() - resumed_at
    assert reach["QRESUME"] < 1.0
    waiting.close()
    wait_until(lambda: option(rs, "admin", "paused") == [0] * 3, 1.0, what="QRESUME")

    # QDELETE: gone everywhere.
    assert b.execute_command("QCOMPLETE", "admin", got[0][0]) == 1
    a.execute_command("QDELETE", "admin")
    _, reach["QDELETE"] = wait_until(lambda: option(rs, "admin", "name") == [None] * 3, 1.0, what="QDELETE")
    with pytest.raises(redis.ResponseError, match="no such queue"):
        c.execute_command("QPRODUCE", "admin", "ITEMS", "late")
    print("\nadmin changes on every node after (ms):", {k: round(v * 1000) for k, v in reach.items()})


def outcome(r: Any, *args: Any) -> tuple[str, float]:
    """Run one command; ('ok' | the error reply | the client's exception, seconds it took)."""
    started = time.monotonic()
    try:
        r.execute_command(*args)
    except redis.exceptions.TryAgainError as exc:  # redis-py 8 gives -TRYAGAIN a class and drops the code
        return f"TRYAGAIN {exc}", time.monotonic() - started
    except redis.ResponseError as exc:  # the code of -ERR is dropped too; unknown codes are kept
        return str(exc), time.monotonic() - started
    except redis.RedisError as exc:
        return f"{type(exc).__name__}: {exc}", time.monotonic() - started
    return "ok", time.monotonic() - started


def serves(r: Any) -> bool:
    return outcome(r, "QPRODUCE", "probe", "ITEMS", "p")[0] == "ok"


@pytest.mark.timeout(240)
@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_node_that_loses_its_database_answers_tryagain_and_recovers_by_itself(mode: str) -> None:
    with PgCluster() as pg:
        dsn = pg.create_database("lost")
        with running_nodes(dsn, 2) as nodes:
            rs = [client(node.port) for node in nodes]
            create_queue(rs, "outage")
            create_queue(rs, "probe")
            before = produce_spread(rs, "outage", [f"b{n}" for n in range(40)])

            pg.stop(mode)  # `fast` ends the sessions cleanly; `immediate` is a database crash
            # A storage failure is -TRYAGAIN with nothing applied (SPEC 3, 9), soon: never a hang.
            commands = [("QPRODUCE", "outage", "ITEMS", "lost?"), ("QLEASE", "outage"), ("QSTATS", "outage")]
            replies = [(n, args[0], *outcome(r, *args)) for n, r in enumerate(rs) for args in commands]
            # Checked at the end, so that a wrong reply does not hide how the recovery went.
            wrong = [
                (n, name, reply, f"{took:.2f} s")
                for n, name, reply, took in replies
                if not reply.startswith("TRYAGAIN ") or took >= 5.0
            ]
            assert all(node.alive() for node in nodes)

            pg.launch(same_port=True)
            # Each node serves again by itself: no restart, no command from us but the probes.
            for r in rs:
                # A produce, not a read: a read could be answered from what the node remembers.
                wait_until(functools.partial(serves, r), 30.0, step=0.2, what="serving again")
            after = produce_spread(rs, "outage", [f"a{n}" for n in range(40)])
            got = lease_everything(rs, "outage", 80, within=10)
            # Every acknowledged produce is there; the ones answered -TRYAGAIN are not (nothing applied).
            assert sorted(i for i, *_ in got) == sorted(before + after)
            assert "lost?" not in {p for _, p, _, _ in got}
            for r in rs:
                r.close()
            assert all(node.alive() for node in nodes)
            assert wrong == [], "replies while the database was down"
