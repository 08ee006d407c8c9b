"""Measure each family's drift against its baseline snapshot, keep it, and run a GX checkpoint per family
over it; a failed critical check stops publication."""

from __future__ import annotations

import json
from datetime import date, timedelta

import pyarrow as pa
import pyarrow.parquet as pq

from millet.feature_spec import Family, families
from millet.files import replacing, write_text
from millet.ingest.partition import PART_FILE, partition_dir
from millet.quality.drift import feature_drift
from millet.quality.gx import GxProject
from millet.quality.suites import drift_suite, load_thresholds, severities
from millet.settings import Settings, get_settings
from millet.transform import snapshot_path
from millet.transform.dbt import earliest_build, latest_build


class QualityGateFailed(RuntimeError):
    pass


def check_features(day: str | date, settings: Settings | None = None) -> dict:
    """Validate every family's snapshot for `day`; raise QualityGateFailed if any critical check fails."""
    settings = settings or get_settings()
    config = load_thresholds(settings.expectations_dir)
    baseline = drift_baseline(day, settings)
    warming_up = _warming_up(baseline, config["drift"]["warm_up_days"], settings)
    drift = {fam.name: family_drift(fam, day, baseline, settings) for fam in families()}
    severity, project = severities(config, warming_up), GxProject(settings)
    summary = {name: {"baseline": str(baseline) if baseline else None, "warming_up": warming_up,
                      **_run_checkpoint(project, name, table, config, severity, str(day))}
               for name, table in drift.items()}
    project.build_data_docs()
    _keep_drift(drift, day, settings)
    out = settings.root / "quality" / f"dt={day}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text(out, json.dumps(summary, indent=2) + "\n")
    failed = {name: s["failed"] for name, s in summary.items() if not s["success"]}
    if failed:
        raise QualityGateFailed(f"critical data-quality checks failed for {day}: {failed} (details: {out})")
    return summary


def drift_baseline(day: str | date, settings: Settings) -> date | None:
    """The pinned baseline date if one is set, else the latest successful build before `day`."""
    if settings.drift_baseline_date is not None:
        return settings.drift_baseline_date
    return latest_build(date.fromisoformat(str(day)) - timedelta(days=1), settings)


def _warming_up(baseline: date | None, warm_up_days: int, settings: Settings) -> bool:
    """Whether history on the baseline day is still shorter than the warm-up (counted from the first
    successful build)."""
    first = earliest_build(settings)
    return baseline is None or first is None or (baseline - first).days < warm_up_days


def family_drift(family: Family, day: str | date, baseline: date | None, settings: Settings) -> pa.Table:
    """The family's drift table for `day` (millet.quality.drift); empty without a baseline snapshot."""
    features = [f.name for f in family.features]
    base_path = snapshot_path(family.name, baseline, settings) if baseline else None
    if base_path is None or not base_path.exists():
        features = []  # the first day, or the baseline pruned: nothing to compare with
    return feature_drift(snapshot_path(family.name, day, settings), base_path, features,
                         settings.duckdb_config())


def drift_path(day: str | date, settings: Settings):
    return partition_dir(settings.root / "quality" / "drift", str(day)) / PART_FILE


def _keep_drift(drift: dict[str, pa.Table], day: str | date, settings: Settings) -> None:
    """All families' drift for the day, one table, so the trend of any feature can be plotted."""
    tables = [t.append_column("family", pa.array([name] * t.num_rows, pa.string()))
              for name, t in drift.items()]
    path = drift_path(day, settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(path) as copy:
        pq.write_table(pa.concat_tables(tables), copy)


def _run_checkpoint(project: GxProject, family: str, drift: pa.Table, config: dict, severity: dict[str, str],
                    day: str) -> dict:
    """The family's checkpoint over its drift table; each failure alerted by the checkpoint's action."""
    def describe(check: str, result) -> tuple[str, dict, list[str]]:
        names = _failing(check, result, drift)
        detail = names[0] if check == "population" else f"{len(names)} features beyond the limit"
        return detail, {"failing": len(names)}, names

    outcome = project.run_checkpoint(
        f"{family}_drift", lambda: drift_suite(family, config), drift.to_pandas(), dataset=family, day=day,
        prefix="snapshot", severity=severity, describe=describe, index_column="feature")
    return {
        "success": not outcome.failed,
        "features": drift.num_rows,
        "evaluated": outcome.evaluated,
        "failed": {check: _failing(check, r, drift) for check, r in outcome.failed.items()},
        "warnings": {check: _failing(check, r, drift) for check, r in outcome.warnings.items()},
        "docs": outcome.docs,
    }


def _failing(check: str, result, drift: pa.Table) -> list[str]:
    """The features an expectation found outside its bounds, as GX reports them (index column `feature`);
    for the population check, which holds for the family as a whole, its users against the baseline's."""
    if check == "population":
        return [f"{drift['rows'][0]} users, baseline {drift['baseline_rows'][0]}"]
    return sorted(row["feature"] for row in result.result.get("unexpected_index_list") or [])
