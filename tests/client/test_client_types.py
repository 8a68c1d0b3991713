"""Reply parsing without a server: RESP2 flat arrays and RESP3 maps give equal values, SPEC section 7's
fields are read when present and default when absent (so the client reads older servers too)."""

from __future__ import annotations

from typing import Any

from querator.client.types import QueueInfo, QueueStats, StoredItem, build, fields, item

INFO = {
    b"name": b"q",
    b"partitions": 2,
    b"lease-timeout": 5000,
    b"expire-timeout": 0,
    b"max-attempts": 3,
    b"dead-queue": b"dead",
    b"reference": b"",
    b"created-at": 10,
    b"updated-at": 11,
}
ITEM = {
    b"id": b"1-0-1",
    b"state": b"ready",
    b"attempts": 0,
    b"created-at": 1,
    b"enqueue-at": 2,
    b"lease-deadline": 0,
    b"expire-deadline": 0,
    b"kind": b"k",
    b"reference": b"",
    b"encoding": b"",
    b"payload": b"\x00\xff",
}


def flat(mapping: dict[bytes, Any]) -> list[Any]:
    return [v for pair in mapping.items() for v in pair]


def test_a_map_and_a_flat_array_parse_the_same() -> None:
    assert build(QueueInfo, fields(INFO)) == build(QueueInfo, fields(flat(INFO)))
    assert build(StoredItem, fields(ITEM)) == build(StoredItem, fields(flat(ITEM)))


def test_section_7_fields_default_when_absent() -> None:
    info = build(QueueInfo, fields(INFO))
    assert (info.paused, info.dedup_window) == (False, None)
    stored = build(StoredItem, fields(ITEM))
    assert (stored.reason, stored.source_queue, stored.source_id, stored.dead_reason) == ("", "", "", "")


def test_section_7_fields_are_read_when_present() -> None:
    info = build(QueueInfo, fields({**INFO, b"paused": 1, b"dedup-window": 300_000}))
    assert (info.paused, info.dedup_window) == (True, 300_000)
    extra = {
        b"reason": b"boom",
        b"source-queue": b"jobs",
        b"source-id": b"2-0-7",
        b"dead-reason": b"max-attempts",
    }
    stored = build(StoredItem, fields(flat({**ITEM, **extra})))
    assert (stored.reason, stored.source_queue, stored.source_id, stored.dead_reason) == (
        "boom",
        "jobs",
        "2-0-7",
        "max-attempts",
    )
    assert stored.payload == b"\x00\xff"


def test_unknown_fields_of_a_newer_server_are_ignored() -> None:
    assert build(QueueInfo, fields({**INFO, b"future-field": 1})) == build(QueueInfo, fields(INFO))


def test_stats_with_partitions_under_both_protocols() -> None:
    partition = {b"partition": 0, b"ready": 1, b"leased": 0, b"scheduled": 0, b"total": 1}
    counters = {
        b"ready": 1,
        b"leased": 0,
        b"scheduled": 0,
        b"total": 1,
        b"produced": 1,
        b"completed": 0,
        b"retried": 0,
        b"lease-expired": 0,
        b"dead-lettered": 0,
        b"oldest-ready-age": 5,
        b"waiting-consumers": 0,
    }
    resp3 = build(QueueStats, fields({**counters, b"partitions": [partition], b"deduplicated": 4}))
    resp2 = build(QueueStats, fields([*flat(counters), b"partitions", [flat(partition)], b"deduplicated", 4]))
    assert resp3 == resp2
    assert (resp3.partitions[0].ready, resp3.deduplicated) == (1, 4)


def test_lease_entry_decodes_labels_and_keeps_the_payload_bytes() -> None:
    parsed = item([b"1-0-1", b"\xffraw", 2, 99, b"k", b"r", b"e"])
    assert (parsed.id, parsed.payload, parsed.attempts, parsed.lease_deadline) == ("1-0-1", b"\xffraw", 2, 99)
    assert (parsed.kind, parsed.reference, parsed.encoding) == ("k", "r", "e")
