import os
from datetime import timedelta

from millet.orchestrate import DAG_ID, load_dag
from millet.settings import Settings, get_settings


def test_dag_folder_imports_cleanly_and_wires_the_expected_graph():
    dag = load_dag()  # raises if the folder has any import error
    assert dag.dag_id == DAG_ID
    edges = {(up, down) for down in dag.task_ids for up in dag.get_task(down).upstream_task_ids}
    assert edges == {
        ("list_channels", "ingest_channel"),
        ("wait_for_the_cutoff", "ingest_consent"),  # a scheduled night starts once its drops are due
        ("ingest_consent", "apply_erasures"),
        ("apply_erasures", "ingest_channel"),  # tombstones first: a forgotten person's events stay out
        ("ingest_channel", "check_feeds"),
        ("ingest_channel", "purge_expired"),  # a drop is deleted only once its day is in bronze
        ("check_feeds", "build_features"),
        ("build_features", "check_features"),
        ("build_features", "reconcile_repayments"),
        ("check_features", "publish_features"),
        ("reconcile_repayments", "publish_features"),  # a diverging bank feed stops publication too
        ("publish_features", "track_borrowers"),  # the lists score the published day only
        ("publish_features", "list_pre_approvals"),
        ("check_features", "write_report"),
        ("reconcile_repayments", "write_report"),
    }
    assert all(task.on_failure_callback for task in dag.tasks)  # every task's failure is alerted
    assert not dag.catchup


def test_the_scheduled_run_for_a_day_starts_after_it_ended_and_waits_for_its_drops():
    """Airflow 3 makes `@daily` a trigger: the run for day D at 00:00 on D, before any of D's drops exist.
    The scheduler's own timetable (the DAG's, as the scheduler decodes it) and the DAG's first task, the
    cut-off wait. Mutation that fails it: schedule="@daily"."""
    dag = load_dag()  # first: it configures Airflow, which the imports below read
    import pendulum
    from airflow.serialization.decoders import decode_timetable
    from airflow.serialization.encoders import encode_timetable
    from airflow.timetables.base import TimeRestriction

    from millet.quality.feeds import drops_due, run_may_start

    timetable = decode_timetable(encode_timetable(dag.timetable))
    day = pendulum.datetime(2026, 3, 5, tz="UTC")
    run = timetable.next_dagrun_info(last_automated_data_interval=None,
                                     restriction=TimeRestriction(earliest=day, latest=None, catchup=True))
    assert run.logical_date == day  # ds: the day the run is for
    assert run.run_after == day.add(days=1)  # started once that day is over
    due = day.add(days=1, hours=2)  # expectations/feeds.yml: delivery_cutoff_hours 2
    assert not drops_due("2026-03-05", now=due.subtract(seconds=1)) and drops_due("2026-03-05", now=due)
    # A scheduled run waits for it; `millet run` (manual) and a backfill start at once, on any day.
    early = due.subtract(hours=3)
    assert [run_may_start("2026-03-05", kind, now=early) for kind in ("scheduled", "manual", "backfill")] == [
        False, True, True]
    assert run_may_start("2026-03-05", "scheduled", now=due)
    sensor = dag.get_task("wait_for_the_cutoff")  # waits for a clock: no run before it need have it
    assert sensor.mode == "reschedule" and sensor.depends_on_past is False


def _parsed_under(monkeypatch, workdir, **env: str):
    """A fresh parse of the DAG folder with no MILLET_* variable set (and no .env file) but `env`.
    The tests' session sets MILLET_TASK_RETRIES=0; what ships is what a bare environment gets."""
    settings = get_settings()
    settings.export_for_airflow()  # Airflow reads its home when first imported: the session's, not ~/airflow
    from airflow.dag_processing.dagbag import DagBag

    for name in [n for n in os.environ if n.startswith("MILLET_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(workdir)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    bag = DagBag(str(settings.dags_dir))  # executes the DAG file again: its settings are read anew
    assert not bag.import_errors
    return bag.dags[DAG_ID]


def _default(field: str):
    return Settings.model_fields[field].default


def test_the_dag_ships_with_the_settings_defaults_for_retries_and_depends_on_past(monkeypatch, tmp_path):
    dag = _parsed_under(monkeypatch, tmp_path)
    assert _default("task_retries") > 0  # what ships retries; only the tests' environment says 0
    for task in dag.tasks:
        assert task.retries == _default("task_retries"), task.task_id
        assert task.retry_delay == timedelta(seconds=_default("task_retry_delay_s")), task.task_id
        assert task.depends_on_past is (task.task_id != "wait_for_the_cutoff"), task.task_id


def test_changed_retry_settings_reach_every_task(monkeypatch, tmp_path):
    retries, delay_s = _default("task_retries") + 3, _default("task_retry_delay_s") + 17
    dag = _parsed_under(monkeypatch, tmp_path, MILLET_TASK_RETRIES=str(retries),
                        MILLET_TASK_RETRY_DELAY_S=str(delay_s))
    assert {(t.retries, t.retry_delay) for t in dag.tasks} == {(retries, timedelta(seconds=delay_s))}
