"""The examples run end to end against a real server: the Python worker and the Node.js (ioredis) one."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from querator.client import Client

ROOT = Path(__file__).resolve().parents[2]
NODE_DIR = ROOT / "examples" / "node"


def _run_example(command: list[str], cwd: Path, admin: Client, queue: str, items: int) -> None:
    """Runs one example to its end and checks that every item it produced was completed, once."""
    out = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"processed {items} items"
    stats = admin.stats(queue)
    assert (stats.completed, stats.total) == (items, 0)


def test_python_example_produces_and_processes_every_item(url: str, admin: Client) -> None:
    command = [
        sys.executable,
        "examples/python_worker.py",
        "--url",
        url,
        "--queue",
        "py-example",
        "--items",
        "200",
    ]
    _run_example(command, ROOT, admin, "py-example", 200)


def _node_modules() -> None:
    """`npm ci` when .ci/run has not installed the example's locked dependencies yet."""
    if not (NODE_DIR / "node_modules" / "ioredis").is_dir():
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"],
            cwd=NODE_DIR,
            check=True,
            timeout=300,
            capture_output=True,
        )


@pytest.mark.skipif(shutil.which("node") is None or shutil.which("npm") is None, reason="needs node and npm")
def test_node_example_produces_and_processes_every_item(url: str, admin: Client) -> None:
    _node_modules()
    _run_example(["node", "worker.js", url, "node-example", "150"], NODE_DIR, admin, "node-example", 150)
