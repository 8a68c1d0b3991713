"""The newcomer's interface: what `make serve` installs, what `make clean` deletes, what git ignores and
what the README's "Running it" lists."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from querator.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent


def _recipe(target: str) -> list[str]:
    """The prerequisites line and the commands of one Makefile rule."""
    lines = (ROOT / "Makefile").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{target}:"))
    body = [lines[start]]
    for line in lines[start + 1 :]:
        if not line.startswith("\t"):
            break
        body.append(line.strip())
    return body


def test_make_serve_installs_only_what_serving_needs() -> None:
    serve = _recipe("serve")
    stamp = serve[0].split(":", 1)[1].split()[0]
    assert "SERVE" in stamp
    installs = [line for line in _recipe(stamp) if "pip install" in line and "upgrade pip" not in line]
    assert installs == ["$(BIN)/pip install --quiet -e ."]
    for target in ("test", "lint"):
        dev_stamp = _recipe(target)[0].split(":", 1)[1].split()[0]
        assert any("'.[test,dev]'" in line for line in _recipe(dev_stamp))


def test_make_clean_keeps_the_data_and_clean_data_removes_it() -> None:
    clean = " ".join(_recipe("clean")[1:])
    assert ".venv" in clean or "$(VENV)" in clean
    assert not re.search(r"(^|\s)(\./)?data(\s|$)", clean)
    assert _recipe("clean-data")[1:] == ["rm -rf data"]


def test_git_ignores_no_tracked_file() -> None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout")
    ignored = subprocess.run(
        ["git", "ls-files", "-ci", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert ignored == ""


def test_readme_running_it_lists_every_serve_flag() -> None:
    readme = (ROOT / "README.md").read_text()
    running = readme.split("## Running it", 1)[1].split("\n## ", 1)[0]
    serve = build_parser()._subparsers._group_actions[0].choices["serve"]  # type: ignore[union-attr]
    flags = {s for action in serve._actions for s in action.option_strings if s.startswith("--")}
    missing = sorted(f for f in flags - {"--help"} if f"{f} " not in running and f"{f}]" not in running)
    assert missing == []
