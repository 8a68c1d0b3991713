"""The README's in-process Python example, extracted from README.md and run twice, so it cannot drift."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def _python_example() -> str:
    section = README.read_text().split("## From Python, in-process", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match is not None, "the README lost its Python example"
    return match.group(1)


def test_the_readme_python_example_runs_twice_and_says_what_it_did(tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(_python_example())
    outputs = []
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout.splitlines())
    first, second = outputs
    assert first[0] == "created queue jobs"
    assert first[1].startswith("produced [")
    assert len([line for line in first if line.startswith("leased and completed ")]) == 2
    # The second run finds the queue and its own data directory, and does the same work again.
    assert not any(line.startswith("created") for line in second)
    assert len([line for line in second if line.startswith("leased and completed ")]) == 2
    assert (tmp_path / "example-data").is_dir()
    assert not (tmp_path / "data").exists()
