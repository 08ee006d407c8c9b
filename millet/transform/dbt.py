"""Build the feature snapshot for one as-of date with dbt's programmatic runner.

A successful build leaves a record, manifests/features/dt=<day>.json. Old snapshots are pruned relative
to the latest recorded build on or before the as-of day, never relative to the date a person typed: a
date typed far ahead (the build for it succeeds on whatever bronze there is) cannot delete history.
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from millet.feature_spec import families
from millet.ingest.partition import PART_FILE, partition_dir
from millet.settings import Settings, get_settings


class TransformFailed(RuntimeError):
    pass


class AsOfInFuture(TransformFailed, ValueError):
    pass


def snapshot_path(family: str, day: str | date, settings: Settings | None = None) -> Path:
    """Where dbt's `snapshot_location` macro writes a family's snapshot for `day`."""
    settings = settings or get_settings()
    return partition_dir(settings.snapshots_dir / family, str(day)) / PART_FILE


def reconciliation_path(day: str | date, settings: Settings) -> Path:
    """Where dbt's rec_bank_repayments__unconfirmed writes the day's unconfirmed repayments."""
    return partition_dir(settings.reconciliation_dir, str(day)) / PART_FILE


def build_features(day: str | date, settings: Settings | None = None, full_refresh: bool = False) -> dict:
    """`dbt build` (models and their tests) for as-of `day`; returns each family's snapshot path.
    Refuses an as-of day after today (UTC) before anything runs."""
    settings = settings or get_settings()
    day = as_of_date(day)
    settings.export()
    settings.warehouse_path.parent.mkdir(parents=True, exist_ok=True)
    paths = {fam.name: snapshot_path(fam.name, day, settings) for fam in families()}
    for path in [*paths.values(), reconciliation_path(day, settings)]:
        path.parent.mkdir(parents=True, exist_ok=True)  # DuckDB's COPY does not create folders
    dbt_vars = {"as_of": str(day), "bank_booking_lag_days": settings.bank_booking_lag_days}
    args = ["build", "--vars", json.dumps(dbt_vars), *_dbt_dirs(settings)]
    if full_refresh:
        args.append("--full-refresh")
    _invoke(args)
    prune_snapshots(day, settings)  # before this build is recorded: it is not yet a run to prune from
    built = {name: str(path) for name, path in paths.items()}
    record_build(day, built, settings)
    return built


def as_of_date(day: str | date) -> date:
    """`day` as a date; AsOfInFuture if it has not begun yet (UTC): a mistyped year must not run."""
    as_of = date.fromisoformat(str(day))
    today = datetime.now(UTC).date()
    if as_of > today:
        raise AsOfInFuture(f"as-of date {as_of} is after today ({today}, UTC): features are built only "
                           "for days that have begun; check the date")
    return as_of


def _builds_dir(settings: Settings) -> Path:
    return settings.manifests_dir / "features"


def record_build(day: str | date, snapshots: dict[str, str], settings: Settings) -> Path:
    """Note that the build for `day` succeeded (dbt's models and tests), with the snapshots it wrote."""
    path = _builds_dir(settings) / f"dt={day}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"as_of": str(day), "snapshots": snapshots}, indent=2) + "\n")
    return path


def latest_build(on_or_before: str | date, settings: Settings) -> date | None:
    """The latest as-of day on or before `on_or_before` whose build succeeded; None if there is none."""
    limit = date.fromisoformat(str(on_or_before))
    return max((d for d in _recorded_builds(settings) if d <= limit), default=None)


def earliest_build(settings: Settings) -> date | None:
    """The first as-of day whose build succeeded (where the recorded history starts); None if none."""
    return min(_recorded_builds(settings), default=None)


def _recorded_builds(settings: Settings) -> list[date]:
    return [date.fromisoformat(p.stem.removeprefix("dt=")) for p in _builds_dir(settings).glob("dt=*.json")]


def prune_snapshots(day: str | date, settings: Settings) -> list[Path]:
    """Delete each family's snapshots dated more than `snapshot_retention_days` before the latest
    successful build on or before `day` (see `latest_build`); with no such build, nothing."""
    latest = latest_build(day, settings)
    if settings.snapshot_retention_days <= 0 or latest is None:
        return []
    oldest = latest - timedelta(days=settings.snapshot_retention_days)
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

    try:
        result = dbtRunner().invoke(args)
    finally:
        _release_warehouse()
    if not result.success:
        raise TransformFailed(f"dbt {args[0]} failed: {result.exception or 'see the dbt log above'}")


def _release_warehouse() -> None:
    """Close dbt-duckdb's DuckDB connection. Its environment is a process-wide singleton that stays open
    after dbt returns, holding the warehouse file's lock: no other process (an Airflow task, a person's
    DuckDB shell) could open the warehouse while the process that built it lives on."""
    from dbt.adapters.duckdb.connections import DuckDBConnectionManager

    try:
        DuckDBConnectionManager.env().close()
    except Exception:  # noqa: BLE001 - no environment: dbt never opened the warehouse
        return
    DuckDBConnectionManager.close_all_connections()
