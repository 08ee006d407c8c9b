"""The nightly world the end-to-end tests share: the real DAG, run through Airflow for two days."""

from datetime import date

import pytest

from millet.orchestrate import run_dag
from millet.settings import get_settings
from millet.simulate import simulate
from millet.simulate.faults import Faults

DAYS = ["2026-01-01", "2026-01-02"]


@pytest.fixture(scope="session")
def nightly():
    settings = get_settings()
    simulate(settings.landing_dir, users=4000, days=len(DAYS), start=date.fromisoformat(DAYS[0]), seed=5,
             faults=Faults(duplicate=0.05, malformed=0.1))
    for day in DAYS:
        assert run_dag(day) == "success"
    return settings
