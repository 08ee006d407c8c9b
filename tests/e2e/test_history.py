"""`millet backfill --one-pass`: a range's daily snapshots built at once, the last day checked and published.
(That the one-pass snapshots equal night-by-night ones is tests/integration/test_rolling_state.py's.)"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from millet.alerts import report_path
from millet.feature_spec import families
from millet.orchestrate import history_log
from millet.serving.store import online_features
from millet.settings import Settings
from millet.simulate import simulate
from millet.simulate.faults import Faults
from millet.transform import snapshot_path
from millet.transform.dbt import read_build
from tests.conftest import TEST_KEY

START = date(2026, 3, 1)
DAYS = 4
LAST = START + timedelta(days=DAYS - 1)


@pytest.mark.e2e
def test_one_pass_builds_every_day_then_checks_and_publishes_the_last(tmp_path):
    settings = Settings(data_root=tmp_path / "data", pseudonym_key=TEST_KEY.decode())
    simulate(settings.landing_dir, users=200, days=DAYS, start=START, seed=5, faults=Faults())
    env = {**os.environ, "MILLET_DATA_ROOT": str(settings.data_root)}
    done = subprocess.run([str(Path(sys.executable).parent / "millet"), "backfill", "--start", str(START),
                           "--end", str(LAST), "--one-pass"], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    stages = re.findall(r"^(\w+): (.+) in [\d.]+ s(.*)$", done.stdout, re.MULTILINE)
    assert [(name, span) for name, span, _ in stages] == [
        ("ingest", f"{DAYS} days"), ("build", f"{DAYS} days"), ("check", str(LAST)), ("publish", str(LAST)),
        ("lists", str(LAST))]
    # No model is served yet (`millet train` serves them): both lists are skipped, each saying why.
    no_model = f"no credit_risk model is served under {settings.models_dir}: run `millet train`"
    assert stages[-1][2] == f" (early_warning skipped: {no_model}; pre_approval skipped: {no_model})"
    # One line per stage, then where the snapshots and the log are; the tools' own messages are in the log.
    log = history_log(START, LAST, settings)
    assert done.stdout.splitlines()[len(stages):] == [
        f"snapshots {START} to {LAST}: {settings.snapshots_dir}; log (dbt, GX, Feast): {log}"]
    assert "Materializing" in log.read_text() and "Materializing" not in done.stdout + done.stderr

    days = [START + timedelta(days=n) for n in range(DAYS)]
    assert [read_build(day, settings)["state"] for day in days] == ["rebuilt"] + ["rolled"] * (DAYS - 1)
    # dbt tested the first night and the last day; the days between say they were not tested
    untested = ["dbt_tests" in read_build(day, settings) for day in days]
    assert untested == [False] + [True] * (DAYS - 2) + [False]
    for day in days:
        for fam in families():
            assert snapshot_path(fam.name, day, settings).exists(), (fam.name, day)
    # The last day is what the online store serves: a user's values read back through Feast.
    payments = pq.read_table(snapshot_path("payments", LAST, settings)).to_pylist()
    busiest = max(payments, key=lambda row: row["payments__attempts_count_30d"])
    online = online_features(busiest["user_key"], "credit_risk_v1", settings)
    assert online["payments__attempts_count_30d"] == busiest["payments__attempts_count_30d"] > 0
    assert report_path(str(LAST), settings).exists()  # the night's page, as the DAG writes it
