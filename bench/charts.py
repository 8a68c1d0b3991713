"""PNG charts from a results file of `bench.run` (matplotlib, Agg backend: no display needed).

    python -m bench.charts [--json bench/results/latest.json] [--out docs/img]

Writes, for whatever the results file holds:

* `bench-throughput.png`: req/s and items/s, Querator and Redis bars side by side per workload (log scale,
  whiskers = min-max over the rounds, q/r printed next to each pair);
* `bench-latency.png`: handoff produce -> lease latency p50 / p99 / max, fsync/always and memory/none;
* `bench-backlog.png`: lease + complete items/s per backlog size, with the ratio to the small backlog;
* `bench-memory.png`: resident memory of the server with the items queued;
* `bench-restart.png`: start -> first successful lease after SIGTERM / SIGKILL.

`python -m bench.run` calls `render` at the end of a run (it skips the charts if matplotlib is missing).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # after the backend is chosen

ROOT = Path(__file__).resolve().parent.parent
COLORS = {"querator": "#3b6fb6", "redis": "#c8453a"}
LABELS = {"querator": "Querator", "redis": "redis-server"}
THROUGHPUT = ("req/s", "items/s")


def _median(row: dict[str, Any], side: str) -> float | None:
    value = row[side]["median"]
    return None if value is None else float(value)


def _err(row: dict[str, Any], side: str) -> tuple[float, float]:
    s = row[side]
    if s["median"] is None:
        return 0.0, 0.0
    return float(s["median"] - s["min"]), float(s["max"] - s["median"])


def _subtitle(report: dict[str, Any]) -> str:
    env = report.get("environment", {})
    mach = env.get("machine", {})
    cpu = mach.get("cpu_model", "")
    return (
        f"{report.get('started', '')[:10]}  ·  {env.get('cpus', '?')} CPUs {cpu}  ·  "
        f"Querator {env.get('querator', '?')} vs redis {env.get('redis', '?')}  ·  same run, alternating"
    )


def _fmt(value: float, unit: str) -> str:
    if unit in THROUGHPUT:
        if value >= 1e6:
            return f"{value / 1e6:.2f}M"
        if value >= 1e3:
            return f"{value / 1e3:.1f}k"
        return f"{value:.0f}"
    if unit == "MB":
        return f"{value:.0f} MB"
    if unit == "s":
        return f"{value:.2f} s"
    if unit == "ms":
        return f"{value:.0f} ms" if value >= 100 else f"{value:.2f} ms"
    return f"{value:.2f}"


def _fell_behind(report: dict[str, Any], workload: str) -> str:
    """'Querator fell behind in 2/3 rounds' from the run's problems (handoff: a backlog, not a handoff)."""
    rounds = report.get("rounds", {})
    total = rounds.get(workload, "?") if isinstance(rounds, dict) else rounds
    notes = []
    for side in ("querator", "redis"):
        prefix = f"{workload} round "
        n = sum(
            1
            for p in report.get("problems", [])
            if p.startswith(prefix) and f" {side}" in p.split(":")[0] and "fell behind" in p
        )
        if n:
            notes.append(f"{LABELS[side]} fell behind in {n}/{total} rounds")
    return ("\n(" + "; ".join(notes) + ")") if notes else ""


def _paired_barh(
    rows: list[dict[str, Any]],
    labels: list[str],
    title: str,
    xlabel: str,
    report: dict[str, Any],
    *,
    log: bool,
) -> Any:
    """Horizontal bars, Querator above Redis for each row; the value and q/r printed at the bar end."""
    height = 0.38
    fig, ax = plt.subplots(figsize=(10, 0.75 * len(rows) + 1.6))
    for i, row in enumerate(rows):
        for j, side in enumerate(("querator", "redis")):
            value = _median(row, side)
            if value is None:
                continue
            y = i + (j - 0.5) * height
            lo, hi = _err(row, side)
            ax.barh(
                y,
                value,
                height,
                color=COLORS[side],
                xerr=[[lo], [hi]] if lo or hi else None,
                ecolor="#444",
                capsize=2,
                label=LABELS[side] if i == 0 else None,
            )
            text = _fmt(value, row["unit"])
            if side == "querator" and row.get("ratio") is not None:
                text += f"   q/r {row['ratio']:.2f}"
            ax.text(value * (1.04 if log else 1.01) + hi, y, text, va="center", fontsize=8)
    ax.set_yticks(range(len(rows)), labels, fontsize=8)
    ax.invert_yaxis()
    if log:
        ax.set_xscale("log")
    left, right = ax.get_xlim()
    ax.set_xlim(left, right * (8 if log else 1.25))
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=11)
    fig.suptitle(_subtitle(report), fontsize=7, y=0.995, color="#555")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(axis="x", alpha=0.3, which="both")
    fig.tight_layout()
    return fig


def _save(fig: Any, path: Path, written: list[Path]) -> None:
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)


def render(json_path: Path, out_dir: Path) -> list[Path]:
    report = json.loads(Path(json_path).read_text())
    # Querator against redis-server only: the PostgreSQL workloads (rows with "sides") have other sides.
    results: list[dict[str, Any]] = [r for r in report.get("results", []) if "sides" not in r]
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    rows = [r for r in results if r["unit"] in THROUGHPUT and r["workload"] != "backlog"]
    if rows:
        labels = [f"{r['workload']} ({r['pairing']})\n{r['metric']} [{r['unit']}]" for r in rows]
        fig = _paired_barh(
            rows,
            labels,
            "Throughput, median over rounds (higher is better; whiskers: min-max)",
            "requests/s or items/s (log scale)",
            report,
            log=True,
        )
        _save(fig, out_dir / "bench-throughput.png", written)

    rows = [r for r in results if r["workload"].startswith("handoff") and r["unit"] == "ms"]
    if rows:
        labels = [
            f"{r['workload']} ({r['pairing']}) {r['metric']}" + _fell_behind(report, r["workload"])
            for r in rows
        ]
        fig = _paired_barh(
            rows,
            labels,
            "Handoff latency produce -> lease, 1000 items/s, consumers blocked (lower is better)",
            "milliseconds (log scale)",
            report,
            log=True,
        )
        _save(fig, out_dir / "bench-latency.png", written)

    rows = [r for r in results if r["workload"] == "backlog" and r["unit"] == "items/s"]
    if rows:
        ratios = {
            r["metric"].split(" / ")[0]: r
            for r in results
            if r["workload"] == "backlog" and r["unit"] == "ratio"
        }
        labels = []
        for r in rows:
            label = r["metric"]
            ratio = ratios.get(r["metric"])
            if ratio is not None:
                q, rd = ratio["querator"]["median"], ratio["redis"]["median"]
                label += (
                    "\nvs small: "
                    + (f"Querator {q:.2f}" if q is not None else "-")
                    + (f", Redis {rd:.2f}" if rd is not None else "")
                )
            labels.append(label)
        fig = _paired_barh(
            rows,
            labels,
            "Lease + complete with a standing backlog (COUNT 100, 4 consumers; fsync/always)",
            "items/s",
            report,
            log=False,
        )
        _save(fig, out_dir / "bench-backlog.png", written)

    rows = [r for r in results if r["workload"].startswith("memory") and r["unit"] == "MB"]
    if rows:
        labels = [f"{r['workload']} ({r['pairing']})\n{r['metric']}" for r in rows]
        fig = _paired_barh(
            rows, labels, "Resident memory of the server process (lower is better)", "MiB", report, log=False
        )
        _save(fig, out_dir / "bench-memory.png", written)

    rows = [r for r in results if r["workload"] == "restart" and r["unit"] == "s"]
    if rows:
        labels = [r["metric"] for r in rows]
        fig = _paired_barh(
            rows,
            labels,
            "Restart: process start -> first successful lease (lower is better; fsync/always)",
            "seconds",
            report,
            log=False,
        )
        _save(fig, out_dir / "bench-restart.png", written)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.charts", description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "latest.json")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    args = parser.parse_args(argv)
    for path in render(args.json, args.out):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
