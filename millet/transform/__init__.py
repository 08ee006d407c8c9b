"""Runs dbt for a logical date (nothing else)."""

from millet.transform.dbt import build_features, snapshot_path

__all__ = ["build_features", "snapshot_path"]
