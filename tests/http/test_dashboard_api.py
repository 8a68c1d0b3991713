"""The dashboard's JSON API over plain HTTP, against a real server process: what it shows (checked
against RESP), and every refusal of SPEC 8 (token, Origin, password, queue patterns, admin group), each
checked to have changed nothing over RESP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.http.dashboard_support import action, basic, call, server_with_users, token
from tests.support import ServerProcess, free_port


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path / "data", backend="memory", http_port=free_port()).start()
    yield proc
    proc.kill()


def fields(reply: Any) -> dict[str, Any]:
    """A map reply as a dict, whether the client speaks RESP3 (a map) or RESP2 (a flat array)."""
    return dict(zip(reply[::2], reply[1::2], strict=True)) if isinstance(reply, list) else dict(reply)


def paused(client: redis.Redis, queue: str) -> int:
    return int(fields(client.execute_command("QINFO", queue))["paused"])


def test_page_and_assets_are_served_by_querator(http_server: ServerProcess) -> None:
    status, page = call(http_server, "/")
    assert status == 200 and "<title>Querator</title>" in page
    for asset in ("/static/app.js", "/static/style.css", "/static/vendor/uplot/uPlot.iife.min.js"):
        assert call(http_server, asset)[0] == 200, asset
    # Only files of the package's static/ directory, by exact name.
    for path in ("/static/../server.py", "/static/%2e%2e/server.py", "/static/nothing.js", "/static/"):
        assert call(http_server, path)[0] == 404, path
    assert call(http_server, "/", method="POST", body=b"")[0] == 405


def test_queues_queue_and_items_match_resp(http_server: ServerProcess) -> None:
    client = redis.Redis(port=http_server.port, decode_responses=True)
    client.execute_command("QCREATE", "dead")
    client.execute_command("QCREATE", "jobs", "PARTITIONS", "2", "DEAD-QUEUE", "dead")
    client.execute_command("QCREATE", "a/b")
    ids = client.execute_command("QPRODUCE", "jobs", "ITEMS", "one", "two", "three")
    leased = client.execute_command("QLEASE", "jobs")
    client.execute_command("QRETRY", "jobs", "DEAD", "REASON", "bad input", leased[0][0])
    status, listing = call(http_server, "/api/queues")
    assert status == 200
    rows = {row["name"]: row for row in listing["queues"]}
    assert list(rows) == ["a/b", "dead", "jobs"]
    assert (rows["jobs"]["ready"], rows["jobs"]["produced"], rows["jobs"]["dead_lettered"]) == (2, 3, 1)
    assert rows["jobs"]["dead_queue"] == "dead" and rows["dead"]["ready"] == 1
    assert call(http_server, "/api/queues/a%2Fb")[0] == 200  # a name with "/" travels as %2F
    status, detail = call(http_server, "/api/queues/jobs")
    assert detail["info"]["partitions"] == 2 and detail["info"]["paused"] is False
    assert [p["partition"] for p in detail["stats"]["partitions"]] == [0, 1]
    assert sum(p["ready"] for p in detail["stats"]["partitions"]) == 2
    assert call(http_server, "/api/queues/dead")[1]["dead_queue_of"] == ["jobs"]
    # Pages as QITEMS: AFTER the last id of the page, LIMIT per page.
    first = call(http_server, "/api/queues/jobs/items?limit=1")[1]
    assert [i["id"] for i in first["items"]] == [ids[1]] and first["next"] == ids[1]
    second = call(http_server, f"/api/queues/jobs/items?limit=1&after={ids[1]}")[1]
    assert [i["id"] for i in second["items"]] == [ids[2]]
    assert call(http_server, f"/api/queues/jobs/items?limit=1&after={ids[2]}")[1] == {
        "items": [],
        "next": None,
    }
    assert call(http_server, "/api/queues/jobs/items?partition=1")[1]["items"] == []
    dead = call(http_server, "/api/queues/dead/items")[1]["items"]
    assert len(dead) == 1
    assert {k: dead[0][k] for k in ("payload", "reason", "source_queue", "source_id", "dead_reason")} == {
        "payload": "one",
        "reason": "bad input",
        "source_queue": "jobs",
        "source_id": ids[0],
        "dead_reason": "retry-dead",
    }
    assert call(http_server, "/api/queues/jobs/items?limit=0")[0] == 400
    assert call(http_server, "/api/queues/jobs/items?limit=x")[0] == 400
    assert call(http_server, "/api/queues/nothing")[0] == 404
    assert call(http_server, "/api/nothing")[0] == 404


def test_actions_need_the_token_and_the_own_origin(http_server: ServerProcess) -> None:
    client = redis.Redis(port=http_server.port, decode_responses=True)
    client.execute_command("QCREATE", "jobs")
    good = token(http_server)
    foreign = "http://evil.example"
    for sent_token, origin in (
        (None, "same"),
        ("", "same"),
        ("0" * 64, "same"),
        (good, foreign),
        (good, "null"),
    ):
        status, body = action(http_server, "jobs", "pause", token=sent_token, origin=origin)
        assert status == 403 and body["error"] == "CSRF", (sent_token, origin)
        assert paused(client, "jobs") == 0
    # The token travels in a header a form cannot set, and the body must be JSON.
    status, _ = call(
        http_server,
        "/api/queues/jobs/pause",
        method="POST",
        body=b"x=1",
        headers={"Content-Type": "application/x-www-form-urlencoded", "X-Querator-Token": good},
    )
    assert status == 415 and paused(client, "jobs") == 0
    assert action(http_server, "jobs", "pause", token=good)[0] == 200
    assert paused(client, "jobs") == 1
    # A client that sends no Origin (not a browser) acts with the token alone.
    assert action(http_server, "jobs", "resume", token=good, origin=None)[0] == 200
    assert paused(client, "jobs") == 0


def test_actions_change_what_resp_sees(http_server: ServerProcess) -> None:
    client = redis.Redis(port=http_server.port, decode_responses=True)
    client.execute_command("QCREATE", "dead")
    client.execute_command("QCREATE", "jobs", "DEAD-QUEUE", "dead")
    client.execute_command("QCREATE", "other")
    good = token(http_server)
    client.execute_command("QPRODUCE", "jobs", "ITEMS", *[f"p{i}" for i in range(4)])
    for item in client.execute_command("QLEASE", "jobs", "COUNT", "4"):
        client.execute_command("QRETRY", "jobs", "DEAD", item[0])
    assert action(http_server, "dead", "redrive", {"limit": 1}, token=good)[1] == {"moved": 1}
    assert action(http_server, "dead", "redrive", {"to": "other", "limit": 2}, token=good)[1] == {"moved": 2}
    assert client.execute_command("QLEN", "jobs") == 1 and client.execute_command("QLEN", "other") == 2
    assert action(http_server, "dead", "redrive", {"to": "nothing"}, token=good)[0] == 404
    assert action(http_server, "dead", "redrive", {"limit": 0}, token=good)[0] == 400
    assert client.execute_command("QLEN", "dead") == 1
    (dead_id,) = [fields(i)["id"] for i in client.execute_command("QITEMS", "dead")]
    assert action(http_server, "dead", "remove", {"ids": [dead_id]}, token=good)[1] == {"removed": 1}
    assert client.execute_command("QGET", "dead", dead_id) is None
    assert action(http_server, "dead", "remove", {"ids": []}, token=good)[0] == 400
    assert action(http_server, "other", "clear", {}, token=good)[1] == {"removed": 2}
    assert client.execute_command("QLEN", "other") == 0
    assert action(http_server, "nothing", "pause", token=good)[0] == 404


_USERS = """[[user]]
name = "orders-admin"
password = "oa-pass"
queues = ["orders*"]
commands = ["admin", "produce", "consume"]
[[user]]
name = "orders-reader"
password = "reader-pass"
queues = ["orders*"]
commands = ["consume"]
"""


def test_password_patterns_and_admin_group(tmp_path: Path) -> None:
    server = server_with_users(tmp_path, _USERS)
    try:
        client = redis.Redis(port=server.port, password="admin-pass", decode_responses=True)
        client.execute_command("QCREATE", "orders")
        client.execute_command("QCREATE", "payroll")
        admin, reader = basic("orders-admin", "oa-pass"), basic("orders-reader", "reader-pass")
        for path in ("/", "/static/app.js", "/api/session", "/api/queues", "/api/queues/orders"):
            assert call(server, path)[0] == 401, path
            assert call(server, path, headers={"Authorization": basic("default", "wrong")})[0] == 401
        assert call(server, "/health")[0] == 200
        assert call(server, "/", headers={"Authorization": reader})[0] == 200
        names = [
            q["name"] for q in call(server, "/api/queues", headers={"Authorization": reader})[1]["queues"]
        ]
        assert names == ["orders"]
        # A queue outside the user's patterns is answered as missing, for reads and actions alike.
        assert call(server, "/api/queues/payroll", headers={"Authorization": reader})[0] == 404
        assert call(server, "/api/queues/payroll/items", headers={"Authorization": admin})[0] == 404
        admin_token = token(server, admin)
        assert action(server, "payroll", "pause", token=admin_token, authorization=admin)[0] == 404
        assert (
            action(server, "orders", "redrive", {"to": "payroll"}, token=admin_token, authorization=admin)[0]
            == 404
        )
        # Actions need the admin group, and the token of the user who sends them.
        reader_session = call(server, "/api/session", headers={"Authorization": reader})[1]
        assert reader_session["admin"] is False
        status, body = action(server, "orders", "pause", token=reader_session["token"], authorization=reader)
        assert (status, body["error"]) == (403, "NOPERM")
        assert action(server, "orders", "pause", token=admin_token, authorization=reader)[0] == 403
        assert action(server, "orders", "pause", token=admin_token)[0] == 401
        assert paused(client, "orders") == 0 and paused(client, "payroll") == 0
        assert action(server, "orders", "pause", token=admin_token, authorization=admin)[0] == 200
        assert paused(client, "orders") == 1
    finally:
        server.kill()
