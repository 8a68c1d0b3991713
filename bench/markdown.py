"""Markdown tables from a results file of `bench.run`, to paste into docs/benchmarks.md.

    python -m bench.markdown [--json bench/results/latest.json]

Prints the machine table and one row per figure: workload, metric, durability pair, both medians with
their min-max, q/r and the command that reproduces the figure.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from bench.run import PG_RATIOS, PG_SIDES, RESULTS, cell

COMMAND = ".venv/bin/python -m bench.run --only {workload}"


def machine_table(report: dict[str, Any]) -> str:
    env = report.get("environment", {})
    mach = env.get("machine", {})
    rows = [
        ("CPUs (nproc)", mach.get("nproc", env.get("cpus"))),
        ("CPU model", mach.get("cpu_model")),
        ("memory", f"{mach.get('mem_total_mb')} MiB"),
        ("kernel", mach.get("kernel")),
        ("Python", mach.get("python", env.get("python"))),
        ("Querator", env.get("querator")),
        ("redis-server", env.get("redis")),
        (
            "rocksdict / hiredis / uvloop",
            f"{mach.get('rocksdict')} / {mach.get('hiredis')} / {mach.get('uvloop')}",
        ),
        (
            "load average (1 min) before / after",
            f"{env.get('loadavg_before', [0])[0]:.2f} / {env.get('loadavg_after', [0])[0]:.2f}",
        ),
        (
            "run started (UTC) / duration",
            f"{report.get('started')} / {report.get('duration_s', 0) / 60:.1f} min",
        ),
    ]
    lines = ["| | |", "| --- | --- |"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    return "\n".join(lines)


def figures_table(report: dict[str, Any], extra_args: str = "") -> str:
    rounds = report.get("rounds", {})
    lines = [
        "| workload | metric | unit | durability | Querator median (min-max) | Redis median (min-max) | q/r "
        "| rounds | reproduce |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in report.get("results", []):
        if "sides" in row:
            continue  # pg_table()
        ratio = "-" if row["ratio"] is None else f"{row['ratio']:.2f}"
        command = COMMAND.format(workload=row["workload"]) + extra_args
        n = rounds.get(row["workload"], rounds) if isinstance(rounds, dict) else rounds
        lines.append(
            f"| {row['workload']} | {row['metric']} | {row['unit']} | {row['pairing']} "
            f"| {cell(row['querator'], row['unit'])} | {cell(row['redis'], row['unit'])} | {ratio} "
            f"| {n} | `{command}` |"
        )
    return "\n".join(lines) if len(lines) > 2 else ""


def pg_table(report: dict[str, Any], extra_args: str = "") -> str:
    """The PostgreSQL workloads: one column per side (Querator 1 node, 2 nodes, the plain queue), then the
    ratios; CPU rows in cores (CPU seconds per wall second)."""
    rows = [r for r in report.get("results", []) if "sides" in r]
    if not rows:
        return ""
    rounds = report.get("rounds", {})
    ratio_names = [f"{a} / {b}" for a, b in PG_RATIOS]
    lines = [
        "| workload | metric | unit | "
        + " | ".join(f"{s} median (min-max)" for s in PG_SIDES)
        + " | "
        + " | ".join(ratio_names)
        + " | rounds | reproduce |",
        "| --- " * (3 + len(PG_SIDES) + len(ratio_names) + 2) + "|",
    ]
    for row in rows:
        cells = []
        for side in PG_SIDES:
            summary = row.get(side)
            cells.append("-" if summary is None or summary["median"] is None else cell(summary, row["unit"]))
        ratios = ["-" if row["ratios"].get(n) is None else f"{row['ratios'][n]:.2f}" for n in ratio_names]
        n = rounds.get(row["workload"], rounds) if isinstance(rounds, dict) else rounds
        command = COMMAND.format(workload=row["workload"]) + extra_args
        lines.append(
            f"| {row['workload']} | {row['metric']} | {row['unit']} | "
            + " | ".join(cells + ratios)
            + f" | {n} | `{command}` |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.markdown", description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, default=RESULTS / "latest.json")
    parser.add_argument("--extra-args", default="", help="appended to each reproduce command, e.g. ' --big'")
    args = parser.parse_args(argv)
    report = json.loads(args.json.read_text())
    print(machine_table(report))
    for table in (figures_table(report, args.extra_args), pg_table(report, args.extra_args)):
        if table:
            print()
            print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
