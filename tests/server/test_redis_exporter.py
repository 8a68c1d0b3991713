"""The real redis_exporter (Debian's prometheus-redis-exporter) scrapes Querator: `redis_up 1`, no scrape
error in its log, and Querator's command statistics as `redis_commands_total{cmd=...}`."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from tests.support import ServerProcess, free_port

EXPORTER = shutil.which("prometheus-redis-exporter") or shutil.which("redis_exporter")
if EXPORTER is None and os.environ.get("CI") != "true":
    pytest.skip("redis_exporter is not installed (.ci/run installs it)", allow_module_level=True)


def scrape(port: int, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
                return str(response.read().decode())
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_redis_exporter_scrapes_querator_without_errors(tmp_path: Path) -> None:
    assert EXPORTER is not None, "redis_exporter missing: .ci/run installs prometheus-redis-exporter"
    server = ServerProcess(tmp_path / "data", backend="memory").start()
    exporter: subprocess.Popen[bytes] | None = None
    try:
        client = redis.Redis(port=server.port)
        client.execute_command("QCREATE", "jobs")
        client.execute_command("QPRODUCE", "jobs", "ITEMS", "a", "b")
        client.execute_command("QLEASE", "jobs")
        web_port = free_port()
        log_path = tmp_path / "exporter.log"
        with open(log_path, "wb") as log:
            exporter = subprocess.Popen(
                [
                    EXPORTER,
                    "-redis.addr",
                    f"redis://127.0.0.1:{server.port}",
                    "-web.listen-address",
                    f"127.0.0.1:{web_port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        body = scrape(web_port)
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body)
            for s in family.samples
        }
        assert samples[("redis_up", ())] == 1
        assert samples[("redis_exporter_last_scrape_error", (("err", ""),))] == 0
        assert samples[("redis_commands_total", (("cmd", "qproduce"),))] == 1
        assert samples[("redis_commands_total", (("cmd", "qlease"),))] == 1
        assert samples[("redis_db_keys", (("db", "db0"),))] == 1
        assert samples[("redis_connected_clients", ())] >= 1
        assert samples[("redis_memory_used_bytes", ())] > 0
        exporter.terminate()
        exporter.wait(10)
        log_text = log_path.read_text()
        assert "level=error" not in log_text, log_text
        assert "err:" not in log_text, log_text
    finally:
        if exporter is not None and exporter.poll() is None:
            exporter.kill()
            exporter.wait(10)
        server.kill()
