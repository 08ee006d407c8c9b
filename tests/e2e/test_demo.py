"""`millet demo` as a new user sees it: one screen, a line per stage of each night, every path it names
real, and a sample borrower with values in every family.

Mutations each test is there for: dbt's or Airflow's own output let through to the console (far over 60
lines), or Feast's as it opens its store after the nights (one line); a stage line summing the wrong
manifests (the lines-in figure differs from the landing drops counted here); a sample borrower picked by
one family's activity (a family shows 0 values).
"""

from __future__ import annotations

import gzip
import os
import re
import subprocess
from datetime import date, timedelta
from pathlib import Path

import pytest

from millet.alerts import alert_log
from millet.settings import Settings
from millet.transform.dbt import dbt_log_path
from tests.e2e.processes import MILLET

SCREEN_LINES = 60
# A tool's record as it reaches a console: a time first (Airflow's structlog, dbt's, a logging format
# with asctime), a level first (logging's basicConfig), or a warning (warnings.showwarning). A record
# printed by logging's last-resort handler is its bare message: no pattern tells it from ours.
TOOL_RECORD = re.compile(r"^(\d{4}-\d\d-\d\d[T ]\d\d:\d\d|\d\d:\d\d:\d\d "
                         r"|(DEBUG|INFO|WARNING|ERROR|CRITICAL)[: ])|\w+Warning: ")
USERS = 3_000  # small, so the test is quick; the demo's figures and paths are the same at any size


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Settings, str]:
    root = tmp_path_factory.mktemp("demo") / "data"
    settings = Settings(data_root=root, demo_users=USERS)
    env = {**os.environ, "MILLET_DATA_ROOT": str(root), "MILLET_DEMO_USERS": str(USERS)}
    done = subprocess.run([MILLET, "demo"], env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return settings, done.stdout + done.stderr


@pytest.mark.e2e
def test_the_demo_fits_on_one_screen_and_every_path_it_names_exists(demo):
    settings, out = demo
    lines = out.splitlines()
    assert len(lines) <= SCREEN_LINES, out
    assert not [line for line in lines if TOOL_RECORD.search(line)], out  # a tool's record, not ours
    paths = [Path(p.rstrip(".,;:)")) for p in re.findall(r"(/\S+)", out)]
    named = {p for p in paths if str(p).startswith(str(settings.root))}
    assert {dbt_log_path(settings), alert_log(settings)} <= named
    assert all(p.exists() for p in named), [p for p in named if not p.exists()]
    run_logs = [p for p in named if p.name.startswith("millet_nightly_")]
    assert len(run_logs) == settings.demo_days
    assert all("build_features" in p.read_text() for p in run_logs)  # the tasks' own output went there


@pytest.mark.e2e
def test_each_night_has_a_line_per_stage_with_the_landing_lines_counted(demo):
    settings, out = demo
    for day in (settings.demo_start + timedelta(days=i) for i in range(settings.demo_days)):
        block = out[out.index(f"millet_nightly {day}: success"):]
        stages = [line.split()[0] for line in block.splitlines()[1:7]]
        assert stages == ["ingest", "build", "check", "publish", "lists", "report"], block[:2000]
        lines_in = int(re.search(r"ingest +\d+ feeds: ([\d,]+) lines", block).group(1).replace(",", ""))
        assert lines_in == _landing_lines(settings, day)


@pytest.mark.e2e
def test_the_sample_borrower_has_values_in_every_family(demo):
    _, out = demo
    counts = re.search(r"non-null / served per family\n\s+(.+)", out).group(1)
    per_family = dict(re.findall(r"(\w+) (\d+)/\d+", counts))
    assert len(per_family) == 6 and all(int(n) > 0 for n in per_family.values()), counts
    assert "decision: " in out


def _landing_lines(settings: Settings, day: date) -> int:
    total = 0
    for drop in settings.landing_dir.glob(f"*/dt={day}/*.gz"):
        with gzip.open(drop, "rb") as lines:
            total += sum(1 for _ in lines)
    return total
