"""Run a GX checkpoint per feature family over the day's snapshot; keep the results; gate publication."""

from __future__ import annotations

import json
from datetime import date

from millet.feature_spec import Family, families
from millet.quality.suites import feature_suite, load_thresholds
from millet.settings import Settings, get_settings
from millet.transform import snapshot_path


class QualityGateFailed(RuntimeError):
    pass


def check_features(day: str | date, settings: Settings | None = None) -> dict:
    """Validate every family's snapshot for `day`; raise QualityGateFailed if any critical check fails."""
    settings = settings or get_settings()
    settings.export()
    config = load_thresholds(settings.expectations_dir)
    summary = {fam.name: _run_checkpoint(fam, str(day), config, settings) for fam in families()}
    out = settings.root / "quality" / f"dt={day}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")
    failed = {name: s["failed"] for name, s in summary.items() if not s["success"]}
    if failed:
        raise QualityGateFailed(f"critical data-quality checks failed for {day}: {failed} (details: {out})")
    return summary


def _run_checkpoint(family: Family, day: str, config: dict, settings: Settings) -> dict:
    import great_expectations as gx
    import pandas as pd

    frame = pd.read_parquet(snapshot_path(family.name, day, settings))
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)  # task logs, not a terminal
    batch = (
        context.data_sources.add_pandas(name=f"snapshots_{family.name}")
        .add_dataframe_asset(name=family.model)
        .add_batch_definition_whole_dataframe(name="as_of_day")
    )
    suite = context.suites.add(feature_suite(family, config))
    validation = context.validation_definitions.add(
        gx.ValidationDefinition(name=f"{family.name}_snapshot", data=batch, suite=suite)
    )
    checkpoint = context.checkpoints.add(
        gx.Checkpoint(name=f"{family.name}_gate", validation_definitions=[validation])
    )
    result = checkpoint.run(batch_parameters={"dataframe": frame})
    outcomes = [r for run in result.run_results.values() for r in run.results]
    severity = config["checks"]
    failed = {_describe(r): severity[r.expectation_config.meta["check"]] for r in outcomes if not r.success}
    return {
        "success": "critical" not in failed.values(),
        "rows": len(frame),
        "evaluated": len(outcomes),
        "failed": [name for name, severity in failed.items() if severity == "critical"],
        "warnings": [name for name, severity in failed.items() if severity != "critical"],
    }


def _describe(outcome) -> str:
    config = outcome.expectation_config
    return f"{config.type}:{config.kwargs.get('column', 'table')}"
