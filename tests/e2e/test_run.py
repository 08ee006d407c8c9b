"""`run_dag(day, settings)`: one real DAG run with exactly the settings it is given, and a clear refusal,
not an endless wait, for a day whose day before did not succeed (by `run_dag` and by `backfill`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date

import pytest

from millet.settings import Settings
from millet.simulate import simulate
from millet.simulate.faults import Faults
from tests.conftest import TEST_KEY

DAYS = ["2026-04-01", "2026-04-02"]

# In a process of its own: Airflow reads its configuration once per process. Its environment names
# another data root, which the run must not use.
RUN_WITH_SETTINGS = """
import json, sys
from millet.orchestrate import DagRunFailed, run_dag
from millet.settings import Settings

settings = Settings(data_root=sys.argv[1], pseudonym_key=sys.argv[2], task_retries=0)
first, second = sys.argv[3:5]
state = run_dag(first, settings)
from airflow.models.dagrun import DagRun  # configured by run_dag, from the settings
from airflow.utils.session import create_session
with create_session() as session:  # an operator marks the first day failed (Airflow's "Mark failed")
    session.query(DagRun).filter(DagRun.run_id.like("manual__%")).one().set_state("failed")
try:
    run_dag(second, settings)
    refused = None
except DagRunFailed as exc:
    refused = str(exc)
from millet.orchestrate import backfill
try:  # Airflow itself would run a backfill's first day whatever the day before it did
    backfill(second, second, settings)
    backfill_refused = None
except DagRunFailed as exc:
    backfill_refused = str(exc)
print(json.dumps({"state": state, "refused": refused, "backfill_refused": backfill_refused}))
"""


@pytest.mark.e2e
def test_run_dag_uses_the_settings_it_is_given_and_refuses_a_day_after_a_failed_one(tmp_path):
    settings = Settings(data_root=tmp_path / "given", pseudonym_key=TEST_KEY.decode())
    simulate(settings.landing_dir, users=300, days=len(DAYS), start=date.fromisoformat(DAYS[0]), seed=2,
             faults=Faults())
    elsewhere = tmp_path / "from-the-environment"
    env = {**os.environ, "MILLET_DATA_ROOT": str(elsewhere)}
    env = {k: v for k, v in env.items() if not k.startswith("AIRFLOW")}  # the session's own Airflow
    done = subprocess.run([sys.executable, "-c", RUN_WITH_SETTINGS, str(settings.data_root),
                           TEST_KEY.decode(), *DAYS], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    outcome = json.loads(done.stdout.strip().splitlines()[-1])

    assert outcome["state"] == "success"
    assert any((settings.bronze_dir / "device").rglob("*.parquet"))
    assert any(settings.snapshots_dir.rglob("*.parquet"))
    assert not elsewhere.exists()  # nothing went where the environment pointed
    assert (settings.airflow_home / "logs" / "runs" / f"millet_nightly_{DAYS[0]}.log").stat().st_size > 0
    for refused in (outcome["refused"], outcome["backfill_refused"]):  # mutation: backfill() unchecked
        assert refused and f"the run for {DAYS[0]} ended failed" in refused
        assert f"millet run --date {DAYS[0]}" in refused
