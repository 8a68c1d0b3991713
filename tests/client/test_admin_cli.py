"""The admin subcommands of `querator` against a real server: what they print and how they fail."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable

from querator.cli import build_parser
from querator.client import Client


def querator(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "querator", *args], capture_output=True, text=True, timeout=timeout
    )


def test_serve_is_still_a_subcommand_with_its_flags() -> None:
    args = build_parser().parse_args(["serve", "--port", "1234", "--backend", "memory"])
    assert (args.command, args.port, args.backend) == ("serve", 1234, "memory")


def test_produce_prints_the_ids_and_stats_shows_them(
    url: str, client: Client, new_queue: Callable[..., str]
) -> None:
    name = new_queue()
    out = querator("produce", name, "a", "b", "--kind", "k", "--url", url)
    assert out.returncode == 0, out.stderr
    ids = out.stdout.split()
    assert len(ids) == 2
    assert [i.id for i in client.lease(name, count=2)] == ids
    stats = querator("stats", name, "--json", "--url", url)
    assert json.loads(stats.stdout)["leased"] == 2
    table = querator("stats", name, "--url", url)
    assert "leased" in table.stdout and "2" in table.stdout


def test_lease_prints_items_and_can_complete_them(
    url: str, client: Client, new_queue: Callable[..., str]
) -> None:
    name = new_queue()
    client.produce(name, [b"hello"], kind="greeting")
    out = querator("lease", name, "--count", "5", "--json", "--complete", "--url", url)
    assert out.returncode == 0, out.stderr
    [row] = json.loads(out.stdout)
    assert (row["payload"], row["kind"], row["attempts"]) == ("hello", "greeting", 1)
    assert client.stats(name).completed == 1
    client.produce(name, [b"again"])
    table = querator("lease", name, "--url", url)
    assert "again" in table.stdout


def test_top_shows_queues_and_rates_for_the_iterations_asked(
    url: str, client: Client, new_queue: Callable[..., str]
) -> None:
    name = new_queue()
    client.produce(name, [b"x"] * 3)
    out = querator("top", "--iterations", "2", "--interval", "0.1", "--url", url)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("done/s") == 2 * 2  # one table per refresh, header and caption
    assert name[:5] in out.stdout


def test_errors_are_one_line(url: str) -> None:
    out = querator("stats", "no-such-queue", "--url", url)
    assert (out.returncode, out.stdout) == (1, "")
    assert out.stderr == "querator: NOQUEUE no such queue 'no-such-queue'\n"
    down = querator("stats", "q", "--url", "redis://127.0.0.1:1")
    assert down.returncode == 1
    assert down.stderr.startswith("querator: cannot talk to redis://127.0.0.1:1: ")
    assert down.stderr.count("\n") == 1


def test_redrive_of_an_empty_queue_moves_nothing(url: str, new_queue: Callable[..., str]) -> None:
    out = querator("redrive", new_queue(), "--url", url)
    assert (out.returncode, out.stdout) == (0, "moved 0 items\n")


def test_the_server_side_imports_neither_redis_nor_rich() -> None:
    # `make serve` installs the package without the client extra: serve must start without it.
    code = (
        "import sys; import querator.cli, querator.server; querator.cli.build_parser(); "
        "print(sorted(m for m in sys.modules "
        "if m.split('.')[0] in ('redis', 'rich') or m.startswith('querator.client.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert (out.returncode, out.stdout) == (0, "[]\n"), out.stderr
