"""The credit-risk (PD) model, trained from the store as a model team would.

Rows are disbursed loans at their application time, with `credit_risk_v1`'s features through Feast's
point-in-time join; the label is the simulator's default (90+ days past due within 6 months). The test is
out of time: the applications from the day on which the latest `model_test_share` of them begins. Three
scores are compared on it:
- LightGBM over every feature of the service. Chosen over scikit-learn's HistGradientBoosting because it
  gives each prediction's exact per-feature contributions (TreeSHAP), which the decisions quote as reasons;
- the scorecard baseline (millet/scoring/scorecard.py);
- LightGBM over the credit-history family alone, to show what ecosystem behaviour adds.
The oracle is the simulator's true PD on the same rows. Outcomes depend on nothing else, so no honest
score ranks better than it: a score whose AUC is above the oracle's by more than chance allows (one-sided,
LEAKAGE_Z standard errors of the paired difference) knows the future, and fails the run as leakage. A point
estimate above it within noise is reported, not failed: a model as good as the oracle would be above it on
half of all test sets.
"""

from __future__ import annotations

from datetime import UTC, datetime

import lightgbm as lgb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from millet.files import replacing
from millet.scoring import registry
from millet.scoring.fitting import (
    GBM_PARAMS,
    TrainingRows,
    first_label_day,
    fit_gbm,
    rows_with_features,
    split_in_time,
)
from millet.scoring.labels import DEFAULT_LABEL, ORACLE, NoLabels, loan_outcomes
from millet.scoring.metrics import auc_gap, calibration, ranking, score_psi
from millet.scoring.report import write_report
from millet.scoring.scorecard import fit_scorecard
from millet.serving.store import snapshot_timestamp
from millet.settings import Settings

MODEL = registry.CREDIT_RISK
SERVICE = "credit_risk_v1"
LABEL_DEFINITION = ("defaulted: the loan reached 90+ days past due within 6 months of disbursement "
                    "(the simulator's truth); one row per disbursed loan, at its application time")
TOP_IMPORTANCE = 30
SCORES_FILE = "test_scores.parquet"
CANDIDATES = ("gbm", "scorecard", "credit_history_only")  # every score the run fits; each faces the oracle
LEAKAGE_Z = 1.645  # one-sided 5%


class LeakageSuspected(RuntimeError):
    pass


def loan_rows(settings: Settings) -> pd.DataFrame:
    """Every disbursed loan applied for after the warm-up, with its outcome (loan_outcomes' columns)."""
    labels = loan_outcomes(settings)
    labels = labels[labels["event_timestamp"] >= snapshot_timestamp(first_label_day(settings))]
    if labels.empty:
        raise NoLabels("no loan was applied for after the warm-up (model_warmup_days after the first "
                       "snapshot): build a longer world")
    return labels


def training_rows(settings: Settings) -> TrainingRows:
    """loan_rows with credit_risk_v1's features as of each application."""
    return rows_with_features(loan_rows(settings), SERVICE, settings)


def train_credit_risk(settings: Settings, rows: TrainingRows | None = None) -> dict:
    """Fit, test out of time, write the version (model, meta.json, test scores) and serve it if it passes.
    Returns its meta; raises LeakageSuspected when the model beats the oracle."""
    rows = rows or training_rows(settings)
    outcome = rows.labels[DEFAULT_LABEL].to_numpy()
    train, test = split_in_time(rows.labels["event_timestamp"], outcome, settings.model_test_share)
    credit_only = [i for i, name in enumerate(rows.features) if name.startswith("credit__")]
    gbm = fit_gbm(rows.matrix[train], outcome[train], rows.features, settings.seed)
    history_gbm = fit_gbm(rows.matrix[train][:, credit_only], outcome[train],
                          [rows.features[i] for i in credit_only], settings.seed)
    card = fit_scorecard(rows.matrix[train], outcome[train], rows.features, settings.seed)
    scores = pd.DataFrame({
        "split": np.where(test, "test", "train"), DEFAULT_LABEL: outcome, ORACLE: rows.labels[ORACLE],
        "gbm": gbm.predict(rows.matrix), "scorecard": card.predict(rows.matrix, rows.features),
        "credit_history_only": history_gbm.predict(rows.matrix[:, credit_only])})
    meta = _meta(rows, scores, train, test, gbm, settings)
    version = registry.new_version(MODEL, settings)
    gbm.save_model(str(version / "model.txt"))
    registry.write_meta(version, meta | {"version": version.name, "scorecard": card.to_dict()})
    with replacing(version / SCORES_FILE) as copy:
        pq.write_table(pa.Table.from_pandas(scores, preserve_index=False), copy)
    report = write_report(version, SCORES_FILE)
    if meta["passed"]:
        registry.serve(version)
    if meta["leakage"]:
        raise LeakageSuspected(f"{version}: {meta['reasons'][0]}")
    return meta | {"version": version.name, "path": str(version), "report": str(report)}


def _meta(rows: TrainingRows, scores: pd.DataFrame, train: np.ndarray, test: np.ndarray,
          gbm: lgb.Booster, settings: Settings) -> dict:
    held_out = scores[test]
    outcome = held_out[DEFAULT_LABEL].to_numpy()
    metrics = {name: ranking(outcome, held_out[name].to_numpy()) for name in (*CANDIDATES, ORACLE)}
    gaps = {name: auc_gap(outcome, held_out[name].to_numpy(), held_out[ORACLE].to_numpy(), settings.seed)
            for name in CANDIDATES}
    leaks = [name for name, g in gaps.items() if g["gap"] > LEAKAGE_Z * g["standard_error"]]
    reasons = [f"{name} AUC {metrics[name]['auc']:.4f} is above the oracle's {metrics[ORACLE]['auc']:.4f} by "
               f"{gaps[name]['gap'] / gaps[name]['standard_error']:.1f} standard errors: a feature knows the "
               "future (leakage)" for name in leaks]
    ratio = metrics["gbm"]["auc"] / metrics[ORACLE]["auc"]
    if ratio < settings.model_min_oracle_ratio:
        reasons.append(f"model AUC ÷ oracle AUC = {ratio:.3f}, under model_min_oracle_ratio "
                       f"{settings.model_min_oracle_ratio}")
    stamps = rows.labels["event_timestamp"]
    gain = gbm.feature_importance("gain")
    top = np.argsort(-gain)[:TOP_IMPORTANCE]
    return {
        "model": MODEL, "feature_service": SERVICE, "label": LABEL_DEFINITION,
        "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "features": len(rows.features), "rounds": gbm.best_iteration or gbm.current_iteration(),
        "params": GBM_PARAMS,
        "rows": {part: {"rows": int(mask.sum()), "defaults": int(scores[DEFAULT_LABEL][mask].sum()),
                        "first_application": str(stamps[mask].min()),
                        "last_application": str(stamps[mask].max())}
                 for part, mask in (("train", train), ("test", test))},
        "test": metrics, "oracle_ratio": ratio, "oracle_gaps": gaps,
        "score_psi": score_psi(scores["gbm"][train].to_numpy(), held_out["gbm"].to_numpy()),
        "calibration": calibration(held_out[DEFAULT_LABEL].to_numpy(), held_out["gbm"].to_numpy()),
        "importance": [{"feature": rows.features[i], "gain": float(gain[i])} for i in top if gain[i] > 0],
        "leakage": bool(leaks), "passed": not reasons, "reasons": reasons,
    }
