"""Debian's Chromium, headless, as the tests' real browser: `make test` installs it where it may (root);
without it, the tests that need it skip and say why."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

RENDER_TIMEOUT_S = 120


def chromium() -> str:
    found = shutil.which("chromium")
    if found is None:
        pytest.skip("NO CHROMIUM: `make test` installs Debian's chromium when run as root; install it "
                    "(apt-get install chromium) to run the report-rendering test")
    return found


def render(page: Path, out_dir: Path) -> tuple[Path, str, str]:
    """Screenshot `page`; return the PNG, the DOM as Chromium built it, and what Chromium logged."""
    browser, screenshot = chromium(), out_dir / f"{page.stem}.png"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1280,2400",
             "--enable-logging=stderr", "--v=0", f"--user-data-dir={out_dir / 'profile'}"]
    shot = subprocess.run([browser, *flags, f"--screenshot={screenshot}", page.as_uri()],
                          capture_output=True, text=True, timeout=RENDER_TIMEOUT_S)
    dom = subprocess.run([browser, *flags, "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=RENDER_TIMEOUT_S)
    assert shot.returncode == 0 and dom.returncode == 0, shot.stderr[-2000:] + dom.stderr[-2000:]
    return screenshot, dom.stdout, shot.stderr + dom.stderr
