"""Producer and worker on `querator.client`: the shortest complete program (see docs/client.md).

Creates the queue (and its dead queue) when missing, produces `--items` items, then runs a `Worker`
until every one of them is processed. It stops by itself so CI can run it; a real worker would run
until SIGTERM instead (run() handles it).

    python examples/python_worker.py --url redis://127.0.0.1:2319 --items 100
"""

from __future__ import annotations

import argparse
import contextlib
import json
import threading

from querator.client import Client, Dead, Item, QueueExists, Worker


def setup(client: Client, queue: str) -> None:
    for name, options in ((f"{queue}-dead", {}), (queue, {"max_attempts": 5, "dead_queue": f"{queue}-dead"})):
        with contextlib.suppress(QueueExists):
            client.create_queue(name, lease_timeout=30_000, **options)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="redis://127.0.0.1:2319")
    parser.add_argument("--queue", default="emails")
    parser.add_argument("--items", type=int, default=100)
    args = parser.parse_args()

    with Client(args.url) as client:
        setup(client, args.queue)
        # The producer: one QPRODUCE per batch of up to 1000 items, with a kind and an encoding.
        orders = [json.dumps({"to": f"user{i}@example.com"}).encode() for i in range(args.items)]
        for start in range(0, len(orders), 1000):
            client.produce(args.queue, orders[start : start + 1000], kind="welcome", encoding="json")

    done = threading.Event()
    processed = 0
    lock = threading.Lock()

    def send_email(item: Item) -> None:
        nonlocal processed
        order = json.loads(item.payload)
        if "@" not in order["to"]:
            raise Dead("no address")  # never worth retrying: straight to the dead queue
        with lock:
            processed += 1
            if processed == args.items:
                done.set()

    worker = Worker(args.url, args.queue, send_email, concurrency=8)
    threading.Thread(target=lambda: (done.wait(), worker.stop()), daemon=True).start()
    worker.run()  # returns once stop() was called (or on SIGINT / SIGTERM)
    print(f"processed {processed} items")
    return 0 if processed == args.items else 1


if __name__ == "__main__":
    raise SystemExit(main())
