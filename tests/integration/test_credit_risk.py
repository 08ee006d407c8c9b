"""The credit-risk model trained from the store: labels joined by loan (user_key only), an out-of-time test
against the oracle (the simulator's true PD), a planted future-leaking feature caught, the report rendered.

Expected values come from the simulator's truth and bronze read here with pyarrow, not from the code
under test."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import date, timedelta

import lightgbm as lgb
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
from millet.scoring.decisions import SERVICES, annual_rate, decide, served_model
from millet.scoring.demand import (
    DEMAND_USERS_PER_DAY,
    HORIZON_DAYS,
    LABEL,
    demand_labels,
    top_decile_lift,
    train_demand,
)
from millet.scoring.lists import EARLY_WARNING, PRE_APPROVAL
from millet.scoring.repayment import affordable_instalment, check_repayment_ability, credit_line
from millet.scoring.tracking import list_path
from millet.serving import open_store
from millet.serving.api.server import OnlineReader, Scorer
from millet.serving.definitions import service_features
from millet.serving.offline.training import training_table
from millet.serving.store import snapshot_timestamp
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
    frame = pd.DataFrame({"user_key": users, "event_timestamp": [moment] * len(users)})
    offline = [{} for _ in users]
    for service in SERVICES:  # the PD's features and the credit line's
        for row, more in zip(offline, training_table(frame, service, world).to_pylist(), strict=True):
            row |= more
    model = served_model(world)
    decisions = [scorer.score(row["user_key"]) for row in offline]
    assert [d.to_dict() for d in decisions] == [decide(row["user_key"], row, model, world).to_dict()
                                                for row in offline]
    assert all(d.pd is not None and d.model_version == f"{MODEL}/{model.version.name}" for d in decisions)
    approved = [d for d in decisions if d.access == "approve"]
    assert approved and all(d.annual_rate == annual_rate(d.pd, world) for d in approved)
    assert any(d.credit_line > 0 for d in approved)


def test_a_user_without_features_gets_a_decision_with_a_reason(scorer):
    decision = scorer.score("a-user-new-to-the-ecosystem")
    assert decision.access == "decline" and decision.pd is None and decision.annual_rate is None
    assert decision.credit_line is None
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
    assert body["model_version"] == f"{MODEL}/{honest['version']}"
    assert body["feature_services"] == [SERVICE, "repayment_ability_v1"]
    assert refused.status_code == 400 and "user_key" in refused.json()["detail"]
    done = subprocess.run([MILLET, "score", user], env={**os.environ, **world.millet_environ()},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout) == body


def test_the_credit_line_is_capacity_over_the_term_shrunk_for_risk_and_a_first_loan(world):
    features = {"payments__amount_paid_sum_90d": 9000.0, "credit__loans_active_now": 1.0,
                "credit__amount_app_repaid_sum_180d": 600.0, "credit__app_repayments_count_180d": 3.0,
                "credit__loans_paid_off_total": None}
    affordable = world.line_debt_service_ratio * 9000 / 3 - 1 * 600 / 3  # 1050 less one open instalment
    assert affordable_instalment(features, world) == pytest.approx(affordable)
    monthly = 0.20 / 12
    principal = sum(affordable / (1 + monthly) ** k for k in range(1, world.line_term_months + 1))
    pd_ = 2 * world.line_reference_pd  # twice the reference: half the line keeps the dollars at risk level
    expected = principal * 0.5 * world.line_first_loan_share  # no loan paid off yet
    assert credit_line(features, pd_, 0.20, world) == 10 * (expected // 10)
    seasoned = features | {"credit__loans_paid_off_total": 2.0}
    assert credit_line(seasoned, world.line_reference_pd / 2, 0.20, world) == 10 * (principal // 10)
    assert credit_line({}, 0.01, 0.20, world) == 0  # no wallet spending seen: no capacity
    # A loan open but not yet repaid: its instalment is the book's mean loan over the line's term.
    fresh = {"payments__amount_paid_sum_90d": 9000.0, "credit__loans_active_now": 1.0,
             "credit__amount_disbursed_total": 2400.0}
    assert affordable_instalment(fresh, world) == pytest.approx(
        world.line_debt_service_ratio * 3000 - 2400 / world.line_term_months)


def test_the_repayment_rules_are_checked_against_what_borrowers_repaid(world):
    meta = check_repayment_ability(world)
    loans = ds.dataset(world.bronze_dir / "loans", partitioning="hive").to_table(
        filter=pc.field("event_type") == "repayment", columns=["loan_id"])
    repaid = set(loans["loan_id"].to_pylist())
    labelled = set(training_rows(world).labels["loan_id"])
    assert meta["check"]["loans"] == len(repaid & labelled) > 50
    assert 0 < meta["check"]["within_capacity_share"] < 1
    assert registry.read_meta(world.models_dir / "repayment_ability" / meta["version"])["parameters"][
        "line_term_months"] == world.line_term_months


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


@pytest.fixture(scope="module")
def demand_model(world) -> dict:
    return train_demand(world)


def test_the_demand_model_ranks_who_applies(world, demand_model):
    meta = demand_model
    assert meta["passed"] and meta["test"]["auc"] > 0.5 and meta["test"]["top_decile_lift"] > 1
    assert registry.served_version("financial_demand", world).name == meta["version"]


def test_top_decile_lift_is_the_top_tenths_rate_over_the_base_rate():
    outcome = np.array(([1] + [0] * 19) * 5)  # 5 positives in 100, 1 of them in the top 10
    score = np.arange(100, 0, -1) / 100  # the first rows score highest
    assert top_decile_lift(outcome, score) == pytest.approx((1 / 10) / (5 / 100))


# ---- the nightly lists: early warning and pre-approval, written by the DAG ------------------------------
@pytest.fixture(scope="module")
def nightly_lists(world, honest, demand_model) -> str:
    """The real DAG run again for the world's last day (`millet run`, as the on-call engineer would), now
    that both models are served."""
    done = subprocess.run([MILLET, "run", "--date", str(LAST)], env={**os.environ, **world.millet_environ()},
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done.stdout


def _as_of(users: list[str], day: date, settings: Settings) -> pd.DataFrame:
    """Each user's features as Feast's point-in-time join finds them at the close of `day`, read here from
    the snapshot files: per family, the latest of the day's, the day before's and the day before that's rows
    (a row stamped at most SNAPSHOT_TTL, two days, before), in `users`' order."""
    frame = pd.DataFrame({"user_key": users})
    for fam in families():
        rows = [pq.read_table(path).to_pandas().assign(_age=age) for age in (2, 1, 0)
                if (path := snapshot_path(fam.name, day - timedelta(days=age), settings)).exists()]
        if not rows:  # before the first snapshot: nothing known
            continue
        latest = pd.concat(rows).drop_duplicates("user_key", keep="last").drop(columns=["_age"])
        frame = frame.merge(latest.drop(columns=[c for c in latest.columns if c in frame.columns and
                                                 c != "user_key"]), on="user_key", how="left")
    return frame


def _expected_scores(booster: lgb.Booster, features: pd.DataFrame) -> np.ndarray:
    columns = features.reindex(columns=booster.feature_name()).astype("float64")
    matrix = columns.to_numpy(dtype=np.float32, na_value=np.nan)
    return np.where(np.isnan(matrix).all(axis=1), np.nan, booster.predict(matrix))


def _served_booster(model: str, settings: Settings) -> lgb.Booster:
    return lgb.Booster(model_file=str(registry.served_version(model, settings) / "model.txt"))


def test_the_dag_writes_the_early_warning_list_of_open_loans(world, nightly_lists):
    listed = pq.read_table(list_path(EARLY_WARNING, LAST, world)).to_pandas()
    credit = pq.read_table(snapshot_path("credit", LAST, world)).to_pandas()
    borrowers = credit[credit["credit__loans_active_now"] > 0].sort_values("user_key")
    booster = _served_booster(MODEL, world)
    now = _expected_scores(booster, _as_of(list(borrowers["user_key"]), LAST, world))
    applied = _last_applications(world)  # from bronze's application events
    then, users = np.full(len(borrowers), np.nan), list(borrowers["user_key"])
    by_eve: dict[date, list[int]] = {}  # the night before the last application → those borrowers
    for i, user in enumerate(users):
        if (LAST - applied[user]).days < 180:  # within the longest window: its day is known
            by_eve.setdefault(applied[user] - timedelta(days=1), []).append(i)
    for eve, at in by_eve.items():
        then[at] = _expected_scores(booster, _as_of([users[i] for i in at], eve, world))
    n = world.tracking_riskiest
    riskiest = set(borrowers["user_key"].to_numpy()[np.argsort(-now, kind="stable")[:n]])
    rise = np.where(now - then > 0, now - then, -np.inf)
    top = np.argsort(-rise, kind="stable")[:n]
    rising = set(borrowers["user_key"].to_numpy()[top][rise[top] > -np.inf])
    assert len(borrowers) > n and rising  # a list to choose, and some PD rose
    assert set(listed["user_key"]) == riskiest | rising
    assert set(listed.loc[listed["riskiest"], "user_key"]) == riskiest
    assert set(listed.loc[listed["rising"], "user_key"]) == rising
    position = {user: i for i, user in enumerate(borrowers["user_key"])}
    at = [position[user] for user in listed["user_key"]]
    assert listed["pd"].to_numpy() == pytest.approx(now[at], rel=1e-9)
    assert listed["pd_at_application"].to_numpy() == pytest.approx(then[at], rel=1e-9, nan_ok=True)
    assert listed["pd"].is_monotonic_decreasing  # the riskiest first
    assert all(len(reasons) for reasons in listed.loc[listed["riskiest"], "raised_by"][:10])


def _last_applications(settings: Settings) -> dict[str, date]:
    loans = ds.dataset(settings.bronze_dir / "loans", partitioning="hive").to_table(
        filter=pc.field("event_type") == "application", columns=["user_key", "event_ts"]).to_pylist()
    last: dict[str, date] = {}
    for row in loans:
        day = row["event_ts"].date()
        if day <= LAST:
            last[row["user_key"]] = max(last.get(row["user_key"], day), day)
    return last


def test_the_dag_writes_the_pre_approval_list_of_likely_applicants_within_the_price_cap(world, nightly_lists):
    listed = pq.read_table(list_path(PRE_APPROVAL, LAST, world)).to_pandas()
    users = sorted(set().union(*(_keys(fam.name, LAST, world) for fam in families())))
    features = _as_of(users, LAST, world)
    pd_ = _expected_scores(_served_booster(MODEL, world), features)
    propensity = _expected_scores(_served_booster("financial_demand", world), features)
    costs = world.pricing_cost_of_funds + world.pricing_operating_cost + world.pricing_margin
    step = world.pricing_band_step
    price = np.round(np.ceil(np.round((costs + pd_ * world.pricing_lgd * 2) / step, 9)) * step, 6)  # a year
    rows = features.to_dict("records")
    lines = [credit_line(row, p, rate, world) if rate <= world.pricing_rate_cap else 0
             for row, p, rate in zip(rows, pd_, price, strict=True)]
    order = [i for i in np.argsort(-propensity, kind="stable")
             if lines[i] > 0 and not np.isnan(propensity[i])]
    expected = order[: round(world.pre_approval_share * len(users))]
    assert 0 < len(expected) < len(order)  # a real choice: some eligible users are left out
    assert sum(line == 0 for line in lines) > 0  # and some are not eligible
    assert list(listed["user_key"]) == [users[i] for i in expected]
    assert listed["pd"].to_numpy() == pytest.approx(pd_[expected], rel=1e-9)
    assert listed["propensity"].to_numpy() == pytest.approx(propensity[expected], rel=1e-9)
    assert listed["annual_rate"].to_numpy() == pytest.approx(price[expected])
    assert listed["credit_line"].to_numpy() == pytest.approx([lines[i] for i in expected])
