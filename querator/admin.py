"""Admin subcommands of `querator` (stats, produce, lease, redrive, top) on `querator.client`.

Invariant: this module imports neither redis nor rich at import time, so `querator serve` (which builds
the same parser) runs on the server's dependencies alone; the client extra loads only when a subcommand
runs. Every failure is one line on stderr and exit 1, like the server's start-up errors.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from querator.client import Client, Item, QueueStats

COMMANDS = ("stats", "produce", "lease", "redrive", "top")
DEFAULT_URL = "redis://127.0.0.1:2319"  # the same as querator.client.DEFAULT_URL, without importing redis
REDRIVE_CHUNK = 1000  # items per QREDRIVE round trip, so the progress bar moves
CAPTION = "in/s, done/s: produced, completed per second; dead: dead-lettered; oldest: oldest ready item"


def add_commands(commands: Any) -> None:
    """Adds the admin subcommands to `querator`'s subparsers (`argparse._SubParsersAction`)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=DEFAULT_URL, help=f"server address (default {DEFAULT_URL})")

    stats = commands.add_parser("stats", parents=[common], help="a queue's counters")
    stats.add_argument("queue")
    stats.add_argument("--json", action="store_true", help="print JSON instead of a table")

    produce = commands.add_parser("produce", parents=[common], help="add items to a queue")
    produce.add_argument("queue")
    produce.add_argument("payloads", nargs="+", metavar="PAYLOAD")
    produce.add_argument("--kind")
    produce.add_argument("--reference")
    produce.add_argument("--encoding")
    produce.add_argument("--delay-ms", type=int)
    produce.add_argument("--dedup", help="dedup key: a repeated call within the window stores nothing")

    lease = commands.add_parser("lease", parents=[common], help="lease items and print them")
    lease.add_argument("queue")
    lease.add_argument("--count", type=int, default=1)
    lease.add_argument("--block-ms", type=int)
    lease.add_argument("--complete", action="store_true", help="complete the items once printed")
    lease.add_argument("--json", action="store_true", help="print JSON instead of a table")

    redrive = commands.add_parser(
        "redrive", parents=[common], help="move a dead queue's items back to where they came from"
    )
    redrive.add_argument("queue")
    redrive.add_argument("--to", help="move every ready item to this queue instead")
    redrive.add_argument("--limit", type=int, help="move at most this many (default: all)")

    top = commands.add_parser("top", parents=[common], help="queues and their rates, refreshed")
    top.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes")
    top.add_argument("--iterations", type=int, default=0, help="stop after this many refreshes (0: never)")


def run(args: argparse.Namespace) -> int:
    from redis.exceptions import RedisError

    from querator.client import Client, QueratorError

    try:
        with Client(args.url) as client:
            return _COMMANDS[args.command](client, args)
    except QueratorError as exc:
        return _fail(str(exc))
    except (RedisError, OSError) as exc:
        return _fail(f"cannot talk to {args.url}: {exc}")
    except KeyboardInterrupt:
        return 130


def _fail(line: str) -> int:
    print(f"querator: {line}", file=sys.stderr)
    return 1


def _stats(client: Client, args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    stats = client.stats(args.queue)
    values = _stats_fields(stats)
    if args.json:
        print(json.dumps(values))
        return 0
    table = Table("field", "value", title=f"queue {args.queue}")
    for name, value in values.items():
        if name != "partitions":
            table.add_row(name, str(value))
    Console().print(table)
    return 0


def _stats_fields(stats: QueueStats) -> dict[str, Any]:
    import dataclasses

    return {name.replace("_", "-"): value for name, value in dataclasses.asdict(stats).items()}


def _produce(client: Client, args: argparse.Namespace) -> int:
    ids = client.produce(
        args.queue,
        args.payloads,
        kind=args.kind,
        reference=args.reference,
        encoding=args.encoding,
        delay_ms=args.delay_ms,
        dedup=args.dedup,
    )
    print("\n".join(ids))
    return 0


def _item_fields(item: Item) -> dict[str, Any]:
    return {
        "id": item.id,
        "attempts": item.attempts,
        "lease-deadline": item.lease_deadline,
        "kind": item.kind,
        "reference": item.reference,
        "encoding": item.encoding,
        "payload": item.payload.decode("utf-8", "backslashreplace"),
    }


def _lease(client: Client, args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    items = client.lease(args.queue, args.count, args.block_ms)
    rows = [_item_fields(item) for item in items]
    if args.json:
        print(json.dumps(rows))
    else:
        table = Table(
            "id", "attempts", "lease-deadline", "kind", "payload", title=f"leased from {args.queue}"
        )
        for row in rows:
            table.add_row(
                row["id"], str(row["attempts"]), str(row["lease-deadline"]), row["kind"], row["payload"]
            )
        Console().print(table)
    if args.complete:
        client.complete(args.queue, [item.id for item in items])
    return 0


def _redrive(client: Client, args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import Progress

    ready = client.stats(args.queue).ready
    total = ready if args.limit is None else min(ready, args.limit)
    moved = 0
    console = Console(stderr=True)
    # One QREDRIVE per chunk: a redrive of many items shows progress and can be interrupted between chunks.
    with Progress(console=console, disable=not console.is_terminal, transient=True) as progress:
        task = progress.add_task(f"redrive {args.queue}", total=total)
        while moved < total:
            step = client.redrive(args.queue, to=args.to, limit=min(REDRIVE_CHUNK, total - moved))
            moved += step
            progress.update(task, completed=moved)
            if step == 0:
                break  # what is left cannot move (its source queue is gone, or it was never dead-lettered)
    print(f"moved {moved} items")
    return 0


def _all_queues(client: Client) -> list[str]:
    names: list[str] = []
    while True:
        page = client.list_queues(after=names[-1] if names else None)
        names += page
        if len(page) < 1000:
            return names


def _top(client: Client, args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.live import Live
    from rich.table import Table

    console = Console()
    previous: dict[str, tuple[int, int]] = {}
    last = time.monotonic()

    def table() -> Table:
        nonlocal last
        now = time.monotonic()
        elapsed = max(now - last, 1e-9)
        last = now
        # Short headers: the table fits an 80-column terminal without rich truncating them.
        view = Table(
            "queue", "ready", "leased", "sched", "in/s", "done/s", "dead", "oldest ms", caption=CAPTION
        )
        for name in _all_queues(client):
            stats = client.stats(name)
            before = previous.get(name)
            previous[name] = (stats.produced, stats.completed)
            produced_rate = "" if before is None else f"{(stats.produced - before[0]) / elapsed:.0f}"
            completed_rate = "" if before is None else f"{(stats.completed - before[1]) / elapsed:.0f}"
            view.add_row(
                name,
                str(stats.ready),
                str(stats.leased),
                str(stats.scheduled),
                produced_rate,
                completed_rate,
                str(stats.dead_lettered),
                str(stats.oldest_ready_age),
            )
        return view

    def refreshes() -> Iterator[Table]:
        yield table()
        count = 1
        while args.iterations == 0 or count < args.iterations:
            time.sleep(args.interval)
            count += 1
            yield table()

    views = refreshes()
    if not console.is_terminal:
        # In a pipe (tests, logs) each refresh is printed once, one table after the other.
        for view in views:
            console.print(view)
        return 0
    with Live(next(views), console=console, auto_refresh=False) as live:
        for view in views:
            live.update(view, refresh=True)
    return 0


_COMMANDS = {"stats": _stats, "produce": _produce, "lease": _lease, "redrive": _redrive, "top": _top}
