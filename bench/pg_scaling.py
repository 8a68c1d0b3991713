"""What a second node can add on this machine: the cycle (8 producers, 8 consumers, COUNT 100) on one
node, on two nodes sharing one queue (cycle-pg's "querator x2"), and on two nodes that share nothing but
the database (each its own queue and half the clients, so no row is ever touched by both). The last is
the upper bound of any way of sharing the work between nodes: if it does not beat one node, the machine's
cores, not the nodes' coordination, are the limit. Every side gets a fresh throwaway cluster
(bench/pgcluster.py) per round; the sides alternate.

    .venv/bin/python -m bench.pg_scaling [--rounds 3] [--items 150000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys

from bench import loadgen
from bench.run import CpuMeter
from bench.servers import QueratorPgNodes

SIDES = ("one node", "two nodes, one queue", "two nodes, a queue each")


async def _cycles(groups: list[tuple[list[int], str]], items: int, clients: int) -> tuple[int, float]:
    """One cycle per (ports, queue) group at once, `clients` producers and as many consumers in each;
    items completed in all and the longest cycle's time (they start together)."""
    results = await asyncio.gather(
        *(
            loadgen.cycle(
                ports,
                loadgen.QueratorDialect(queue),
                producers=clients,
                consumers=clients,
                count=100,
                batch=100,
                items=items // len(groups),
                time_limit=60.0,
            )
            for ports, queue in groups
        )
    )
    for r in results:
        if r.errors or r.timed_out:
            raise RuntimeError(f"cycle failed: {dict(r.errors)} timed out {r.timed_out}")
    return sum(r.items for r in results), max(r.elapsed for r in results)


def _wal_lsn(server: QueratorPgNodes) -> str:
    return str(server.cluster.psql("SELECT pg_current_wal_lsn()", "bench")).strip()


def measure(side: str, items: int) -> tuple[float, dict[str, float], float]:
    """items/s, the cores of each process, and the WAL bytes written per item."""
    nodes = 1 if side == SIDES[0] else 2
    server = QueratorPgNodes(nodes)
    server.start()
    try:
        if side == SIDES[2]:
            groups = [([port], f"bench{i}") for i, port in enumerate(server.ports)]
            clients = 4
        else:
            groups = [(server.ports, "bench")]
            clients = 8
        before = _wal_lsn(server)
        with CpuMeter(server) as cpu:
            done, seconds = loadgen.run_async(_cycles(groups, items, clients))
        after = _wal_lsn(server)
        wal = int(server.cluster.psql(f"SELECT pg_wal_lsn_diff('{after}', '{before}')", "bench"))
        return done / seconds, cpu.cores, wal / max(done, 1)
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pg_scaling", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--items", type=int, default=150_000)
    args = parser.parse_args(argv)
    rates: dict[str, list[float]] = {side: [] for side in SIDES}
    cores: dict[str, list[dict[str, float]]] = {side: [] for side in SIDES}
    wal_per_item: dict[str, list[float]] = {side: [] for side in SIDES}
    for round_ in range(args.rounds):
        order = SIDES[round_ % 3 :] + SIDES[: round_ % 3]
        for side in order:
            rate, cpu, wal = measure(side, args.items)
            rates[side].append(rate)
            cores[side].append(cpu)
            wal_per_item[side].append(wal)
            shown = ", ".join(f"{k} {v:.2f}" for k, v in cpu.items())
            print(f"round {round_ + 1} {side:24} {rate:10,.0f} items/s  WAL {wal:.0f} B/item  cores: {shown}")
    base = statistics.median(rates[SIDES[0]])
    print("\n| side | items/s median (min-max) | / one node | cores in all (median) | WAL bytes/item |")
    print("| --- | --- | --- | --- | --- |")
    for side in SIDES:
        r = rates[side]
        total = statistics.median(c["total"] for c in cores[side])
        wal = statistics.median(wal_per_item[side])
        print(
            f"| {side} | {statistics.median(r):,.0f} ({min(r):,.0f}-{max(r):,.0f}) | "
            f"{statistics.median(r) / base:.2f} | {total:.2f} | {wal:.0f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
