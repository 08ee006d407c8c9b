"""
### millet_nightly

Every night, for the logical date `ds` (the day that ended: a daily data interval, run once it is over),
once the day's drops are due (their cut-off, expectations/feeds.yml): ingest the consent feed, apply the
day's erasure requests and consent withdrawals (the people removed from every zone), then ingest each
landing channel's drop into bronze (behaviour of users who declined is excluded), delete landing drops
and quarantine past their retention, check each feed's day, build the feature snapshot with dbt, check
it with Great Expectations, reconcile the lender's repayments with the bank's, and publish it through
Feast; then the served models score the published day: the early-warning list of borrowers with an open
loan and the pre-approval list (skipped until `millet train` serves the models).
A failed critical quality check stops the run before anything is published; its findings, and the
failure of any task, are alerted (the alert log, then each configured sink).
Each task waits for its own run of the day before (`depends_on_past`): a day's dedupe and incremental
models build on the previous day, so after a failed day nothing later runs until it is fixed.

Wiring only: every task calls a function of the `millet` package, imported inside the task.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import CronDataIntervalTimetable, Param, dag, task

from millet.alerts import task_failed
from millet.settings import get_settings

_settings = get_settings()  # reads environment variables only; nothing heavy at parse time


@dag(
    dag_id="millet_nightly",
    # A data interval, not Airflow 3's default trigger: the run for day D starts after D has ended.
    schedule=CronDataIntervalTimetable("@daily", timezone="UTC"),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["millet", "features", "credit-risk"],
    params={"rebase": Param(False, type="boolean", description="Rebuild every window and the loan book "
                            "from history instead of rolling yesterday's state forward, and compare the two "
                            "(also done every MILLET_REBASE_EVERY_DAYS days).")},
    default_args={
        "depends_on_past": True,
        "retries": _settings.task_retries,
        "retry_delay": pendulum.duration(seconds=_settings.task_retry_delay_s),
        "execution_timeout": pendulum.duration(seconds=_settings.task_timeout_s),
        "on_failure_callback": task_failed,  # to the alert log and every configured sink
    },
)
def millet_nightly():
    # Not depends_on_past: it waits for a clock, and runs made before it existed have no instance of it.
    @task.sensor(mode="reschedule", poke_interval=300, timeout=2 * 86400, depends_on_past=False)
    def wait_for_the_cutoff(ds: str | None = None, dag_run=None) -> bool:
        from millet.quality.feeds import run_may_start

        return run_may_start(ds, dag_run.run_type)

    @task
    def ingest_consent(ds: str | None = None) -> dict:
        from millet.contracts import consent_feed
        from millet.ingest import ingest_channel_day

        return ingest_channel_day(consent_feed(), ds)

    @task
    def apply_erasures(ds: str | None = None) -> dict:
        from millet.privacy.erasure import apply_erasures as apply

        return apply(ds)

    @task
    def list_channels() -> list[str]:
        from millet.contracts import event_channels

        return event_channels()

    @task(max_active_tis_per_dagrun=4)
    def ingest_channel(channel: str, ds: str | None = None) -> dict:
        from millet.ingest import ingest_channel_day

        return ingest_channel_day(channel, ds)

    @task
    def purge_expired(manifests: list[dict], ds: str | None = None) -> dict:
        from millet.ingest.retention import purge_expired as purge

        return purge(ds)

    @task
    def check_feeds(manifests: list[dict], ds: str | None = None) -> dict:
        from millet.quality.feeds import check_feeds as check

        return check(ds)

    @task
    def build_features(feeds: dict, ds: str | None = None, params: dict | None = None) -> dict:
        from millet.transform import build_features as build

        return build(ds, rebase=params["rebase"])

    @task
    def check_features(snapshots: dict, ds: str | None = None) -> dict:
        from millet.quality import check_features as check

        return check(ds)

    @task
    def reconcile_repayments(snapshots: dict, ds: str | None = None) -> dict:
        from millet.quality.reconcile import reconcile_repayments as reconcile

        return reconcile(ds)

    @task
    def publish_features(quality: list[dict], ds: str | None = None) -> dict:
        from millet.serving import publish_features as publish

        return publish(ds)

    @task
    def track_borrowers(published: dict, ds: str | None = None) -> dict:
        from millet.scoring.lists import EARLY_WARNING

        return _skipped_without_a_model(EARLY_WARNING, ds)

    @task
    def list_pre_approvals(published: dict, ds: str | None = None) -> dict:
        from millet.scoring.lists import PRE_APPROVAL

        return _skipped_without_a_model(PRE_APPROVAL, ds)

    @task(trigger_rule="all_done")  # also, above all, on a night a check failed: the alerts link to it
    def write_report(ds: str | None = None) -> str:
        from millet.quality.report import write_report as write

        return str(write(ds))

    manifests = ingest_channel.expand(channel=list_channels())
    # Consent decides which behaviour events may be kept; tombstones keep the forgotten out.
    wait_for_the_cutoff() >> ingest_consent() >> apply_erasures() >> manifests
    snapshots = build_features(check_feeds(manifests))  # a missing or broken feed builds nothing
    purge_expired(manifests)  # landing and quarantine past their retention, once the day is in bronze
    checks = [check_features(snapshots), reconcile_repayments(snapshots)]
    published = publish_features(checks)
    track_borrowers(published), list_pre_approvals(published)  # from the published day only
    checks >> write_report()


def _skipped_without_a_model(name: str, ds: str) -> dict:
    """A list the models drive is skipped, not failed, until `millet train` serves them."""
    from airflow.sdk.exceptions import AirflowSkipException

    from millet.scoring.lists import make_list
    from millet.scoring.registry import NoModel

    try:
        return make_list(name, ds)
    except NoModel as exc:
        raise AirflowSkipException(str(exc)) from None


millet_nightly()
