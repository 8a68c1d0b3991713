"""Headless Debian Chromium driven by Playwright for Python, for the dashboard tests and `make
screenshots` (ADR 16): the system browser, never a downloaded one.

`browser()` skips with the reason when Chromium or Playwright is missing, except under `CI=true`, where a
missing browser is a failure: CI installs both, so a skip there would hide a broken setup.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser

CHROMIUM = "/usr/bin/chromium"
# No sandbox: the tests run as root in a container. The rest keeps Chromium from calling home (updates,
# sync, field trials), so every request a test sees is one the page made.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def missing() -> str:
    """Why the browser tests cannot run here, or "" when they can."""
    if not os.path.exists(CHROMIUM) and shutil.which("chromium") is None:
        return "Debian chromium is not installed (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright for Python is not installed (pip install -e '.[test]')"
    return ""


def require_browser() -> None:
    why = missing()
    if why:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true needs the browser tests to run: {why}")
        pytest.skip(why)


@contextmanager
def browser() -> Iterator[Browser]:
    from playwright.sync_api import sync_playwright

    executable = CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()
