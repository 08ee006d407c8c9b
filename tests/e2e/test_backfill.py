"""`millet backfill`: Airflow's own backfill, executed by a real scheduler, loads each day once."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import date
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from millet.contracts import contracts
from millet.settings import Settings
from millet.simulate import simulate
from millet.simulate.faults import Faults
from tests.conftest import TEST_KEY

DAYS = ["2026-03-01", "2026-03-02", "2026-03-03"]


def _backfill(settings: Settings, start: str, end: str) -> dict[str, str]:
    """The CLI, as a person runs it, in a process of its own (Airflow reads its config once per process)."""
    env = {**os.environ, **settings.millet_environ(), "MILLET_AIRFLOW_LOG_LEVEL": "WARNING"}
    done = subprocess.run([str(Path(sys.executable).with_name("millet")), "backfill", "--start", start,
                           "--end", end], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return dict(re.findall(r"^(\d{4}-\d{2}-\d{2}): (.+)$", done.stdout, re.MULTILINE))


@pytest.mark.e2e
def test_a_backfill_loads_each_day_once_and_a_second_one_skips_loaded_days(tmp_path):
    settings = Settings(data_root=tmp_path / "data", secrets_dir=tmp_path / "secrets",
                        pseudonym_key=TEST_KEY.decode(), task_retries=0)
    # Late and re-sent events cross day boundaries: each must still be loaded exactly once.
    simulate(settings.landing_dir, users=300, days=len(DAYS), start=date.fromisoformat(DAYS[0]), seed=3,
             faults=Faults(duplicate=0.05, late=0.05, malformed=0.01), truth_dir=settings.truth_dir)

    assert _backfill(settings, DAYS[0], DAYS[1]) == {DAYS[0]: "success", DAYS[1]: "success"}
    day_two = _outputs_of(settings, DAYS[1])
    assert _backfill(settings, DAYS[1], DAYS[2]) == {DAYS[1]: "already exists", DAYS[2]: "success"}

    assert _outputs_of(settings, DAYS[1]) == day_two  # not loaded again: same bytes, same write times
    runs = sorted(p.name for p in (settings.airflow_home / "logs" / "dag_id=millet_nightly").iterdir())
    assert runs == [f"run_id=backfill__{day}T00:00:00+00:00" for day in DAYS]  # and no run for "today"
    for channel in contracts():
        for day in DAYS:
            manifest = settings.manifests_dir / "ingest" / channel / f"dt={day}.json"
            assert json.loads(manifest.read_text())["balanced"], manifest
        ids = pq.read_table(settings.bronze_dir / channel, columns=["event_id"]).column(0).to_pylist()
        assert len(ids) == len(set(ids)), f"{channel}: an event was loaded on two days"
    assert Path(settings.snapshots_dir).exists() and any(settings.snapshots_dir.rglob("*.parquet"))


def _outputs_of(settings: Settings, day: str) -> dict[str, tuple[bytes, int]]:
    """Every file that day's run wrote under bronze and manifests, with its bytes and write time."""
    files = [*settings.bronze_dir.glob(f"*/dt={day}/*"), *settings.manifests_dir.rglob(f"dt={day}.json")]
    assert files
    return {str(f): (f.read_bytes(), f.stat().st_mtime_ns) for f in files}
