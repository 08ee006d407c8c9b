"""Runs dbt for a logical date (nothing else)."""

from millet.transform.dbt import AsOfInFuture, TransformFailed, build_features, snapshot_path

__all__ = ["AsOfInFuture", "TransformFailed", "build_features", "snapshot_path"]
