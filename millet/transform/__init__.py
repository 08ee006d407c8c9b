"""Runs dbt for a logical date (nothing else)."""

from millet.transform.dbt import (
    AsOfInFuture,
    TransformFailed,
    as_of_date,
    build_features,
    reconciliation_path,
    snapshot_path,
)

__all__ = ["AsOfInFuture", "TransformFailed", "as_of_date", "build_features", "reconciliation_path",
           "snapshot_path"]
