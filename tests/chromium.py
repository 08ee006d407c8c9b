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
                    "(apt-get install chromium) to run the browser tests (reports, catalog)")
    return found


def render(page: Path | str, out_dir: Path, name: str | None = None,
           settle_ms: int | None = None) -> tuple[Path, str, str]:
    """Screenshot `page` (a file, or a URL); return the PNG, the DOM as Chromium built it, and what
    Chromium logged. `settle_ms`: virtual time a single-page app gets to fetch and draw (Chromium waits
    for its requests meanwhile)."""
    url = page.as_uri() if isinstance(page, Path) else page
    browser, screenshot = chromium(), out_dir / f"{name or Path(page).stem}.png"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1280,2400",
             "--enable-logging=stderr", "--v=0", f"--user-data-dir={out_dir / 'profile'}",
             *([f"--virtual-time-budget={settle_ms}"] if settle_ms else [])]
    shot = subprocess.run([browser, *flags, f"--screenshot={screenshot}", url],
                          capture_output=True, text=True, timeout=RENDER_TIMEOUT_S)
    dom = subprocess.run([browser, *flags, "--dump-dom", url],
                         capture_output=True, text=True, timeout=RENDER_TIMEOUT_S)
    assert shot.returncode == 0 and dom.returncode == 0, shot.stderr[-2000:] + dom.stderr[-2000:]
    return screenshot, dom.stdout, shot.stderr + dom.stderr
