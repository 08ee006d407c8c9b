"""Figures about what a run produced, for the CLI and the demo."""

from __future__ import annotations

from datetime import date

import pyarrow.parquet as pq

from millet.feature_spec import families
from millet.settings import Settings, get_settings
from millet.transform import snapshot_path


def snapshot_size(day: date | str, settings: Settings | None = None) -> dict:
    """Users, features, values and bytes in the as-of snapshot, plus its most active user."""
    settings = settings or get_settings()
    users: set[str] = set()
    n_features = values = size = 0
    example, best = None, -1
    for fam in families():
        path = snapshot_path(fam.name, day, settings)
        size += path.stat().st_size
        table = pq.read_table(path)
        keys = table.column("user_key").to_pylist()
        users.update(keys)
        n_features += len(fam.features)
        values += table.num_rows * len(fam.features)
        activity = table.column(fam.features[0].name).to_pylist()
        for key, value in zip(keys, activity, strict=True):
            if (value or 0) > best:
                example, best = key, value or 0
    return {"users": len(users), "features": n_features, "values": values, "bytes": size,
            "example_user_key": example}
