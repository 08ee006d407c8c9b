"""Build the feature snapshot for one as-of date with dbt's programmatic runner."""

from __future__ import annotations

import json
import shutil
from datetime import date, timedelta
from pathlib import Path

from millet.feature_spec import families
from millet.ingest.partition import PART_FILE, partition_dir
from millet.settings import Settings, get_settings


class TransformFailed(RuntimeError):
    pass


def snapshot_path(family: str, day: str | date, settings: Settings | None = None) -> Path:
    """Where dbt's `snapshot_location` macro writes a family's snapshot for `day`."""
    settings = settings or get_settings()
    return partition_dir(settings.snapshots_dir / family, str(day)) / PART_FILE


def build_features(day: str | date, settings: Settings | None = None, full_refresh: bool = False) -> dict:
    """`dbt build` (models and their tests) for as-of `day`; returns each family's snapshot path."""
    settings = settings or get_settings()
    settings.export()
    settings.warehouse_path.parent.mkdir(parents=True, exist_ok=True)
    paths = {fam.name: snapshot_path(fam.name, day, settings) for fam in families()}
    for path in paths.values():
        path.parent.mkdir(parents=True, exist_ok=True)  # DuckDB's COPY does not create folders
    args = ["build", "--vars", json.dumps({"as_of": str(day)}), *_dbt_dirs(settings)]
    if full_refresh:
        args.append("--full-refresh")
    _invoke(args)
    prune_snapshots(day, settings)
    return {name: str(path) for name, path in paths.items()}


def prune_snapshots(day: str | date, settings: Settings) -> list[Path]:
    """Delete each family's snapshots dated more than `snapshot_retention_days` before `day`."""
    if settings.snapshot_retention_days <= 0:
        return []
    oldest = date.fromisoformat(str(day)) - timedelta(days=settings.snapshot_retention_days)
    removed = []
    for fam in families():
        for folder in (settings.snapshots_dir / fam.name).glob("dt=*"):
            if date.fromisoformat(folder.name.removeprefix("dt=")) < oldest:
                shutil.rmtree(folder)
                removed.append(folder)
    return removed


def _dbt_dirs(settings: Settings) -> list[str]:
    # target/ and logs/ go under the data root, so runs never dirty the repository.
    work = settings.root / "dbt"
    project = str(settings.dbt_project_dir)
    return ["--project-dir", project, "--profiles-dir", project,
            "--target-path", str(work / "target"), "--log-path", str(work / "logs")]


def _invoke(args: list[str]) -> None:
    from dbt.cli.main import dbtRunner  # heavy; only when a task actually runs

    result = dbtRunner().invoke(args)
    if not result.success:
        raise TransformFailed(f"dbt {args[0]} failed: {result.exception or 'see the dbt log above'}")
