"""Point-in-time-correct training sets, through Feast's `get_historical_features`.

Each label row (user_key, timestamp, label) gets the features of the latest snapshot stamped at or
before its timestamp (and within the feature view's TTL): what the lender knew at that moment, never
what it learnt later.

    from millet.serving.offline.training import training_set
    frame = training_set("labels.parquet", service="credit_risk_v1")
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from millet.serving.store import DEFAULT_SERVICE, open_store
from millet.settings import Settings

TIMESTAMP = "event_timestamp"
TIMESTAMP_ALIASES = ("timestamp", "label_timestamp")


class BadLabels(ValueError):
    pass


def training_set(labels: pd.DataFrame | str | Path, service: str = DEFAULT_SERVICE,
                 settings: Settings | None = None) -> pd.DataFrame:
    """The label rows with the service's features as of each row's timestamp, in the labels' order."""
    return training_table(labels, service, settings).to_pandas()


def training_table(labels: pd.DataFrame | str | Path, service: str = DEFAULT_SERVICE,
                   settings: Settings | None = None) -> pa.Table:
    """training_set as an Arrow table: what `millet training-set` writes, with no pandas copy of it."""
    entity_df = entity_frame(read_labels(labels) if isinstance(labels, str | Path) else labels)
    store = open_store(settings)
    job = store.get_historical_features(entity_df=entity_df, features=store.get_feature_service(service))
    return in_label_order(job.to_arrow())


def in_label_order(table: pa.Table) -> pa.Table:
    """Feast does not promise an order (Millet's offline store keeps the entity frame's; Feast's own
    does not), so rows are put back in the labels' order unless they are in it already."""
    rows = table["_label_row"].to_numpy()
    if not np.array_equal(rows, np.arange(len(rows))):
        table = table.take(pc.sort_indices(table["_label_row"]))
    return table.drop_columns("_label_row")


def read_labels(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise BadLabels(f"{path}: no such file")
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    if path.suffix == ".csv":
        return pd.read_csv(path)
    raise BadLabels(f"{path}: labels are read from .parquet or .csv")


def entity_frame(labels: pd.DataFrame) -> pd.DataFrame:
    """Feast's entity frame: user_key, a UTC event_timestamp, the label columns, and the row order."""
    aliases = {} if TIMESTAMP in labels else {a: TIMESTAMP for a in TIMESTAMP_ALIASES if a in labels}
    frame = labels.rename(columns=aliases)
    missing = {"user_key", TIMESTAMP} - set(frame.columns)
    if missing:
        raise BadLabels(f"labels need columns user_key and {TIMESTAMP} (or timestamp); "
                        f"missing {sorted(missing)}")
    try:
        stamps = pd.to_datetime(frame[TIMESTAMP], utc=True)
    except (ValueError, TypeError) as exc:
        raise BadLabels(f"{TIMESTAMP} must hold timestamps: {exc}") from None
    if stamps.isna().any():
        raise BadLabels(f"{int(stamps.isna().sum())} label rows have no {TIMESTAMP}")
    return frame.assign(**{TIMESTAMP: stamps, "user_key": frame["user_key"].astype(str),
                           "_label_row": range(len(frame))})
