"""The reply shapes of SPEC section 3 as clients see them: maps under RESP3, flat field/value arrays under
RESP2, and the fields in the order the contract lists them."""

from __future__ import annotations

import pytest
import redis

from tests.support import INFO_FIELDS, ITEM_FIELDS, STATS_FIELDS, ServerProcess


def _pairs(reply: object) -> dict[str, object]:
    """A RESP3 map, or a RESP2 flat array, as an ordered dict with str keys."""
    if isinstance(reply, dict):
        return {k.decode(): v for k, v in reply.items()}
    assert isinstance(reply, list) and len(reply) % 2 == 0, reply
    return {reply[i].decode(): reply[i + 1] for i in range(0, len(reply), 2)}


@pytest.mark.parametrize("protocol", [2, 3])
def test_info_stats_items_and_lease_shapes(memory_server: ServerProcess, protocol: int) -> None:
    client = redis.Redis(port=memory_server.port, protocol=protocol)
    queue = f"shapes{protocol}"
    client.execute_command("QCREATE", queue, "PARTITIONS", "2", "REFERENCE", "team-a")
    client.execute_command(
        "QPRODUCE", queue, "KIND", "k", "REFERENCE", "r", "ENCODING", "json", "ITEMS", "p1"
    )
    client.execute_command("QPRODUCE", queue, "DELAY", "60000", "ITEMS", "later")

    info = client.execute_command("QINFO", queue)
    assert (isinstance(info, dict)) == (protocol == 3)
    info_map = _pairs(info)
    assert list(info_map) == INFO_FIELDS
    assert (
        info_map["partitions"] == 2 and info_map["reference"] == b"team-a" and info_map["dead-queue"] == b""
    )

    leased = client.execute_command("QLEASE", queue)
    assert len(leased) == 1 and len(leased[0]) == 7
    item_id, payload, attempts, deadline, kind, reference, encoding = leased[0]
    assert (payload, attempts, kind, reference, encoding) == (b"p1", 1, b"k", b"r", b"json")
    assert isinstance(deadline, int) and deadline > 0

    stats = _pairs(client.execute_command("QSTATS", queue))
    assert list(stats) == STATS_FIELDS
    assert (stats["ready"], stats["leased"], stats["scheduled"], stats["total"]) == (0, 1, 1, 2)
    partitions = [_pairs(p) for p in stats["partitions"]]  # type: ignore[union-attr]
    assert [list(p) for p in partitions] == [["partition", "ready", "leased", "scheduled", "total"]] * 2
    assert sum(p["total"] for p in partitions) == 2  # type: ignore[misc]

    items = [_pairs(i) for i in client.execute_command("QITEMS", queue)]
    assert all(list(i) == ITEM_FIELDS for i in items)
    assert {(i["state"], i["payload"]) for i in items} == {(b"leased", b"p1"), (b"scheduled", b"later")}
    assert next(i for i in items if i["id"] == item_id)["lease-deadline"] == deadline
