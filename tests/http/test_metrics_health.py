"""/metrics and /health of a real server process on its own free HTTP port: the exposition is parsed with
prometheus_client's own parsers and checked for exact values after a known sequence of commands."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
import redis
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families

from querator.clients import ServerState
from querator.config import Config
from querator.http import HttpServer
from querator.service import Service
from tests.support import ServerProcess, free_port, run


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path / "data", backend="memory", http_port=free_port()).start()
    yield proc
    proc.kill()


def get(server: ServerProcess, path: str, accept: str = "") -> tuple[int, str, str]:
    request = urllib.request.Request(f"http://127.0.0.1:{server.http_port}{path}")
    if accept:
        request.add_header("Accept", accept)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_after_a_known_sequence_of_commands(http_server: ServerProcess) -> None:
    client = redis.Redis(port=http_server.port)
    client.execute_command("QCREATE", "jobs")
    client.execute_command("QCREATE", "idle")
    client.execute_command("QPRODUCE", "jobs", "ITEMS", "a", "b", "c", "d")
    leased = client.execute_command("QLEASE", "jobs", "COUNT", "3")
    ids = [entry[0] for entry in leased]
    client.execute_command("QCOMPLETE", "jobs", ids[0])
    client.execute_command("QRETRY", "jobs", ids[1])
    client.execute_command("QRETRY", "jobs", "DEAD", ids[2])
    with pytest.raises(redis.ResponseError):
        client.execute_command("QCREATE", "jobs")
    client.execute_command("QCREATE", "once")
    first = client.execute_command("QPRODUCE", "once", "DEDUP", "k", "ITEMS", "x")
    assert client.execute_command("QPRODUCE", "once", "DEDUP", "k", "ITEMS", "x") == first
    status, content_type, body = get(http_server, "/metrics")
    assert status == 200
    assert content_type.startswith("text/plain; version=0.0.4")
    found = samples(body)

    def value(name: str, **labels: str) -> float:
        return found[(name, tuple(sorted(labels.items())))]

    assert value("querator_queue_items", queue="jobs", state="ready") == 1 + 1  # d, and the retried one
    assert value("querator_queue_items", queue="jobs", state="leased") == 0
    assert value("querator_queue_items", queue="jobs", state="scheduled") == 0
    assert value("querator_queue_items", queue="idle", state="ready") == 0
    assert value("querator_items_produced_total", queue="jobs") == 4
    assert value("querator_items_produced_total", queue="once") == 1
    assert value("querator_items_deduplicated_total", queue="once") == 1
    assert value("querator_items_deduplicated_total", queue="jobs") == 0
    assert value("querator_items_leased_total", queue="jobs") == 3
    assert value("querator_items_completed_total", queue="jobs") == 1
    assert value("querator_items_retried_total", queue="jobs") == 2
    assert value("querator_items_lease_expired_total", queue="jobs") == 0
    assert value("querator_items_dead_lettered_total", queue="jobs", reason="retry-dead") == 1
    assert value("querator_items_dead_lettered_total", queue="jobs", reason="max-attempts") == 0
    assert value("querator_items_dead_lettered_total", queue="jobs", reason="expired") == 0
    assert ("querator_items_dead_lettered_total", (("queue", "jobs"), ("reason", "unknown"))) not in found
    assert value("querator_lease_waiters", queue="jobs") == 0
    assert value("querator_queue_oldest_item_age_seconds", queue="idle") == 0
    assert value("querator_connected_clients") == 1
    assert value("querator_command_duration_seconds_count", command="qproduce") == 3
    assert value("querator_command_duration_seconds_count", command="qretry") == 2
    assert value("querator_command_duration_seconds_count", command="qcreate") == 4
    assert value("querator_command_duration_seconds_bucket", command="qcreate", le="+Inf") == 4
    assert value("querator_command_duration_seconds_sum", command="qcreate") > 0
    # One partition step per call that wrote (the client waits for each reply): two produces, the lease,
    # the complete, two retries and the deduplicated call's counter. Queue creation is not a step.
    assert value("querator_storage_commit_duration_seconds_count") == 7
    assert value("querator_storage_commit_duration_seconds_bucket", le="+Inf") == 7
    assert value("process_resident_memory_bytes") > 0
    assert any(name == "process_cpu_seconds_total" for name, _ in found)


def test_metrics_in_openmetrics_when_asked(http_server: ServerProcess) -> None:
    redis.Redis(port=http_server.port).execute_command("QCREATE", "jobs")
    status, content_type, body = get(http_server, "/metrics", accept="application/openmetrics-text")
    assert status == 200
    assert content_type.startswith("application/openmetrics-text")
    assert body.endswith("# EOF\n")
    families = {family.name: family for family in parse_openmetrics(body)}
    assert families["querator_items_produced"].type == "counter"
    assert families["querator_queue_items"].type == "gauge"


def test_health_is_ok_while_serving(http_server: ServerProcess) -> None:
    status, content_type, body = get(http_server, "/health")
    assert (status, content_type) == (200, "application/json; charset=utf-8")
    assert json.loads(body) == {"status": "ok", "queues": 0}


def test_unknown_path_and_method(http_server: ServerProcess) -> None:
    assert get(http_server, "/nothing")[0] == 404
    request = urllib.request.Request(f"http://127.0.0.1:{http_server.http_port}/health", method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=5)
    assert refused.value.code == 405


def test_a_taken_http_port_fails_the_start_with_one_line(tmp_path: Path, http_server: ServerProcess) -> None:
    second = ServerProcess(tmp_path / "other", backend="memory", http_port=http_server.http_port)
    with pytest.raises(RuntimeError) as failed:
        second.start()
    assert second.proc is not None and second.proc.returncode == 1
    lines = [line for line in second.read_log().splitlines() if line]
    assert len(lines) == 1, lines
    assert lines[0] == (
        f"querator: cannot listen; 127.0.0.1:{http_server.http_port} (--http-port): address already in use; "
        "choose a free port, or stop what holds it"
    )
    assert "Traceback" not in str(failed.value)


def test_health_says_why_it_cannot_serve() -> None:
    """In process: the server's phase as `Server` sets it while starting and while shutting down."""

    async def scenario() -> None:
        config = Config(backend="memory")
        async with Service(config) as service:
            state = ServerState(config=config, service=service)
            http = HttpServer(state)
            await http.start("127.0.0.1", 0)
            try:
                async with aiohttp.ClientSession() as session:
                    for phase, reason in (("starting", "starting"), ("stopping", "shutting down")):
                        state.phase = phase
                        async with session.get(f"http://127.0.0.1:{http.port}/health") as response:
                            assert response.status == 503
                            assert await response.json() == {"status": "unavailable", "reason": reason}
                    state.phase = "serving"
                    async with session.get(f"http://127.0.0.1:{http.port}/health") as response:
                        assert response.status == 200
            finally:
                await http.close()

    run(scenario())


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def get_as(server: ServerProcess, path: str, authorization: str = "") -> tuple[int, dict[str, str], str]:
    request = urllib.request.Request(f"http://127.0.0.1:{server.http_port}{path}")
    if authorization:
        request.add_header("Authorization", authorization)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()


_USERS = """requirepass = "admin-pass"
[[user]]
name = "orders-reader"
password = "reader-pass"
queues = ["orders*"]
commands = ["consume"]
"""


def test_metrics_need_the_resp_password_and_show_a_user_its_queues(tmp_path: Path) -> None:
    config = tmp_path / "querator.toml"
    config.write_text(_USERS)
    server = ServerProcess(
        tmp_path / "data", "--config", str(config), backend="memory", http_port=free_port()
    ).start()
    try:
        client = redis.Redis(port=server.port, password="admin-pass")
        client.execute_command("QCREATE", "orders")
        client.execute_command("QCREATE", "payroll")
        status, headers, _ = get_as(server, "/metrics")
        assert status == 401 and headers["WWW-Authenticate"].startswith('Basic realm="querator"')
        assert get_as(server, "/metrics", basic("default", "wrong-pass"))[0] == 401
        assert get_as(server, "/metrics", "Basic !!!")[0] == 401
        assert get_as(server, "/health")[0] == 200  # never behind a password
        status, _, body = get_as(server, "/metrics", basic("default", "admin-pass"))
        assert status == 200 and 'queue="payroll"' in body and 'queue="orders"' in body
        status, _, body = get_as(server, "/metrics", basic("orders-reader", "reader-pass"))
        assert status == 200 and 'queue="orders"' in body and 'queue="payroll"' not in body
        server.stop()
        log = server.read_log()
        assert 'msg="failed login" user=default addr=127.0.0.1 via=http' in log
        assert "wrong-pass" not in log
    finally:
        server.kill()


def test_metrics_public_opens_metrics_only(tmp_path: Path) -> None:
    config = tmp_path / "querator.toml"
    config.write_text('requirepass = "admin-pass"\nhttp-metrics-public = true\n')
    server = ServerProcess(
        tmp_path / "data", "--config", str(config), backend="memory", http_port=free_port()
    ).start()
    try:
        assert get_as(server, "/metrics")[0] == 200
    finally:
        server.kill()
