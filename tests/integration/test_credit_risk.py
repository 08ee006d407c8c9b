"""The credit-risk model trained from the store: labels joined by loan (user_key only), an out-of-time test
against the oracle (the simulator's true PD), a planted future-leaking feature caught, the report rendered.

Expected values come from the simulator's truth and bronze read here with pyarrow, not from the code
under test."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
import requests
from sklearn.metrics import roc_auc_score

from millet.feature_spec import families
from millet.scoring import registry
from millet.scoring.credit_risk import (
    LEAKAGE_Z,
    MODEL,
    SERVICE,
    LeakageSuspected,
    TrainingRows,
    train_credit_risk,
    training_rows,
)
from millet.scoring.decisions import annual_rate, decide, served_model
from millet.scoring.demand import (
    DEMAND_USERS_PER_DAY,
    HORIZON_DAYS,
    LABEL,
    demand_labels,
    top_decile_lift,
    train_demand,
)
from millet.serving import open_store
from millet.serving.definitions import service_features
from millet.serving.server import OnlineReader, Scorer
from millet.serving.store import snapshot_timestamp
from millet.serving.training import training_table
from millet.settings import Settings
from millet.transform import snapshot_path
from tests.chromium import render
from tests.conftest import TEST_KEY
from tests.e2e.processes import MILLET, millet_serve
from tests.helpers import hmac_key

START = date(2026, 1, 1)
DAYS = 45
USERS = 6000
LAST = START + timedelta(days=DAYS - 1)
WARMUP = 7  # a week of history before the first label row (a 45-day world has no room for the default 30)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Settings:
    """`millet world`, the documented command, on a small world (in a process of its own: it applies the
    Feast registry, whose sources Feast imports once per process)."""
    root = tmp_path_factory.mktemp("credit-risk")
    # A world this small learns little: the served bar (model_min_oracle_ratio) is for the training world.
    settings = Settings(data_root=root / "data", pseudonym_key=TEST_KEY.decode(), rebase_every_days=0,
                        model_min_oracle_ratio=0.0, model_warmup_days=WARMUP)
    done = subprocess.run([MILLET, "world", "--users", str(USERS), "--days", str(DAYS), "--start", str(START),
                           "--seed", "11"], env={**os.environ, **settings.millet_environ()},
                          capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return settings


@pytest.fixture(scope="module")
def honest(world) -> dict:
    return train_credit_risk(world)


def _truth(settings: Settings) -> dict[str, dict]:
    rows = ds.dataset(settings.truth_dir / "loans", partitioning="hive").to_table().to_pylist()
    return {r["loan_id"]: r for r in rows}


def test_label_rows_are_loans_by_user_key_with_the_truths_outcome(world):
    rows = training_rows(world)
    truth = _truth(world)
    labels = rows.labels
    assert set(labels.columns) == {"user_key", "event_timestamp", "loan_id", "defaulted", "oracle_pd"}
    assert len(labels) > 200 and labels["defaulted"].sum() > 5
    for row in labels.itertuples():
        loan = truth[row.loan_id]
        assert row.user_key == hmac_key(loan["account_id"], TEST_KEY)
        assert (row.defaulted, row.oracle_pd) == (int(loan["defaulted"]), loan["pd"])
    # Every loan applied for after the warm-up is a row, and nothing else.
    first_close = np.datetime64(START + timedelta(days=1 + WARMUP))
    applied = _application_times(world)
    expected = {loan for loan in truth if applied[loan] >= first_close}
    assert set(labels["loan_id"]) == expected
    assert rows.features == [f.name for f in service_features(SERVICE)]


def _application_times(settings: Settings) -> dict[str, np.datetime64]:
    loans = ds.dataset(settings.bronze_dir / "loans", partitioning="hive").to_table(
        filter=pc.field("event_type") == "application", columns=["loan_id", "event_ts"])
    return {loan: np.datetime64(ts.replace(tzinfo=None)) for loan, ts in
            zip(loans["loan_id"].to_pylist(), loans["event_ts"].to_pylist(), strict=True)}


def test_the_test_is_out_of_time_and_the_oracle_is_the_true_pd_on_it(world, honest):
    version = world.models_dir / MODEL / honest["version"]
    scores = ds.dataset(version / "test_scores.parquet").to_table().to_pandas()
    rows = training_rows(world)
    train, test = rows.labels[scores["split"] == "train"], rows.labels[scores["split"] == "test"]
    assert train["event_timestamp"].max().floor("D") < test["event_timestamp"].min().floor("D")
    assert abs(len(test) / len(rows.labels) - world.model_test_share) < 0.1
    truth = _truth(world)
    outcome = [int(truth[loan]["defaulted"]) for loan in test["loan_id"]]
    oracle = roc_auc_score(outcome, [truth[loan]["pd"] for loan in test["loan_id"]])
    assert honest["test"]["oracle_pd"]["auc"] == pytest.approx(oracle)
    assert honest["test"]["gbm"]["auc"] == pytest.approx(roc_auc_score(outcome, scores["gbm"][test.index]))
    assert honest["oracle_ratio"] == pytest.approx(honest["test"]["gbm"]["auc"] / oracle)
    # The honest model is below the oracle, so it is not taken for leakage, and it is served.
    assert not honest["leakage"] and honest["passed"]
    assert registry.served_version(MODEL, world) == version
    assert (version / "model.txt").exists() and registry.read_meta(version)["feature_service"] == SERVICE


def test_a_planted_future_leaking_feature_is_caught_by_the_oracle_check(world, honest):
    """The planted feature is what a collections system writes once a loan is written off: each loan's
    own outcome, known only after it (read from the truth here, as a careless join would bring it in)."""
    rows = training_rows(world)
    truth = _truth(world)
    written_off = np.array([float(truth[loan]["defaulted"]) for loan in rows.labels["loan_id"]], np.float32)
    leaky = TrainingRows(rows.labels, np.column_stack([rows.matrix, written_off]),
                         [*rows.features, "planted__loan_written_off"])

    with pytest.raises(LeakageSuspected, match="above the oracle"):
        train_credit_risk(world, leaky)

    caught = max((world.models_dir / MODEL).glob("v*"), key=lambda p: int(p.name[1:]))
    meta = registry.read_meta(caught)
    assert meta["leakage"] and not meta["passed"]
    # The scores that saw the planted feature are flagged; the credit history alone never saw it.
    flagged = {name for name in meta["oracle_gaps"] if any(reason.startswith(f"{name} AUC")
                                                           for reason in meta["reasons"])}
    assert flagged and "credit_history_only" not in flagged
    for name in flagged:
        gap = meta["oracle_gaps"][name]
        assert meta["test"][name]["auc"] - meta["test"]["oracle_pd"]["auc"] == pytest.approx(gap["gap"])
        assert gap["gap"] > LEAKAGE_Z * gap["standard_error"]
    assert registry.served_version(MODEL, world).name == honest["version"]  # the leaky one is not served


def test_the_report_shows_its_plots_in_chromium(world, honest, tmp_path):
    screenshot, dom, logged = render(world.models_dir / MODEL / honest["version"] / "report.html", tmp_path)
    for chart in ("ROC, out-of-time test", "importance"):
        assert f'aria-label="{chart}' in dom, chart
    assert dom.count("<svg") == 5 and dom.count("<polyline") >= 4 + 2 + 1 + 2
    assert f"{honest['oracle_ratio']:.3f}" in dom and "passed: served" in dom
    assert "CONSOLE" not in logged and "Uncaught" not in logged, logged[-2000:]
    blank = tmp_path / "blank.html"
    blank.write_text("<!doctype html><html><body></body></html>")
    blank_shot, _, _ = render(blank, tmp_path)
    assert screenshot.stat().st_size > 5 * blank_shot.stat().st_size


# ---- decisions ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def scorer(world, honest) -> Scorer:
    return Scorer(OnlineReader(open_store(world)), world)


def _snapshot_users(settings: Settings, n: int) -> list[str]:
    """Borrowers first (they have credit history), then anyone: every kind of row the store serves. Not a
    user who left a family's snapshot on the last day: the offline join still finds the day before's row
    (within the views' TTL) where the online store has none (a known gap, in the closing note)."""
    credit = pq.read_table(snapshot_path("credit", LAST, settings),
                           columns=["user_key", "credit__disbursements_count_180d"]).to_pylist()
    borrowers = sorted(r["user_key"] for r in credit if r["credit__disbursements_count_180d"])
    others = sorted(pq.read_table(snapshot_path("device", LAST, settings), columns=["user_key"])
                    ["user_key"].to_pylist())
    before = LAST - timedelta(days=1)
    left = set().union(*(_keys(fam.name, before, settings) - _keys(fam.name, LAST, settings)
                         for fam in families()))
    borrowers, others = [u for u in borrowers if u not in left], [u for u in others if u not in left]
    return borrowers[: n // 2] + others[: n - n // 2]


def _keys(family: str, day: date, settings: Settings) -> set[str]:
    table = pq.read_table(snapshot_path(family, day, settings), columns=["user_key"])
    return set(table["user_key"].to_pylist())


def test_the_online_decision_equals_the_one_from_offline_features_at_the_same_time(world, scorer):
    users = _snapshot_users(world, 30)
    moment = snapshot_timestamp(LAST) + timedelta(hours=1)  # the last snapshot is the one served online
    offline = training_table(pd.DataFrame({"user_key": users, "event_timestamp": [moment] * len(users)}),
                             SERVICE, world).to_pylist()
    model = served_model(world)
    decisions = [scorer.score(row["user_key"]) for row in offline]
    assert [d.to_dict() for d in decisions] == [decide(row["user_key"], row, model, world).to_dict()
                                                for row in offline]
    assert all(d.pd is not None and d.model_version == f"{MODEL}/{model.version.name}" for d in decisions)
    approved = [d for d in decisions if d.access == "approve"]
    assert approved and all(d.annual_rate == annual_rate(d.pd, world) for d in approved)


def test_a_user_without_features_gets_a_decision_with_a_reason(scorer):
    decision = scorer.score("a-user-new-to-the-ecosystem")
    assert decision.access == "decline" and decision.pd is None and decision.annual_rate is None
    assert "nothing to score" in decision.reasons[0]


def test_the_price_is_costs_and_expected_loss_rounded_up_to_its_band(world):
    costs = world.pricing_cost_of_funds + world.pricing_operating_cost + world.pricing_margin  # 13% a year
    for pd_, band in ((0.0, 0.14), (0.05, 0.20), (0.10, 0.26)):
        assert costs + pd_ * world.pricing_lgd * 2 <= band  # a 6-month PD, over a year
        assert annual_rate(pd_, world) == pytest.approx(band)


def test_millet_serve_answers_score_as_millet_score_does(world, honest):
    user = _snapshot_users(world, 2)[0]
    with millet_serve(world) as url:
        answer = requests.post(f"{url}/score", json={"user_key": user}, timeout=30)
        refused = requests.post(f"{url}/score", json={"user": user}, timeout=30)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["model_version"] == f"{MODEL}/{honest['version']}" and body["feature_service"] == SERVICE
    assert refused.status_code == 400 and "user_key" in refused.json()["detail"]
    done = subprocess.run([MILLET, "score", user], env={**os.environ, **world.millet_environ()},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout) == body


# ---- financial demand -------------------------------------------------------------------------------------
def test_demand_labels_say_who_applied_in_the_next_30_days(world):
    labels = demand_labels(world)
    applications = ds.dataset(world.bronze_dir / "loans", partitioning="hive").to_table(
        filter=pc.field("event_type") == "application", columns=["user_key", "event_ts"]).to_pylist()
    days = sorted(set(labels["event_timestamp"]))
    assert len(days) >= 2  # something to split in time
    for stamp in days:
        rows = labels[labels["event_timestamp"] == stamp]
        day = (stamp - timedelta(days=1)).date()
        present = set().union(*(_keys(fam.name, day, world) for fam in families()))
        assert set(rows["user_key"]) <= present and len(rows) == min(len(present), DEMAND_USERS_PER_DAY)
        applied = {a["user_key"] for a in applications
                   if stamp < a["event_ts"] <= stamp + timedelta(days=HORIZON_DAYS)}
        assert dict(zip(rows["user_key"], rows[LABEL], strict=True)) == {
            u: int(u in applied) for u in rows["user_key"]}
        assert rows[LABEL].sum() > 0


def test_the_demand_model_ranks_who_applies(world):
    meta = train_demand(world)
    assert meta["passed"] and meta["test"]["auc"] > 0.5 and meta["test"]["top_decile_lift"] > 1
    assert registry.served_version("financial_demand", world).name == meta["version"]


def test_top_decile_lift_is_the_top_tenths_rate_over_the_base_rate():
    outcome = np.array(([1] + [0] * 19) * 5)  # 5 positives in 100, 1 of them in the top 10
    score = np.arange(100, 0, -1) / 100  # the first rows score highest
    assert top_decile_lift(outcome, score) == pytest.approx((1 / 10) / (5 / 100))
