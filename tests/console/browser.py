"""Real Chromium for the console's tests: Debian's ``chromium`` driven by Playwright for Python.

Playwright's own browser download is never used (``executable_path`` points at the system
browser). When no Chromium is installed and the tests run as root with apt-get, it is installed
here, as ``.ci/run`` does; otherwise the tests fail saying how to install it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from playwright.sync_api import ConsoleMessage, Page

from tests.helpers import REPO

CANDIDATES = ("chromium", "chromium-browser")
# Screenshots of every page the tests visit; look at them after a run.
SCREENSHOTS = Path(os.environ.get("ISOTOPE_TEST_OUTPUT", REPO / "test-output")) / "console"


def chromium_path() -> str:
    """The system Chromium, installed with apt-get first when missing and possible."""
    explicit = os.environ.get("ISOTOPE_CHROMIUM")
    if explicit:
        return explicit
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=False, env=env, capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], check=True, env=env, capture_output=True)
        for name in CANDIDATES:
            found = shutil.which(name)
            if found:
                return found
    raise AssertionError("the console's browser tests need Chromium: apt-get install -y chromium "
                         "(or set ISOTOPE_CHROMIUM to a Chromium binary)")


@dataclass
class Watched:
    """A page whose console errors and uncaught exceptions are collected."""

    page: Page
    errors: list[str] = field(default_factory=list)
    shots: list[Path] = field(default_factory=list)

    def on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(f"console error: {message.text} ({message.location.get('url', '')})")

    def on_page_error(self, error: Exception) -> None:
        self.errors.append(f"uncaught: {error}")

    def shot(self, name: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        self.shots.append(path)
        return path


def watch(page: Page) -> Watched:
    watched = Watched(page)
    page.on("console", watched.on_console)
    page.on("pageerror", watched.on_page_error)
    return watched


def horizontal_overflow(page: Page) -> int:
    """How many CSS pixels the page is wider than the viewport (0: no sideways scrolling)."""
    return int(page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth"))
