"""The financial-demand model: who will apply for a loan in the next 30 days (it drives pre-approval lists).

Rows are users of a day's snapshots (a fixed sample of at most `DEMAND_USERS_PER_DAY`), on days
`DEMAND_EVERY_DAYS` apart whose next 30 days the world has seen; the label is whether the user applied for
a loan in those 30 days (bronze's application events: what the lender observes, no truth needed).
Features: `financial_demand_v1` as of the snapshot. Tested out of time by AUC and by the lift in the top
decile: how many times the base rate the 10% highest-scored users apply.
"""

from __future__ import annotations

from datetime import date, timedelta

import duckdb
import numpy as np
import pandas as pd

from millet.scoring import registry
from millet.scoring.fitting import (
    TrainingRows,
    day_users_sql,
    first_label_day,
    fit_gbm,
    rows_with_features,
    split_in_time,
)
from millet.scoring.labels import NoLabels
from millet.scoring.metrics import ranking
from millet.serving.store import snapshot_timestamp
from millet.settings import Settings
from millet.sqltext import literal

MODEL = registry.FINANCIAL_DEMAND
SERVICE = "financial_demand_v1"
LABEL = "applies_within_30d"
HORIZON_DAYS = 30
DEMAND_EVERY_DAYS = 7  # rows a week apart: nearby days would repeat the same people's near-equal rows
DEMAND_USERS_PER_DAY = 5_000  # a fixed pseudo-random sample of each day's users, to bound the training set
LABEL_DEFINITION = (f"{LABEL}: the user applied for a loan within {HORIZON_DAYS} days after the snapshot "
                    "(bronze loans, event_type = 'application'); one row per user of a snapshot")


def demand_labels(settings: Settings) -> pd.DataFrame:
    """user_key, event_timestamp (the snapshot's close) and the label, for every DEMAND_EVERY_DAYS-th
    snapshot day after the warm-up whose next HORIZON_DAYS the world has seen."""
    last_seen = _last_bronze_day(settings)
    day, rows = first_label_day(settings), []
    with duckdb.connect(config=settings.duckdb_config()) as con:
        while day + timedelta(days=HORIZON_DAYS) <= last_seen:
            rows.append(_day_labels(con, day, settings))
            day += timedelta(days=DEMAND_EVERY_DAYS)
    if not rows:
        raise NoLabels(f"no snapshot day after the warm-up has {HORIZON_DAYS} days seen after it: build a "
                       "longer world")
    return pd.concat(rows, ignore_index=True)


def _day_labels(con, day: date, settings: Settings) -> pd.DataFrame:
    opens, closes = snapshot_timestamp(day), snapshot_timestamp(day + timedelta(days=HORIZON_DAYS))
    loans = settings.bronze_dir / "loans" / "dt=*" / "*.parquet"
    return con.execute(f"""
        with users as (
            select user_key from ({day_users_sql(day, settings)})
            order by md5(user_key || $day) limit {DEMAND_USERS_PER_DAY}
        ),
        applied as (
            select distinct user_key from read_parquet({literal(str(loans))})
            where event_type = 'application' and event_ts > $opens and event_ts <= $closes
        )
        select u.user_key, $opens::timestamptz as event_timestamp,
               (a.user_key is not null)::int as {LABEL}
        from users as u left join applied as a using (user_key)
        order by u.user_key
    """, {"opens": opens, "closes": closes, "day": str(day)}).df()


def _last_bronze_day(settings: Settings) -> date:
    days = [p.name.removeprefix("dt=") for p in (settings.bronze_dir / "loans").glob("dt=*")]
    if not days:
        raise NoLabels(f"no bronze loans under {settings.bronze_dir}: build a world first (`millet world`)")
    return date.fromisoformat(max(days))


def train_demand(settings: Settings, rows: TrainingRows | None = None) -> dict:
    """Fit and test out of time; write the version (model, meta.json) and serve it if it ranks better than
    chance. Returns its meta."""
    rows = rows or rows_with_features(demand_labels(settings), SERVICE, settings)
    outcome = rows.labels[LABEL].to_numpy()
    train, test = split_in_time(rows.labels["event_timestamp"], outcome, settings.model_test_share)
    gbm = fit_gbm(rows.matrix[train], outcome[train], rows.features, settings.seed)
    score = gbm.predict(rows.matrix[test])
    tested = {**ranking(outcome[test], score), "top_decile_lift": top_decile_lift(outcome[test], score)}
    reasons = [] if tested["auc"] > 0.5 and tested["top_decile_lift"] > 1 else [
        f"AUC {tested['auc']:.3f} and top-decile lift {tested['top_decile_lift']:.2f}: no better than chance"]
    meta = {"model": MODEL, "feature_service": SERVICE, "label": LABEL_DEFINITION,
            "features": len(rows.features), "rounds": gbm.best_iteration or gbm.current_iteration(),
            "rows": {part: {"rows": int(mask.sum()), "positives": int(outcome[mask].sum())}
                     for part, mask in (("train", train), ("test", test))},
            "test": tested, "passed": not reasons, "reasons": reasons}
    version = registry.new_version(MODEL, settings)
    gbm.save_model(str(version / "model.txt"))
    registry.write_meta(version, meta | {"version": version.name})
    if meta["passed"]:
        registry.serve(version)
    return meta | {"version": version.name, "path": str(version)}


def top_decile_lift(outcome: np.ndarray, score: np.ndarray) -> float:
    """The positive rate among the 10% highest scores, over the positive rate of all."""
    top = np.argsort(-score, kind="stable")[: max(len(score) // 10, 1)]
    return float(outcome[top].mean() / outcome.mean())
