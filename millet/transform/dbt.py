"""Build the feature snapshot for one as-of date with dbt's programmatic runner.

Each family's windows roll forward from yesterday's state (dbt's models/state, see
macros/rolling_window_state.sql). They are rebuilt from the daily partials instead when yesterday's
state is missing (the first night, a gap), on demand, and on a schedule (`rebase_every_days`); a
scheduled or requested re-base also rolls the state forward first and compares the two, and any
difference is alerted: it would mean a rolled value had been wrong.

A successful build leaves a record, manifests/features/dt=<day>.json. Old snapshots are pruned relative
to the latest recorded build on or before the as-of day, never relative to the date a person typed: a
date typed far ahead (the build for it succeeds on whatever bronze there is) cannot delete history.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from millet.alerts import Alert, raise_alerts, report_path
from millet.feature_spec import families
from millet.files import write_text
from millet.ingest.partition import PART_FILE, partition_dir, remove_partitions_before
from millet.privacy.erasure import ensure_tombstones
from millet.settings import Settings, get_settings
from millet.sqltext import literal


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


def state_models(settings: Settings) -> list[str]:
    """The dbt models that carry state from one night to the next (models/state)."""
    return sorted(p.stem for p in (settings.dbt_project_dir / "models" / "state").rglob("*.sql"))


def state_path(model: str, day: str | date, settings: Settings) -> Path:
    """Where dbt's `state_location` macro writes a state model's file for `day`."""
    return partition_dir(settings.state_dir / model, str(day)) / PART_FILE


def build_features(day: str | date, settings: Settings | None = None, full_refresh: bool = False,
                   rebase: bool = False) -> dict:
    """`dbt build` (models and their tests) for as-of `day`; returns each family's snapshot path.
    `rebase` (or `full_refresh`, or a scheduled re-base day) rebuilds every window from the daily
    partials. Refuses an as-of day after today (UTC) before anything runs."""
    settings = settings or get_settings()
    day = as_of_date(day)
    settings.export()
    settings.warehouse_path.parent.mkdir(parents=True, exist_ok=True)
    ensure_tombstones(settings)
    paths = {fam.name: snapshot_path(fam.name, day, settings) for fam in families()}
    states = {model: state_path(model, day, settings) for model in state_models(settings)}
    for path in _day_files(day, settings):
        path.parent.mkdir(parents=True, exist_ok=True)
    can_roll = all(state_path(model, day - timedelta(days=1), settings).exists() for model in states)
    rebase = rebase or full_refresh or is_rebase_day(day, settings) or not can_roll
    with _user_slice_folders(settings):
        rolled = _roll_aside(day, states, settings) if rebase and can_roll else None
        run_dbt(["build", *(["--full-refresh"] if full_refresh else [])], day, settings, rebase=rebase)
    differences = _compare_with_rolled(day, rolled, states, settings) if rolled else None
    prune_snapshots(day, settings)  # before this build is recorded: it is not yet a run to prune from
    prune_state(day, settings)
    built = {name: str(path) for name, path in paths.items()}
    record_build(day, built, settings, state="rebuilt" if rebase else "rolled", rolled_vs_rebuilt=differences)
    return built


def build_history(first: str | date, last: str | date, settings: Settings | None = None) -> dict[str, dict]:
    """Every daily snapshot from `first` to `last` in one pass: the first night as `build_features` builds
    it (rolled from the day before's state, or rebuilt), then one `dbt build` that appends the range's
    arrivals to the daily partials and runs each state and mart model for every later day in turn (the
    nights' own SQL: macros/as_of.sql), each day rolled from the one before. The same snapshots as night by
    night; no scheduled re-base inside the range (the first night is rebuilt when nothing precedes it), and
    dbt's tests run on the first and the last day's snapshots only. Returns each day's snapshot paths."""
    settings = settings or get_settings()
    first, last = as_of_date(first), as_of_date(last)
    if last < first:
        raise TransformFailed(f"history from {first} to {last}: the last day is before the first")
    built = {str(first): build_features(first, settings)}
    days = [first + timedelta(days=n) for n in range(1, (last - first).days + 1)]
    if not days:
        return built
    for day in days:
        for path in _day_files(day, settings):
            path.parent.mkdir(parents=True, exist_ok=True)
    with _user_slice_folders(settings):
        run_dbt(["build"], last, settings, history_from=days[0])
    prune_snapshots(last, settings)
    prune_state(last, settings)
    for day in days:
        built[str(day)] = {fam.name: str(snapshot_path(fam.name, day, settings)) for fam in families()}
        # dbt's tests read each model's view, which points at the last day written
        tests = {} if day == last else {"dbt_tests": f"not run: a history build tests its last day, {last}"}
        record_build(day, built[str(day)], settings, state="rolled", history_from=str(first), **tests)
    return built


def _day_files(day: date, settings: Settings) -> list[Path]:
    """The files dbt writes for as-of `day` (DuckDB's COPY does not create their folders)."""
    return [*(snapshot_path(fam.name, day, settings) for fam in families()),
            *(state_path(model, day, settings) for model in state_models(settings)),
            reconciliation_path(day, settings)]


def user_slices_dir(settings: Settings) -> Path:
    """Where the state models' user slices are written while dbt runs (the `external` materialization's
    write_in_user_slices names the files in it); each model's slices are concatenated into its day's file."""
    return settings.state_dir / "_slices"


@contextlib.contextmanager
def _user_slice_folders(settings: Settings):
    """user_slices_dir, there while dbt runs and removed after."""
    folder = user_slices_dir(settings) if settings.state_user_slices > 1 else None
    if folder:
        folder.mkdir(parents=True, exist_ok=True)
    try:
        yield
    finally:
        if folder:
            shutil.rmtree(folder, ignore_errors=True)


def is_rebase_day(day: date, settings: Settings) -> bool:
    """A scheduled re-base: every `rebase_every_days` days (as-of days whose ordinal is a multiple)."""
    return settings.rebase_every_days > 0 and day.toordinal() % settings.rebase_every_days == 0


def _roll_aside(day: date, states: dict[str, Path], settings: Settings) -> dict[str, Path]:
    """Roll the state forward as on any night (and the intermediate models it reads), then move it aside
    for the comparison with the re-based state."""
    run_dbt(["run", "--select", "+path:models/state"], day, settings)
    aside = {}
    for model, path in states.items():
        aside[model] = path.with_name("rolled.parquet")
        path.replace(aside[model])
    return aside


def _compare_with_rolled(day: date, rolled: dict[str, Path], states: dict[str, Path],
                         settings: Settings) -> dict[str, int]:
    """Rows that differ between the rolled and the re-based state, per state model; a warning alert for
    each model with any (the re-based values are the ones published)."""
    differences = {model: state_differences(rolled[model], states[model], settings) for model in states}
    for path in rolled.values():
        path.unlink()
    alerts = [Alert(severity="warning", check="rolled_state_matches_rebuild", dataset=model,
                    logical_date=str(day), counts={"rows_differing": count},
                    report=str(report_path(str(day), settings)),
                    summary=f"{count} rows of the state carried from yesterday differed from a full "
                            "recomputation; the recomputed values were published (a bug in rolling the "
                            "state forward: earlier nights may have been wrong)")
              for model, count in differences.items() if count]
    raise_alerts(alerts, settings)
    return differences


def state_differences(left: Path, right: Path, settings: Settings) -> int:
    """Rows of one state file not in the other, both ways (as multisets)."""
    import duckdb

    a, b = f"read_parquet({literal(str(left))})", f"read_parquet({literal(str(right))})"
    with duckdb.connect(config=settings.duckdb_config()) as con:
        return con.execute(f"select count(*) from ((from {a} except all from {b}) "
                       f"union all (from {b} except all from {a}))").fetchone()[0]


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


def record_build(day: str | date, snapshots: dict[str, str], settings: Settings, **details) -> Path:
    """Note that the build for `day` succeeded (dbt's models, and its tests unless `details` says
    otherwise), with the snapshots it wrote and `details` (how its windows were computed)."""
    path = _builds_dir(settings) / f"dt={day}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps({"as_of": str(day), "snapshots": snapshots, **details}, indent=2) + "\n")
    return path


def read_build(day: str | date, settings: Settings) -> dict:
    return json.loads((_builds_dir(settings) / f"dt={day}.json").read_text())


def latest_build(on_or_before: str | date, settings: Settings) -> date | None:
    """The latest as-of day on or before `on_or_before` whose build succeeded; None if there is none."""
    limit = date.fromisoformat(str(on_or_before))
    return max((d for d in built_days(settings) if d <= limit), default=None)


def earliest_build(settings: Settings) -> date | None:
    """The first as-of day whose build succeeded (where the recorded history starts); None if none."""
    return min(built_days(settings), default=None)


def built_days(settings: Settings) -> list[date]:
    """Every as-of day whose build succeeded, in order."""
    records = _builds_dir(settings).glob("dt=*.json")
    return sorted(date.fromisoformat(p.stem.removeprefix("dt=")) for p in records)


def prune_snapshots(day: str | date, settings: Settings) -> list[Path]:
    """Delete each family's snapshots dated more than `snapshot_retention_days` before the latest
    successful build on or before `day` (see `latest_build`); with no such build, nothing."""
    latest = latest_build(day, settings)
    if settings.snapshot_retention_days <= 0 or latest is None:
        return []
    oldest = latest - timedelta(days=settings.snapshot_retention_days)
    return remove_partitions_before(oldest, [settings.snapshots_dir / fam.name for fam in families()])


def prune_state(day: date, settings: Settings) -> list[Path]:
    """Delete each state model's files dated more than `state_retention_days` before `day`: only
    yesterday's is read; the rest lets a recent night be re-run without a re-base."""
    oldest = day - timedelta(days=settings.state_retention_days)
    return remove_partitions_before(oldest, [settings.state_dir / m for m in state_models(settings)])


def build_docs(day: date, settings: Settings) -> Path:
    """dbt's docs for as-of `day` (lineage from the bronze sources to the marts, every column's description,
    the warehouse's catalog) as one self-contained page; returns it."""
    settings.export()
    target = settings.docs_dir / "dbt"
    run_dbt(["docs", "generate", "--static"], day, settings, target=target)
    return target / "static_index.html"


def run_dbt(command: list[str], day: date, settings: Settings, rebase: bool = False,
            history_from: date | None = None, target: Path | None = None) -> None:
    """dbt `command` (e.g. ["build"]) for as-of `day` (for every day from `history_from` to it, if given;
    `rebase`: every window rebuilt from the daily partials) with Millet's settings; dbt's artifacts to
    `target` (default dbt_target_dir), its log to dbt_log_path. Raises TransformFailed if dbt fails."""
    run = {"as_of": str(day), "rebase": rebase, "history_from": str(history_from) if history_from else None}
    settings_vars = {"bank_booking_lag_days": settings.bank_booking_lag_days,
                     "user_slices": settings.state_user_slices,
                     "user_slices_dir": str(user_slices_dir(settings))}
    dirs = _dbt_dirs(settings, target or dbt_target_dir(settings))
    with _run_values(run):
        _invoke([*command, "--vars", json.dumps(settings_vars), *dirs], settings)


@contextlib.contextmanager
def _run_values(run: dict):
    """The run's values in the environment while dbt runs, as MILLET_RUN_<NAME> (JSON), where the macro
    run_var reads them (macros/as_of.sql): in --vars, each night's new day would make dbt re-parse the
    whole project, seconds of every run. The settings' vars stay in --vars (the same every run)."""
    names = {f"MILLET_RUN_{name.upper()}": value for name, value in run.items()}
    before = {name: os.environ.pop(name, None) for name in names}
    os.environ.update({name: json.dumps(value) for name, value in names.items() if value is not None})
    try:
        yield
    finally:
        for name, value in before.items():
            os.environ.pop(name, None)
            if value is not None:
                os.environ[name] = value


def dbt_target_dir(settings: Settings) -> Path:
    """dbt's artifacts of Millet's runs: the manifest, run results, compiled SQL."""
    return settings.root / "dbt" / "target"


def dbt_log_path(settings: Settings) -> Path:
    """dbt's own log of every invocation Millet makes (the console gets its errors only)."""
    return settings.root / "dbt" / "logs" / "dbt.log"


def _dbt_dirs(settings: Settings, target: Path) -> list[str]:
    # target/ and logs/ go under the data root, so runs never dirty the repository.
    project = str(settings.dbt_project_dir)
    return ["--project-dir", project, "--profiles-dir", project,
            "--target-path", str(target),
            "--log-path", str(dbt_log_path(settings).parent),
            "--quiet"]  # errors only on the console; everything in logs/dbt.log


def _invoke(args: list[str], settings: Settings) -> None:
    from dbt.cli.main import dbtRunner  # heavy; only when a task actually runs

    try:
        result = dbtRunner().invoke(args)
    finally:
        _release_warehouse()
    if not result.success:
        raise TransformFailed(f"dbt {args[0]} failed: {result.exception or 'its errors are in its log'}; "
                              f"dbt's log: {dbt_log_path(settings)}")


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
