"""The whole millet_nightly DAG through Airflow (`dag.test`) on a tiny simulated ecosystem."""

from __future__ import annotations

import json
import math
import shutil
from collections import Counter, defaultdict
from datetime import UTC, date, datetime, time, timedelta

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import yaml
from pydantic import SecretStr

from millet.feature_spec import all_features
from millet.orchestrate import DAG_ID, load_dag, run_dag
from millet.quality import QualityGateFailed, check_features
from millet.serving import online_features, open_store
from millet.settings import get_settings
from millet.transform import snapshot_path
from millet.transform.dbt import is_rebase_day, read_build, state_models
from tests.conftest import TEST_KEY
from tests.e2e.conftest import DAYS
from tests.helpers import decoded_strings, hmac_key, landing_lines, parsed_rows

WINDOWS = (7, 30, 90)


def _landed_rows(settings) -> list[dict]:
    rows = []
    for day in DAYS:
        rows += parsed_rows(landing_lines(settings.landing_dir, "commerce", day))[0]
    return rows


def expected_features(rows: list[dict], account_id: str, as_of: str) -> dict:
    """The spine's commerce features, from the raw rows, by their written definitions."""
    end = date.fromisoformat(as_of)
    mine = [r for r in rows if r["account_id"] == account_id]
    out = {}
    for w in WINDOWS:
        in_window = [r for r in mine if end - timedelta(days=w) < _day(r) <= end]
        placed = [r for r in in_window if r["status"] == "placed"]
        instalment = [r for r in placed if r["payment_type"] == "instalment"]
        amounts = [r["amount"] for r in placed]
        out |= {
            f"commerce__orders_count_{w}d": len(placed),
            f"commerce__orders_days_since_last_{w}d": (end - max(map(_day, placed))).days if placed else None,
            f"commerce__order_amount_sum_{w}d": sum(amounts),
            f"commerce__order_amount_mean_{w}d": sum(amounts) / len(amounts) if amounts else None,
            f"commerce__order_amount_max_{w}d": max(amounts) if amounts else None,
            f"commerce__instalment_orders_count_{w}d": len(instalment),
            f"commerce__instalment_orders_share_{w}d": len(instalment) / len(placed) if placed else None,
            f"commerce__cancellations_count_{w}d": sum(r["status"] == "cancelled" for r in in_window),
        }
    return out


def _day(row: dict) -> date:
    return datetime.fromisoformat(row["event_ts"]).date()


def _same(actual, expected) -> bool:
    if expected is None or actual is None:
        return actual is expected
    return math.isclose(actual, expected, rel_tol=1e-6)  # features are float32


def _consent_by_account(settings) -> dict[str, bool]:
    """The hidden truth: who declined the use of ecosystem data."""
    users = pq.read_table(settings.truth_dir / "users.parquet", columns=["account_id", "consent"])
    return dict(zip(users.column(0).to_pylist(), users.column(1).to_pylist(), strict=True))


def _consent_as_landed(settings) -> dict[str, bool]:
    """What the consent feed says, from its valid lines; a user with no valid line has not agreed."""
    rows = [r for day in DAYS for r in parsed_rows(landing_lines(settings.landing_dir, "consent", day))[0]]
    latest = {}
    for r in sorted(rows, key=lambda r: (r["event_ts"], r["event_id"])):
        latest[r["account_id"]] = r["consent_given"]
    return defaultdict(bool, latest)


def test_online_features_of_a_known_user_match_an_independent_computation(nightly):
    rows = _landed_rows(nightly)
    consented = _consent_as_landed(nightly)
    orders = Counter(r["account_id"] for r in rows if r["status"] == "placed" and consented[r["account_id"]])
    busiest = orders.most_common(1)[0][0]

    served = online_features(hmac_key(busiest, TEST_KEY))
    expected = expected_features(rows, busiest, DAYS[-1])

    assert set(served) - {"user_key"} < {f.name for f in all_features()}  # credit_risk_v1: a selection
    assert set(expected) < set(served)
    assert expected["commerce__orders_count_7d"] >= 2  # the user really is active
    mismatched = {k: (served[k], v) for k, v in expected.items() if not _same(served[k], v)}
    assert not mismatched


def test_malformed_lines_are_counted_and_quarantined_with_their_reason(nightly):
    consented = _consent_as_landed(nightly)
    for day in DAYS:
        lines = landing_lines(nightly.landing_dir, "commerce", day)
        rows, broken = parsed_rows(lines)
        assert broken > 0  # the fixture's faults really produced malformed lines

        quarantine = pq.read_table(nightly.quarantine_dir / "commerce" / f"dt={day}").to_pylist()
        assert Counter(q["reason"] for q in quarantine) == {"malformed_json": broken}
        bronze = pq.read_table(nightly.bronze_dir / "commerce" / f"dt={day}")
        assert bronze.num_rows == sum(consented[r["account_id"]] for r in rows)


def test_rerunning_a_logical_date_leaves_outputs_identical(nightly):
    day = DAYS[-1]
    paths = [
        nightly.bronze_dir / "commerce" / f"dt={day}" / "part-0.parquet",
        *(snapshot_path(f.family, day) for f in {f.family: f for f in all_features()}.values()),
    ]
    before = [pq.read_table(p) for p in paths]
    some_user = before[-1].column("user_key")[0].as_py()
    online_before = online_features(some_user)

    assert run_dag(day) == "success"

    after = [pq.read_table(p) for p in paths]
    changed = [str(p) for p, a, b in zip(paths, after, before, strict=True) if not a.equals(b)]
    assert not changed
    assert online_features(some_user) == online_before


def test_a_failed_critical_check_stops_publication_and_is_alerted(nightly, webhook, mailbox, monkeypatch):
    """The real DAG for a day on which three quarters of the commerce family's users vanish (every value
    of those left is in range, so dbt's tests pass it; the GX gate must not). Ingestion and dbt's build are
    marked done without running (dbt would rebuild the snapshot from good data); check_features and
    publish_features run as Airflow runs them, wired as the DAG wires them."""
    bad_day = "2026-03-01"
    table = pq.read_table(snapshot_path("commerce", DAYS[-1]))
    column = "commerce__instalment_orders_share_30d"
    kept = table.num_rows // 4
    broken = table.slice(0, kept)
    planted = {family: snapshot_path(family, bad_day) for family in {f.family for f in all_features()}}
    closes = datetime.combine(date.fromisoformat(bad_day) + timedelta(days=1), time(), UTC)
    users = [{"user_key": k} for k in table.column("user_key").to_pylist()[:200]]
    gate_record = nightly.root / "quality" / f"dt={bad_day}.json"  # what check_features writes
    store = open_store()
    online_before = store.get_online_features(features=[f"commerce:{column}"], entity_rows=users).to_dict()
    assert any(v is not None for v in online_before[column])  # real values, not an empty store
    sinks = {"ALERT_WEBHOOK_URL": webhook.url, "ALERT_SMTP_HOST": "127.0.0.1",
             "ALERT_SMTP_PORT": str(mailbox.port), "ALERT_EMAIL_TO": "oncall@lender.example"}
    for name, value in sinks.items():
        monkeypatch.setenv(f"MILLET_{name}", value)  # the tasks build their settings from the environment
    try:
        for family, path in planted.items():  # every family's snapshot present, one broken
            path.parent.mkdir(parents=True, exist_ok=True)
            good = pq.read_table(snapshot_path(family, DAYS[-1]))
            pq.write_table(_stamped(broken if family == "commerce" else good, closes), path)
        run = load_dag().test(logical_date=datetime.combine(date.fromisoformat(bad_day), time(), UTC),
                              mark_success_pattern=r"ingest_|check_feeds|build_features|reconcile")
        states = {ti.task_id: ti.state for ti in run.get_task_instances()}
        gate = json.loads(gate_record.read_text()) if gate_record.exists() else {}
    finally:
        for path in planted.values():
            shutil.rmtree(path.parent, ignore_errors=True)
        gate_record.unlink(missing_ok=True)

    online_after = open_store().get_online_features(features=[f"commerce:{column}"],
                                                    entity_rows=users).to_dict()
    assert online_after == online_before
    assert states["build_features"] == "success" and states["list_channels"] == "success"
    assert states["check_features"] == "failed"
    assert states["publish_features"] == "upstream_failed"  # never started
    assert run.state == "failed"
    assert gate["commerce"]["failed"] == {"population": [f"{kept} users, baseline {table.num_rows}"]}
    assert all(summary["success"] for name, summary in gate.items() if name != "commerce")
    posted = {(p["millet"]["check"], p["millet"]["dataset"]): p["millet"] for p in webhook.all()}
    population = posted[("snapshot_population", "commerce")]
    assert (population["severity"], population["logical_date"]) == ("critical", bad_day)
    failure = posted[("task_failed", "millet_nightly.check_features")]  # Airflow's failure callback
    assert failure["severity"] == "critical" and "QualityGateFailed" in failure["summary"]
    mailed = {m["Subject"] for m in mailbox.all()}
    assert any(s.startswith("[CRITICAL] Millet snapshot_population on commerce") for s in mailed), mailed


def test_drift_in_one_feature_warns_while_warming_up_and_is_critical_after(
        nightly, webhook, mailbox, tmp_path):
    """One feature of a day's snapshot tripled, every other feature unchanged, measured against the day
    before: the drift alert names that feature alone; with the shipped thresholds (history still shorter
    than the longest window) it is a warning, with the warm-up over it is critical and stops the gate."""
    drifted, day = "payments__amount_paid_sum_30d", "2026-04-01"
    planted = {family: snapshot_path(family, day) for family in {f.family for f in all_features()}}
    settings = nightly.model_copy(update={
        "drift_baseline_date": date.fromisoformat(DAYS[-1]), "alert_webhook_url": SecretStr(webhook.url),
        "alert_smtp_host": "127.0.0.1", "alert_smtp_port": mailbox.port, "alert_email_to": "oncall@x.test"})
    warmed_up = tmp_path / "expectations"
    shutil.copytree(nightly.expectations_dir, warmed_up)
    thresholds = yaml.safe_load((warmed_up / "features.yml").read_text())
    thresholds["drift"]["warm_up_days"] = 0
    (warmed_up / "features.yml").write_text(yaml.safe_dump(thresholds))
    try:
        for family, path in planted.items():
            table = pq.read_table(snapshot_path(family, DAYS[-1]))
            if family == "payments":
                i = table.schema.get_field_index(drifted)
                tripled = pc.multiply(table.column(i), pa.scalar(3.0, pa.float32()))
                table = table.set_column(i, drifted, tripled)
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(table, path)
        warming = check_features(day, settings)
        with pytest.raises(QualityGateFailed, match=drifted):
            check_features(day, settings.model_copy(update={"expectations_dir": warmed_up}))
    finally:
        for path in planted.values():
            shutil.rmtree(path.parent, ignore_errors=True)

    assert warming["payments"]["warnings"]["drift_severe"] == [drifted] and warming["payments"]["success"]
    assert not any(s["warnings"] or s["failed"] for name, s in warming.items() if name != "payments")
    severe = [(a["severity"], a["sample_keys"]) for a in (p["millet"] for p in webhook.all())
              if a["check"] == "snapshot_drift_severe"]
    assert severe == [("warning", [drifted]), ("critical", [drifted])]
    mailed = [m["Subject"] for m in mailbox.all() if "snapshot_drift_severe on payments" in m["Subject"]]
    assert sorted(mailed)[0].startswith("[CRITICAL]") and sorted(mailed)[1].startswith("[WARNING]"), mailed


def _stamped(snapshot: pa.Table, closes: datetime) -> pa.Table:
    """The snapshot as dbt stamps one for a day: every row at the instant the day closes (so that a
    publication of that day would really load it)."""
    i = snapshot.schema.get_field_index("event_timestamp")
    return snapshot.set_column(i, "event_timestamp",
                               pa.array([closes] * snapshot.num_rows, snapshot.schema.field(i).type))


def test_without_served_models_the_nightly_lists_are_skipped_and_the_run_succeeds(nightly):
    """A new deployment has no model until `millet train`: the lists wait for one, nothing fails."""
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    first_night = datetime.combine(date.fromisoformat(DAYS[0]), time(), UTC)
    with create_session() as session:
        states = dict(session.execute(
            select(TaskInstance.task_id, TaskInstance.state)
            .join(DagRun, (DagRun.dag_id == TaskInstance.dag_id) & (DagRun.run_id == TaskInstance.run_id))
            .where(DagRun.dag_id == DAG_ID, DagRun.logical_date == first_night)).all())
    assert states["publish_features"] == "success"
    assert states["track_borrowers"] == states["list_pre_approvals"] == "skipped"
    assert not nightly.tracking_dir.exists()


def test_each_successful_build_leaves_a_record_naming_its_snapshots(nightly):
    for day in DAYS:
        record = json.loads((nightly.manifests_dir / "features" / f"dt={day}.json").read_text())
        assert record["as_of"] == day
        assert record["snapshots"] == {f.family: str(snapshot_path(f.family, day)) for f in all_features()}


def test_feast_schema_equals_the_dbt_snapshot_columns(nightly):
    store = open_store()
    for view in store.list_feature_views():
        snapshot = pq.read_schema(snapshot_path(view.name, DAYS[-1]))
        feast_fields = {f.name: str(f.dtype).lower() for f in view.features}
        dbt_columns = {c.name: str(c.type).replace("float", "float32") for c in snapshot
                       if c.name not in ("user_key", "event_timestamp")}
        assert feast_fields == dbt_columns


def test_the_cli_prints_a_users_features_as_json_and_refuses_unknown_users(nightly):
    import json

    from typer.testing import CliRunner

    from millet.cli import app

    some_user = pq.read_table(snapshot_path("commerce", DAYS[-1])).column("user_key")[0].as_py()
    shown = CliRunner().invoke(app, ["features", some_user])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.output) == online_features(some_user)

    unknown = CliRunner().invoke(app, ["features", "no-such-user"])
    assert unknown.exit_code == 1 and "no features online" in unknown.output


def test_no_raw_identifier_from_the_landing_zone_appears_under_bronze(nightly):
    from millet.contracts import contracts

    raw = set()
    for channel, contract in contracts().items():
        for day in DAYS:
            rows, _ = parsed_rows(landing_lines(nightly.landing_dir, channel, day))
            raw |= {str(r[n]) for r in rows for n in contract.raw_identifiers if r.get(n) is not None}
    assert len(raw) > 1000  # accounts, devices and phones of every channel
    bronze = decoded_strings(nightly.bronze_dir)
    assert len(bronze) > 1000
    assert not raw & bronze
    identifier_columns = {name for c in contracts().values() for name in c.raw_identifiers}
    assert not identifier_columns & bronze  # nor a column of that name


def test_behaviour_of_users_who_declined_never_reaches_bronze_but_their_loans_do(nightly):
    from millet.contracts import contracts

    declined = {hmac_key(a, TEST_KEY) for a, given in _consent_by_account(nightly).items() if not given}
    assert len(declined) > 50  # a few percent of 4,000
    for channel, contract in contracts().items():
        keys = set(pq.read_table(nightly.bronze_dir / channel, columns=["user_key"]).column(0).to_pylist())
        if contract.consent_bound:
            assert not keys & declined, channel
    loans = set(pq.read_table(nightly.bronze_dir / "loans", columns=["user_key"]).column(0).to_pylist())
    loan_rows = [r for day in DAYS for r in parsed_rows(landing_lines(nightly.landing_dir, "loans", day))[0]]
    declined_borrowers = {hmac_key(r["account_id"], TEST_KEY) for r in loan_rows} & declined
    assert declined_borrowers and declined_borrowers <= loans


def test_a_scheduled_re_base_runs_from_the_dag_and_finds_the_rolled_state_right(nightly, monkeypatch):
    day = DAYS[-1]
    assert read_build(day, nightly)["state"] == "rolled"  # the fixture's second night rolled forward
    monkeypatch.setenv("MILLET_REBASE_EVERY_DAYS", "2")  # restored after the test
    settings = get_settings()
    assert is_rebase_day(date.fromisoformat(day), settings)  # 2026-01-02's ordinal is even

    assert run_dag(day, settings) == "success"

    record = read_build(day, nightly)
    assert record["state"] == "rebuilt"
    assert record["rolled_vs_rebuilt"] == {model: 0 for model in state_models(nightly)}
