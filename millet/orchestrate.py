"""Run the real `millet_nightly` DAG through Airflow: one logical date (`dag.test`), or a backfill."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from datetime import UTC, date, datetime
from pathlib import Path

from millet.settings import Settings, get_settings

DAG_ID = "millet_nightly"
BACKFILL_USER = "millet"  # who Airflow records as having created `millet backfill`'s backfills


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
    with _metadata_db(settings):
        from airflow.utils import db

        db.initdb()  # creates or upgrades; a no-op when the schema is current


def metadata_db_is_current(settings: Settings) -> bool:
    """Whether Airflow's metadata database holds the schema this Airflow expects; looks, and creates or
    migrates no schema (no database yet, or one an Airflow upgrade has not migrated: False)."""
    with _metadata_db(settings):
        from airflow.utils import db

        try:
            db.check_migrations(timeout=0)  # `airflow db check-migrations`: one look when the timeout is 0
        except TimeoutError:
            return False
    return True


@contextmanager
def _metadata_db(settings: Settings):
    """Airflow configured for these settings, and its database's connection errors said plainly."""
    _refuse_another_airflow_home(settings)
    settings.export_for_airflow()  # before the first `import airflow`: it reads AIRFLOW_HOME at import
    settings.airflow_home.mkdir(parents=True, exist_ok=True)
    from sqlalchemy.exc import OperationalError

    try:
        yield
    except OperationalError as exc:
        where = _shown(settings.airflow_database)
        reason = str(exc.orig or exc).strip().splitlines()[0]
        raise DagRunFailed(f"Airflow's metadata database {where} did not answer ({reason}); start it, or "
                           "correct MILLET_AIRFLOW_DATABASE_URL") from None


def _shown(database_url: str) -> str:
    """A database URL for a message (which may reach a log): without its password."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(database_url).render_as_string(hide_password=True)
    except ArgumentError:
        return "a database whose URL SQLAlchemy cannot read"


def _refuse_another_airflow_home(settings: Settings) -> None:
    # Airflow reads its configuration once per process; a second data root would silently get the first's.
    if "airflow.configuration" not in sys.modules:
        return
    from airflow.configuration import conf

    current = conf.get("database", "sql_alchemy_conn")
    if current != settings.airflow_database:
        raise DagRunFailed(f"this process already uses Airflow with {_shown(current)}; settings for another "
                           f"data root ({settings.root}) need a process of their own")


def run_dag(day: date | str, settings: Settings | None = None, rebase: bool = False) -> str:
    """One DAG run for logical date `day` with these settings; returns "success" or raises DagRunFailed.
    `rebase`: the run's `rebase` param (rebuild the carried state from history, and compare).

    Airflow's output (and dbt's, GX's and Feast's inside the tasks) goes to a log file whose path every
    failure names, with the day and the failed tasks."""
    settings = settings or get_settings()
    _refuse_the_future(day)
    log = run_log(day, settings)
    with output_to(log):
        dag = load_dag(settings)
        _refuse_after_an_unfinished_day(day)
        run = dag.test(logical_date=_midnight(day), run_conf={"rebase": rebase})
    if run.state != "success":
        failed = ", ".join(_failed_tasks(run)) or "no task failed; the run itself did not finish"
        raise DagRunFailed(f"{DAG_ID} for {day} ended {run.state} ({failed}); see {log}")
    return run.state


def _refuse_the_future(day: date | str) -> None:
    from millet.transform import AsOfInFuture, as_of_date

    try:
        as_of_date(day)
    except AsOfInFuture as exc:
        raise DagRunFailed(str(exc)) from None


def run_log(day: date | str, settings: Settings) -> Path:
    return settings.airflow_home / "logs" / "runs" / f"{DAG_ID}_{day}.log"


@contextmanager
def output_to(log: Path):
    """Send this process's stdout and stderr (file descriptors: subprocesses' too) to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush(), sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log, "ab") as out:
        os.dup2(out.fileno(), 1), os.dup2(out.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush(), sys.stderr.flush()
            os.dup2(saved[0], 1), os.dup2(saved[1], 2)
            os.close(saved[0]), os.close(saved[1])


def _refuse_after_an_unfinished_day(day: date | str) -> None:
    """Every task waits for its run of the day before (depends_on_past). Airflow's deadlock detection is
    off for such tasks, so a day after a failed or unfinished one would wait forever: refuse it now."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        previous = session.scalars(
            select(DagRun).where(DagRun.dag_id == DAG_ID, DagRun.logical_date < _midnight(day))
            .order_by(DagRun.logical_date.desc()).limit(1)).first()
        if previous is not None and previous.state != "success":
            earlier = previous.logical_date.date()
            how = ("was interrupted (Airflow still marks it running)" if previous.state == "running"
                   else f"ended {previous.state}")
            raise DagRunFailed(f"{DAG_ID} for {day} cannot start: the run for {earlier} {how}, and each "
                               f"day builds on the one before; re-run {earlier} first "
                               f"(millet run --date {earlier})")


def recent_runs(settings: Settings, limit: int = 7) -> list[dict] | None:
    """The latest `limit` runs of the DAG, newest first: logical day, state, when it ended, its kind.
    None when the metadata database is not at Airflow's current schema: a look neither creates nor
    migrates it (a run does)."""
    if not metadata_db_is_current(settings):
        return None
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with _metadata_db(settings), create_session() as session:  # it may stop answering after the look
        runs = session.scalars(select(DagRun).where(DagRun.dag_id == DAG_ID)
                               .order_by(DagRun.logical_date.desc()).limit(limit)).all()
        return [{"day": run.logical_date.date(), "state": str(run.state), "ended": run.end_date,
                 "run_type": str(run.run_type)} for run in runs]


def task_times(day: date | str) -> dict[str, tuple[str, float]]:
    """Each task of the day's run: its state and its seconds (a mapped task's instances added up)."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    times: dict[str, tuple[str, float]] = {}
    with create_session() as session:
        run = session.scalars(select(DagRun).where(DagRun.dag_id == DAG_ID,
                                                   DagRun.logical_date == _midnight(day))).first()
        for ti in run.get_task_instances(session=session) if run else []:
            _, seconds = times.get(ti.task_id, ("", 0.0))
            times[ti.task_id] = (str(ti.state), seconds + (ti.duration or 0.0))
    return times


def _failed_tasks(run) -> list[str]:
    return [f"task {_task_name(ti.task_id, ti.map_index)} failed"
            for ti in run.get_task_instances() if ti.state == "failed"]


def _task_name(task_id: str, map_index: int) -> str:
    return task_id if map_index < 0 else f"{task_id}[{map_index}]"


def _midnight(day: date | str) -> datetime:
    return datetime.combine(date.fromisoformat(str(day)), datetime.min.time(), UTC)


class BackfillFailed(DagRunFailed):
    pass


def backfill(start: date | str, end: date | str, settings: Settings | None = None,
             reprocess: str = "failed") -> dict[str, str]:
    """Airflow's own backfill of the DAG over [start, end], executed by a real scheduler.

    One run per day, in date order, one at a time: each day's dedupe and incremental models build
    on the day before. A day whose run already succeeded is not run again unless `reprocess` is
    "completed"; "failed" (the default) re-runs failed days only, so a backfill loads each day once.
    ("none" is refused by Airflow for a DAG whose tasks depend on the past, as this one's do.)
    It refuses, before anything runs, a range that ends today or later (Airflow would leave out a day not
    yet over) and one whose day before did not succeed (as `run_dag` does: Airflow runs a backfill's
    first day whatever the day before it did). It always ends: after a failed day (the
    days after it cannot run), when no task has changed
    state for `backfill_stall_s`, or after `backfill_timeout_s`, it cancels the backfill, stops the
    services and raises BackfillFailed naming the day, the task and its log. One runs at a time per data
    root; it first ends a backfill a killed one left active (_end_backfills_of_killed_commands).
    Returns {day: final run state, or why no run was created}.
    """
    settings = settings or get_settings()
    _refuse_the_future(end)
    today = datetime.now(UTC).date()
    if date.fromisoformat(str(end)) >= today:  # Airflow creates no run before its data interval ends
        raise BackfillFailed(f"{end} is not over yet: a backfill runs days that have ended; end the range "
                             f"before {today}, and run {today} with `millet run --date {today}`")
    with _one_backfill_at_a_time(settings) as lock:
        ensure_metadata_db(settings)
        with _metadata_db(settings):
            _end_backfills_of_killed_commands()
            _refuse_after_an_unfinished_day(start)  # Airflow lets a backfill's first day past depends_on_past
        from millet.airflow_services import airflow_services

        with airflow_services(settings, hold=(lock.fileno(),)) as services:
            _wait_for_dag(services, settings)
            with _unpaused():
                backfill_id = _create_backfill(start, end, reprocess)
                try:
                    _watch(backfill_id, services, settings)
                finally:
                    _end_backfill(backfill_id)  # else it stays active and blocks every later backfill
    return _backfill_outcome(backfill_id, settings)


@contextmanager
def _one_backfill_at_a_time(settings: Settings):
    """Held while `millet backfill` runs for this data root, and by its services' supervisor until they
    have stopped; the kernel lets go of it however they end (SIGKILL included). So a backfill of Millet's
    found active by the holder was left by a killed command whose services are gone, not by a live one."""
    import fcntl

    path = settings.airflow_home / "backfill.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BackfillFailed(f"another `millet backfill` of {settings.root} is running, or its "
                                 "services are stopping; run this again when it has ended") from None
        yield lock


def _end_backfills_of_killed_commands() -> None:
    """End the backfills `millet backfill` created and could not end: killed (SIGKILL, a closed terminal)
    before its own clean-up, it left the backfill active, which makes Airflow refuse every later backfill
    of the DAG, and its running day running, which no backfill re-runs. The caller holds the lock, so no
    live command owns them. Backfills made by anyone else (`airflow backfill create`) are not touched."""
    from airflow.models.backfill import Backfill
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        left = session.scalars(select(Backfill.id).where(
            Backfill.dag_id == DAG_ID, Backfill.completed_at.is_(None),
            Backfill.triggering_user_name == BACKFILL_USER)).all()
    for backfill_id in left:
        _end_backfill(backfill_id)
        print(f"ended backfill {backfill_id}, left active by a `millet backfill` that was killed",
              file=sys.stderr)


def history(start: date | str, end: date | str, settings: Settings | None = None,
            on_stage=lambda stage, seconds, result: None) -> dict[str, dict]:
    """Every day of [start, end] in one pass, without a run per day (`millet backfill --one-pass`): each
    feed's drops ingested over the range with each night's erasures in their place (ingest_range), landing
    and quarantine past their retention removed, every daily snapshot built by one history build (the same
    snapshots as night-by-night runs: millet.transform.build_history), then the last day checked,
    reconciled, published and its nightly lists written (where their models are served) as the DAG does
    after its build. Each day's feeds are not profiled (their bad rows are still quarantined); a failed
    check of the last day publishes nothing. `on_stage` hears each stage's name, duration and result;
    the tools' own messages (dbt's errors, GX's, Feast's, the workers') go to `history_log`. Returns
    each day's snapshot paths."""
    import time

    from millet.ingest.history import ingest_range
    from millet.ingest.retention import purge_expired
    from millet.quality import check_features
    from millet.quality.reconcile import reconcile_repayments
    from millet.quality.report import write_report
    from millet.scoring.lists import nightly_lists
    from millet.serving import publish_features
    from millet.transform.dbt import as_of_date, build_history

    settings = settings or get_settings()
    first, last = as_of_date(start), as_of_date(end)
    stages = [("ingest", lambda: (ingest_range(first, last, settings), purge_expired(last, settings))),
              ("build", lambda: build_history(first, last, settings)),
              ("check", lambda: (check_features(last, settings), reconcile_repayments(last, settings))),
              ("publish", lambda: publish_features(last, settings)),
              ("lists", lambda: nightly_lists(str(last), settings))]
    results, log = {}, history_log(first, last, settings)
    try:
        for name, stage in stages:
            began = time.monotonic()
            with output_to(log):
                results[name] = stage()
            on_stage(name, time.monotonic() - began, results[name])
    finally:
        with output_to(log):
            write_report(last, settings)  # as the DAG's report task: also, above all, when a check failed
    return results["build"]


def history_log(first: date, last: date, settings: Settings) -> Path:
    return settings.logs_dir / f"history_{first}_{last}.log"


_POLL_S = 2
_PARSE_TIMEOUT_S = 300  # a cold start on a busy two-core machine takes about a minute


def _wait_for_dag(services, settings: Settings) -> None:
    import time

    deadline = time.monotonic() + _PARSE_TIMEOUT_S
    while not _dag_is_parsed():
        services.check()
        if time.monotonic() > deadline:
            raise BackfillFailed(f"the DAG processor did not parse {DAG_ID} within "
                                 f"{_PARSE_TIMEOUT_S} s; see {services.log_dir}")
        time.sleep(_POLL_S)


def _watch(backfill_id: int, services, settings: Settings) -> None:
    """Wait for the backfill to complete, a day to fail, a stall or the overall timeout."""
    import time

    started = last_change = time.monotonic()
    seen = None
    while not _backfill_is_complete(backfill_id):
        services.check()
        now, progress = time.monotonic(), _progress(backfill_id)
        if progress != seen:
            seen, last_change = progress, now
        if any(state == "failed" for _, state, _ in progress[0]):
            return  # the days after a failed day wait for it forever (depends_on_past): end here
        if now - last_change > settings.backfill_stall_s:
            raise BackfillFailed(f"backfill stalled: no task changed state for "
                                 f"{settings.backfill_stall_s} s; {_waiting_tasks(progress, settings)}; "
                                 "cancelled")
        if now - started > settings.backfill_timeout_s:
            raise BackfillFailed(f"backfill timed out after {settings.backfill_timeout_s} s; "
                                 f"{_waiting_tasks(progress, settings)}; cancelled")
        time.sleep(_POLL_S)


def _progress(backfill_id: int) -> tuple[tuple, tuple]:
    """(runs: (day, state, run_id)…, task instances: (run_id, task, map_index, try, state)…), sorted."""
    from airflow.models.backfill import BackfillDagRun
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance as TI
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        runs = session.execute(
            select(DagRun.logical_date, DagRun.state, DagRun.run_id)
            .join(BackfillDagRun, BackfillDagRun.dag_run_id == DagRun.id)
            .where(BackfillDagRun.backfill_id == backfill_id).order_by(DagRun.logical_date)).all()
        tis = session.execute(
            select(TI.run_id, TI.task_id, TI.map_index, TI.try_number, TI.state)
            .where(TI.dag_id == DAG_ID, TI.run_id.in_([r.run_id for r in runs]))
            .order_by(TI.run_id, TI.task_id, TI.map_index)).all()
    return (tuple((str(day.date()), str(state), run_id) for day, state, run_id in runs),
            tuple(tuple(str(v) for v in ti) for ti in tis))


def _waiting_tasks(progress: tuple[tuple, tuple], settings: Settings) -> str:
    runs, tis = progress
    day_of = {run_id: day for day, _, run_id in runs}
    waiting = [f"{day_of[run_id]} task {_task_name(task, int(index))} {state} "
               f"(log: {task_log(settings, run_id, task, int(index), int(tries))})"
               for run_id, task, index, tries, state in tis if state in ("queued", "scheduled", "running",
                                                                         "up_for_retry", "restarting")]
    return "; ".join(waiting) or f"no task was queued; see {settings.airflow_home / 'services'}"


def task_log(settings: Settings, run_id: str, task_id: str, map_index: int, try_number: int) -> Path:
    """Where Airflow's default log_filename_template puts a task try's log."""
    folder = settings.airflow_home / "logs" / f"dag_id={DAG_ID}" / f"run_id={run_id}" / f"task_id={task_id}"
    if map_index >= 0:
        folder /= f"map_index={map_index}"
    return folder / f"attempt={max(try_number, 1)}.log"


def _create_backfill(start: date | str, end: date | str, reprocess: str) -> int:
    # What `airflow backfill create` and the REST API call; in-process so the id comes back typed.
    from airflow.exceptions import AirflowException
    from airflow.models.backfill import ReprocessBehavior, _create_backfill
    from sqlalchemy.exc import OperationalError

    try:
        created = retry_when_locked(lambda: _create_backfill(
            dag_id=DAG_ID, from_date=_midnight(start), to_date=_midnight(end), max_active_runs=1,
            reverse=False, dag_run_conf=None, triggering_user_name=BACKFILL_USER,
            reprocess_behavior=ReprocessBehavior(reprocess)))
    except (AirflowException, ValueError) as exc:  # e.g. another backfill still running, no runs to make
        raise BackfillFailed(f"Airflow refused the backfill: {exc}") from exc
    except OperationalError as exc:
        raise BackfillFailed(f"Airflow could not create the backfill: {exc.orig}") from exc
    return created.id


def retry_when_locked(write, tries: int = 5, wait=None):
    """`write()`, again after a wait while the metadata database reports its lock taken: Airflow undoes
    a half-made backfill on a lock error and asks for a retry (its REST API answers 503). SQLite fails
    at once, without waiting, when two connections would deadlock on its lock."""
    import time

    from airflow.utils.sqlalchemy import is_lock_not_available_error
    from sqlalchemy.exc import OperationalError

    wait = wait or time.sleep
    for attempt in range(1, tries + 1):
        try:
            return write()
        except OperationalError as exc:
            if attempt == tries or not is_lock_not_available_error(exc):
                raise
            wait(attempt * _POLL_S)


def _end_backfill(backfill_id: int) -> None:
    """Mark a finished backfill complete, as the scheduler would on its next look (else it stays active
    and blocks every later backfill). An unfinished one is cancelled as the REST API does (paused, its
    queued runs failed, marked complete), and its runs still running are failed: after a failed day
    they wait for it forever."""
    from airflow.models.backfill import Backfill, BackfillDagRun
    from airflow.models.dagrun import DagRun
    from airflow.utils import timezone
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        backfill = session.get(Backfill, backfill_id)
        if backfill.completed_at is not None:
            return
        if _runs_finished(backfill_id, session):  # done, but the scheduler has not looked yet
            backfill.completed_at = timezone.utcnow()
            return
        from airflow.api_fastapi.core_api.routes.public.backfills import cancel_backfill  # heavy: the API

        cancel_backfill(backfill_id, session)
        for run in session.scalars(select(DagRun).join(BackfillDagRun, BackfillDagRun.dag_run_id == DagRun.id)
                                   .where(BackfillDagRun.backfill_id == backfill_id,
                                          DagRun.state == "running")):
            run.set_state("failed")


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
        marked = session.get(Backfill, backfill_id).completed_at is not None
        return marked or _runs_finished(backfill_id, session)


def _runs_finished(backfill_id: int, session) -> bool:
    """The scheduler's own test of a finished backfill (it has days, and none of its runs is queued or
    running), looked at now: the scheduler marks the backfill complete only every 30 s."""
    from airflow.models.backfill import BackfillDagRun
    from airflow.models.dagrun import DagRun
    from sqlalchemy import exists, select

    has_days = session.scalar(select(exists().where(BackfillDagRun.backfill_id == backfill_id)))
    unfinished = session.scalar(select(exists().where(DagRun.backfill_id == backfill_id,
                                                       DagRun.state.in_(("queued", "running")))))
    return bool(has_days) and not unfinished


NOT_RUN = "not run"  # how a backfill's outcome starts for a day nothing built
_NOT_RUN = f"{NOT_RUN}: an earlier day failed, or the backfill stopped"


def _backfill_outcome(backfill_id: int, settings: Settings) -> dict[str, str]:
    from airflow.models.backfill import BackfillDagRun, BackfillDagRunExceptionReason
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance as TI
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.execute(
            select(BackfillDagRun.logical_date, DagRun.state, DagRun.run_id, BackfillDagRun.exception_reason)
            .outerjoin(DagRun, DagRun.id == BackfillDagRun.dag_run_id)
            .where(BackfillDagRun.backfill_id == backfill_id)
            .order_by(BackfillDagRun.logical_date)
        ).all()
        failed = session.execute(select(TI.run_id, TI.task_id, TI.map_index, TI.try_number).where(
            TI.dag_id == DAG_ID, TI.state == "failed", TI.run_id.in_([r.run_id for r in rows]))).all()
    why = {}
    for run_id, task, index, tries in failed:
        why.setdefault(run_id, []).append(
            f"task {_task_name(task, index)} failed, log: {task_log(settings, run_id, task, index, tries)}")
    outcome = {}
    for logical, state, run_id, reason in rows:
        day, text = str(logical.date()), str(state or reason)
        if state == "failed":
            text += f" ({'; '.join(why.get(run_id, [_NOT_RUN]))})"
        elif reason == BackfillDagRunExceptionReason.IN_FLIGHT:  # Airflow leaves such a day alone
            text = (f"{NOT_RUN}: its earlier run is still marked running or queued (interrupted?); "
                    f"re-run it (millet run --date {day}), then backfill the days after it")
        outcome[day] = text
    return outcome
