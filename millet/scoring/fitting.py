"""What every model here shares: label rows with a feature service's features through Feast's point-in-time
join, the out-of-time split, and LightGBM with early stopping."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import lightgbm as lgb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from millet.feature_spec import families
from millet.scoring.labels import NoLabels
from millet.serving.definitions import service_features
from millet.serving.offline.training import training_table
from millet.settings import Settings
from millet.sqltext import literal
from millet.transform import snapshot_path

GBM_PARAMS = {
    "objective": "binary", "metric": "auc", "learning_rate": 0.03, "num_leaves": 15,
    "min_data_in_leaf": 20, "feature_fraction": 0.5, "bagging_fraction": 0.8, "bagging_freq": 1,
    "lambda_l2": 5.0, "deterministic": True, "force_row_wise": True, "verbosity": -1,
}
MAX_ROUNDS = 2000
EARLY_STOPPING = 100
VALIDATION_SHARE = 0.2  # the latest training rows, for early stopping only


@dataclass
class TrainingRows:
    """Label rows with their features: what the model learns from and is tested on."""
    labels: pd.DataFrame  # user_key, event_timestamp, the label and whatever else the model keeps
    matrix: np.ndarray  # float32, NaN where Feast returned null
    features: list[str]


def rows_with_features(labels: pd.DataFrame, service: str, settings: Settings) -> TrainingRows:
    """`labels` (user_key, event_timestamp, ...) with `service`'s features as of each row's timestamp, in
    time order (the split and early stopping take the latest rows)."""
    labels = labels.sort_values("event_timestamp", kind="stable")
    table = training_table(labels.reset_index(drop=True), service, settings)
    features = [f.name for f in service_features(service)]
    return TrainingRows(table.select(list(labels.columns)).to_pandas(), feature_matrix(table, features),
                        features)


def feature_matrix(table: pa.Table, features: list[str]) -> np.ndarray:
    return np.column_stack([pc.cast(table[name], pa.float32()).to_numpy(zero_copy_only=False)
                            for name in features]).astype(np.float32)


def out_of_time_split(stamps: pd.Series, test_share: float) -> tuple[np.ndarray, np.ndarray]:
    """Training rows: those stamped before the cut day; test rows: on or after it, where the cut day is
    the first day of the latest `test_share` of rows (a day is never split)."""
    days = pd.to_datetime(stamps, utc=True).dt.floor("D")
    cut = days.quantile(1 - test_share, interpolation="higher")
    test = (days >= cut).to_numpy()
    if test.all() or not test.any():
        raise NoLabels(f"rows of {days.nunique()} day(s) cannot be split in time: "
                       "build a longer world")
    return ~test, test


def split_in_time(stamps: pd.Series, outcome: np.ndarray, test_share: float) -> tuple[np.ndarray, np.ndarray]:
    """out_of_time_split, refused when either side holds only one outcome (nothing to learn or to test),
    or when the rows are not in time order (fit_gbm's early stopping takes the latest training rows)."""
    if not pd.to_datetime(stamps, utc=True).is_monotonic_increasing:
        raise ValueError("training rows must be in time order (rows_with_features sorts them)")
    train, test = out_of_time_split(stamps, test_share)
    for part, name in ((train, "training"), (test, "test")):
        if outcome[part].min() == outcome[part].max():
            raise NoLabels(f"the {name} rows hold only one outcome ({int(part.sum())} rows): build a larger "
                           "or longer world")
    return train, test


def fit_gbm(matrix: np.ndarray, outcome: np.ndarray, names: list[str], seed: int) -> lgb.Booster:
    """LightGBM with early stopping on the latest VALIDATION_SHARE of the (time-ordered) rows given."""
    fit_rows = int(len(outcome) * (1 - VALIDATION_SHARE))
    params = GBM_PARAMS | {"seed": seed, "num_threads": 2}
    fit = lgb.Dataset(matrix[:fit_rows], outcome[:fit_rows], feature_name=names, free_raw_data=False)
    valid = lgb.Dataset(matrix[fit_rows:], outcome[fit_rows:], reference=fit)
    return lgb.train(params, fit, num_boost_round=MAX_ROUNDS, valid_sets=[valid],
                     callbacks=[lgb.early_stopping(EARLY_STOPPING, verbose=False)])


def first_label_day(settings: Settings) -> date:
    """The first snapshot day that label rows may use: `model_warmup_days` after the first snapshot."""
    return date.fromisoformat(first_snapshot_day(settings)) + timedelta(days=settings.model_warmup_days)


def first_snapshot_day(settings: Settings) -> str:
    days = sorted(p.name.removeprefix("dt=") for p in (settings.snapshots_dir / "credit").glob("dt=*"))
    if not days:
        raise NoLabels(f"no credit snapshots under {settings.snapshots_dir}: build the features first")
    return days[0]


def day_users_sql(day: date, settings: Settings) -> str:
    """SQL for the users of a day's snapshots: everyone with a row in any family's."""
    paths = (literal(str(snapshot_path(fam.name, day, settings))) for fam in families())
    return " union ".join(f"select user_key from read_parquet({path})" for path in paths)
