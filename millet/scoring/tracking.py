"""The nightly lists the models drive, scored in batch from the day's published snapshot through Feast's
point-in-time join (offline, as training sets are), one folder per list and day under `tracking/`:
- **early warning** (collections): every borrower with an open loan, scored by the served credit-risk
  model; the `tracking_riskiest` highest PDs, and as many of the largest rises in PD since the last
  application (the last time the lender assessed them: for a borrower with an open loan, its application,
  unless they applied again since). The PD then is computed from the features that decision saw: the
  snapshot of the night before. An application older than the longest window (180 days) has no known day,
  so its borrower can be listed as risky but not as rising.
- **pre-approval** (offers): of the day's users whose credit decision would approve (risk-based price
  within the cap and a credit line), the `pre_approval_share` of all users most likely to apply (the served
  demand model), with their price and line.
A list needs its models served (lists.py names them and checks before this module is loaded): without one
it raises NoModel, and the DAG skips the task (a one-pass history, `nightly_lists`, reports it skipped).
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from millet.files import replacing
from millet.scoring import credit_risk, demand, repayment
from millet.scoring.credit_risk import SERVICE as RISK_SERVICE
from millet.scoring.decisions import ServedModel, annual_rate, offered_line, served_model
from millet.scoring.fitting import day_users_sql, feature_matrix
from millet.scoring.lists import EARLY_WARNING, MODELS, PRE_APPROVAL
from millet.serving.offline.training import training_table
from millet.serving.store import snapshot_timestamp
from millet.settings import Settings, get_settings
from millet.sqltext import literal
from millet.transform import as_of_date, snapshot_path

SINCE_APPLICATION = "credit__applications_days_since_last_180d"
OPEN_LOANS = "credit__loans_active_now"
PAST_DUE = "credit__days_past_due_now"


def list_path(name: str, day: date | str, settings: Settings) -> Path:
    return settings.tracking_dir / name / f"dt={day}" / f"{name}.parquet"


def track_borrowers(ds: str, settings: Settings | None = None) -> dict:
    """Write the day's early-warning list; returns where, and how many borrowers were scored and listed."""
    settings = settings or get_settings()
    day = as_of_date(ds)
    model = _served(EARLY_WARNING, settings)[credit_risk.MODEL]
    borrowers = _open_loans(day, settings)
    now, matrix = _scored(model, borrowers["user_key"], [snapshot_timestamp(day)] * len(borrowers), settings)
    then = _pd_at_application(model, borrowers, day, settings)
    rise = now - then
    riskiest = _top(now, settings.tracking_riskiest)
    rising = _top(np.where(rise > 0, rise, np.nan), settings.tracking_riskiest)
    listed = sorted(set(riskiest) | set(rising), key=lambda i: -now[i])
    table = pa.table({
        "user_key": borrowers["user_key"].to_numpy()[listed].astype(str),
        "pd": now[listed], "pd_at_application": then[listed], "pd_rise": rise[listed],
        "days_since_application": borrowers["since"].to_numpy()[listed],
        "days_past_due_now": borrowers["past_due"].to_numpy()[listed],
        "riskiest": np.isin(listed, riskiest), "rising": np.isin(listed, rising),
        "raised_by": [list(reasons) for reasons in model.raised_by(matrix[listed])] if listed else [],
    }, schema=_EARLY_WARNING_SCHEMA)
    path = _write(table, EARLY_WARNING, day, settings)
    return {"list": str(path), "model": model.name, "borrowers": len(borrowers), "listed": len(listed)}


_EARLY_WARNING_SCHEMA = pa.schema([
    ("user_key", pa.string()), ("pd", pa.float64()), ("pd_at_application", pa.float64()),
    ("pd_rise", pa.float64()), ("days_since_application", pa.float64()), ("days_past_due_now", pa.float64()),
    ("riskiest", pa.bool_()), ("rising", pa.bool_()), ("raised_by", pa.list_(pa.string())),
])


def list_pre_approvals(ds: str, settings: Settings | None = None) -> dict:
    """Write the day's pre-approval list; returns where, and how many users were scored and listed."""
    settings = settings or get_settings()
    day = as_of_date(ds)
    models = _served(PRE_APPROVAL, settings)
    risk, propensity_model = models[credit_risk.MODEL], models[demand.MODEL]
    with duckdb.connect(config=settings.duckdb_config()) as con:
        users = pd.Series(con.execute(day_users_sql(day, settings) + " order by user_key").df()["user_key"])
    stamps = [snapshot_timestamp(day)] * len(users)
    pd_now, _ = _scored(risk, users, stamps, settings, RISK_SERVICE)
    propensity, _ = _scored(propensity_model, users, stamps, settings, demand.SERVICE)
    ability = _features(users, stamps, repayment.SERVICE, settings).to_pylist()
    lines = [offered_line(p, features, settings) for p, features in zip(pd_now, ability, strict=True)]
    quota = round(settings.pre_approval_share * len(users))
    ranked = [i for i in _top(propensity, len(users)) if lines[i] is not None][:quota]
    table = pa.table({
        "user_key": users.to_numpy()[ranked].astype(str), "propensity": propensity[ranked],
        "pd": pd_now[ranked], "annual_rate": [annual_rate(pd_now[i], settings) for i in ranked],
        "credit_line": [lines[i] for i in ranked],
    }, schema=pa.schema([("user_key", pa.string()), ("propensity", pa.float64()), ("pd", pa.float64()),
                         ("annual_rate", pa.float64()), ("credit_line", pa.float64())]))
    path = _write(table, PRE_APPROVAL, day, settings)
    return {"list": str(path), "models": [risk.name, propensity_model.name], "users": len(users),
            "eligible": sum(line is not None for line in lines), "listed": len(ranked)}


def _served(name: str, settings: Settings) -> dict[str, ServedModel]:
    """The served version of each model the list `name` needs, by model name (lists.MODELS names them)."""
    return {model: served_model(settings, model) for model in MODELS[name]}


def _open_loans(day: date, settings: Settings) -> pd.DataFrame:
    """user_key, days since the last application (NaN beyond 180 days) and days past due now, of every
    borrower whose loan book shows an open loan in the day's credit snapshot."""
    with duckdb.connect(config=settings.duckdb_config()) as con:
        return con.execute(f"""
            select user_key, {SINCE_APPLICATION}::double as since, {PAST_DUE}::double as past_due
            from read_parquet({literal(str(snapshot_path('credit', day, settings)))})
            where {OPEN_LOANS} > 0 order by user_key
        """).df()


def _pd_at_application(model: ServedModel, borrowers: pd.DataFrame, day: date,
                        settings: Settings) -> np.ndarray:
    then = np.full(len(borrowers), np.nan)
    known = borrowers["since"].notna().to_numpy()
    eves = [snapshot_timestamp(day - timedelta(days=int(since) + 1)) for since in borrowers["since"][known]]
    if eves:
        then[known], _ = _scored(model, borrowers["user_key"][known], eves, settings)
    return then


def _scored(model: ServedModel, users: pd.Series, stamps: list, settings: Settings,
            service: str = RISK_SERVICE) -> tuple[np.ndarray, np.ndarray]:
    """The model's score of each user with the service's features as of its stamp (NaN where the store
    has none of them), and the feature matrix scored."""
    if not len(users):
        return np.empty(0), np.empty((0, len(model.features)), np.float32)
    matrix = feature_matrix(_features(users, stamps, service, settings), model.features)
    scores = model.scores(matrix)
    return np.where(np.isnan(matrix).all(axis=1), np.nan, scores), matrix


def _features(users: pd.Series, stamps: list, service: str, settings: Settings) -> pa.Table:
    rows = pd.DataFrame({"user_key": users.to_numpy(), "event_timestamp": stamps})
    return training_table(rows, service, settings)


def _top(values: np.ndarray, n: int) -> list[int]:
    """The positions of the n largest values, NaN never among them."""
    order = [i for i in np.argsort(-values, kind="stable") if not np.isnan(values[i])]
    return [int(i) for i in order[:n]]


def _write(table: pa.Table, name: str, day: date, settings: Settings) -> Path:
    path = list_path(name, day, settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(path) as copy:  # a reader sees the old list or the new one, never half of one
        pq.write_table(table, copy)
    return path
