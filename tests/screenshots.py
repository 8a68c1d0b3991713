"""`make screenshots`: the dashboard images of the README and docs/operations.md, taken in headless
Chromium from a real server that runs some queues with traffic, so they show what an operator sees.

Run from the repository root; writes docs/img/dashboard-*.png. Not a test (pytest does not collect it).
"""

from __future__ import annotations

import math
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

import redis

from tests.browser import browser, missing
from tests.support import ServerProcess, free_port

OUT = Path("docs/img")
TRAFFIC_S = 14  # long enough for the charts to have a few dozen points


def setup(client: redis.Redis) -> None:
    client.execute_command("QCREATE", "orders-dead")
    client.execute_command(
        "QCREATE", "orders", "PARTITIONS", "4", "MAX-ATTEMPTS", "3", "DEAD-QUEUE", "orders-dead"
    )
    client.execute_command("QCREATE", "emails", "PARTITIONS", "2")
    client.execute_command("QCREATE", "reports")
    client.execute_command(
        "QPRODUCE", "reports", "DELAY", "3600000", "ITEMS", *[f"report {i}" for i in range(12)]
    )
    client.execute_command("QPAUSE", "reports")
    payloads = [f'{{"order": {n}, "sku": "A-{n % 7}"}}' for n in range(6)]
    client.execute_command("QPRODUCE", "orders", "KIND", "order", "ITEMS", *payloads)
    for n, item in enumerate(client.execute_command("QLEASE", "orders", "COUNT", "6")):
        reason = ("payment declined", "address missing", "timeout calling stock service")[n % 3]
        client.execute_command("QRETRY", "orders", "DEAD", "REASON", reason, item[0])


def traffic(port: int, stop: threading.Event) -> None:
    """Producers and consumers at changing speeds, so the lines move."""
    client = redis.Redis(port=port)
    tick = 0
    while not stop.is_set():
        tick += 1
        burst = 20 + int(15 * (1 + math.sin(tick / 6)))
        client.execute_command(
            "QPRODUCE",
            "orders",
            "KIND",
            "order",
            "ITEMS",
            *[f'{{"order": {tick}-{i}}}' for i in range(burst)],
        )
        client.execute_command(
            "QPRODUCE", "emails", "ITEMS", *[f"mail {tick}-{i}" for i in range(burst // 2)]
        )
        for queue, share in (("orders", 0.8), ("emails", 1.0)):
            leased = client.execute_command("QLEASE", queue, "COUNT", str(max(1, int(burst * share))))
            ids = [item[0] for item in leased]
            if ids:
                keep = ids[: random.randint(0, 3)]  # a few stay leased for a while
                done = ids[len(keep) :]
                if done:
                    client.execute_command("QCOMPLETE", queue, *done)
        time.sleep(0.25)


def main() -> int:
    why = missing()
    if why:
        print(f"make screenshots: {why}", file=sys.stderr)
        return 1
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess(Path(tmp) / "data", backend="memory", http_port=free_port()).start()
        try:
            client = redis.Redis(port=server.port)
            setup(client)
            stop = threading.Event()
            worker = threading.Thread(target=traffic, args=(server.port, stop), daemon=True)
            worker.start()
            origin = f"http://127.0.0.1:{server.http_port}"
            with browser() as chromium:
                page = chromium.new_page(viewport={"width": 1280, "height": 760}, device_scale_factor=1)
                page.goto(origin + "/")
                time.sleep(TRAFFIC_S)
                page.screenshot(path=str(OUT / "dashboard-overview.png"))
                page.goto(origin + "/#/queue/orders-dead")
                page.locator("#items tr[data-item]").first.wait_for()
                time.sleep(4.5)  # two polls: the queue's charts have points
                page.screenshot(path=str(OUT / "dashboard-dead-queue.png"), full_page=True)
            stop.set()
            worker.join(5)
        finally:
            server.kill()
    for name in ("dashboard-overview.png", "dashboard-dead-queue.png"):
        print(OUT / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
