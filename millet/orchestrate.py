"""Run the real `millet_nightly` DAG through Airflow: one logical date (`dag.test`), or a backfill."""

from __future__ import annotations

from contextlib import contextmanager
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
    run = dag.test(logical_date=_midnight(day))
    if run.state != "success":
        raise DagRunFailed(f"{DAG_ID} for {day} ended {run.state}; see the task logs above")
    return run.state


def _midnight(day: date | str) -> datetime:
    return datetime.combine(date.fromisoformat(str(day)), datetime.min.time(), UTC)


class BackfillFailed(DagRunFailed):
    pass


def backfill(
    start: date | str,
    end: date | str,
    settings: Settings | None = None,
    reprocess: str = "failed",
    timeout_s: float | None = None,
) -> dict[str, str]:
    """Airflow's own backfill of the DAG over [start, end], executed by a real scheduler.

    One run per day, in date order, one at a time: each day's dedupe and incremental models build
    on the day before. A day whose run already succeeded is not run again unless `reprocess` is
    "completed"; "failed" (the default) re-runs failed days only, so a backfill loads each day once.
    ("none" is refused by Airflow for a DAG whose tasks depend on the past, as this one's do.)
    Returns {day: final run state, or why no run was created}.
    """
    settings = settings or get_settings()
    ensure_metadata_db(settings)
    from millet.airflow_services import airflow_services

    with airflow_services(settings) as services:
        _wait(_dag_is_parsed, services, "the DAG to be parsed", 300)
        with _unpaused():
            backfill_id = _create_backfill(start, end, reprocess)
            try:
                _wait(lambda: _backfill_is_complete(backfill_id), services, "the backfill", timeout_s)
            except BaseException:
                _cancel_backfill(backfill_id)  # else it stays active and blocks every later backfill
                raise
    return _backfill_outcome(backfill_id)


def _create_backfill(start: date | str, end: date | str, reprocess: str) -> int:
    # What `airflow backfill create` and the REST API call; in-process so the id comes back typed.
    from airflow.exceptions import AirflowException
    from airflow.models.backfill import ReprocessBehavior, _create_backfill

    try:
        created = _create_backfill(dag_id=DAG_ID, from_date=_midnight(start), to_date=_midnight(end),
                                   max_active_runs=1, reverse=False,
                                   dag_run_conf=None, triggering_user_name="millet",
                                   reprocess_behavior=ReprocessBehavior(reprocess))
    except (AirflowException, ValueError) as exc:  # e.g. another backfill still running, no runs to make
        raise BackfillFailed(f"Airflow refused the backfill: {exc}") from exc
    return created.id


def _cancel_backfill(backfill_id: int) -> None:
    """What the REST API's cancel does: pause it, fail its queued runs, mark it complete."""
    from airflow.api_fastapi.core_api.routes.public.backfills import cancel_backfill
    from airflow.utils.session import create_session

    with create_session() as session:
        if not _backfill_is_complete(backfill_id):
            cancel_backfill(backfill_id, session)


def _wait(done, services, what: str, timeout_s: float | None) -> None:
    import time

    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while not done():
        services.check()
        if deadline is not None and time.monotonic() > deadline:
            raise BackfillFailed(f"gave up on {what} after {timeout_s:.0f} s; see {services.log_dir}")
        time.sleep(2)


def _dag_is_parsed() -> bool:
    from airflow.models.dag import DagModel

    return DagModel.get_current(DAG_ID) is not None


@contextmanager
def _unpaused():
    """Queued runs of a paused DAG never start, backfill runs included; put the pause back after."""
    from airflow.models.dag import DagModel
    from airflow.utils.session import create_session

    with create_session() as session:
        model = session.get(DagModel, DAG_ID)
        was_paused, model.is_paused = model.is_paused, False
    try:
        yield
    finally:
        with create_session() as session:
            session.get(DagModel, DAG_ID).is_paused = was_paused


def _backfill_is_complete(backfill_id: int) -> bool:
    from airflow.models.backfill import Backfill
    from airflow.utils.session import create_session

    with create_session() as session:
        return session.get(Backfill, backfill_id).completed_at is not None


def _backfill_outcome(backfill_id: int) -> dict[str, str]:
    from airflow.models.backfill import BackfillDagRun
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.execute(
            select(BackfillDagRun.logical_date, DagRun.state, BackfillDagRun.exception_reason)
            .outerjoin(DagRun, DagRun.id == BackfillDagRun.dag_run_id)
            .where(BackfillDagRun.backfill_id == backfill_id)
            .order_by(BackfillDagRun.logical_date)
        ).all()
    return {str(logical.date()): str(state or reason) for logical, state, reason in rows}
