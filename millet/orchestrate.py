"""Run the real `millet_nightly` DAG through Airflow for one logical date (`dag.test`)."""

from __future__ import annotations

from datetime import UTC, date, datetime

from millet.settings import Settings, get_settings

DAG_ID = "millet_nightly"


class DagRunFailed(RuntimeError):
    pass


def load_dag(settings: Settings | None = None):
    settings = settings or get_settings()
    ensure_metadata_db(settings)
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(str(settings.dags_dir))
    if bag.import_errors:
        raise DagRunFailed(f"the DAG folder has import errors: {bag.import_errors}")
    return bag.get_dag(DAG_ID)


def ensure_metadata_db(settings: Settings) -> None:
    settings.export_for_airflow()  # before the first `import airflow`: it reads AIRFLOW_HOME at import
    settings.airflow_home.mkdir(parents=True, exist_ok=True)
    from airflow.utils import db

    db.initdb()  # creates or upgrades; a no-op when the schema is current


def run_dag(day: date | str, settings: Settings | None = None) -> str:
    """One DAG run for logical date `day`; returns the final state or raises DagRunFailed."""
    settings = settings or get_settings()
    dag = load_dag(settings)
    day = date.fromisoformat(str(day))
    run = dag.test(logical_date=datetime(day.year, day.month, day.day, tzinfo=UTC))
    if run.state != "success":
        raise DagRunFailed(f"{DAG_ID} for {day} ended {run.state}; see the task logs above")
    return run.state
