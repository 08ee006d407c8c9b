"""Benchmark: the nightly quality stage for one day at scale, and the gate it replaced, side by side.

    .venv/bin/python bench/bench_quality.py --users 1000000 --feed-users 1000000 --compare-users 60000

1. World: the simulator's feeds for --feed-users users over two days, ingested (bronze, manifests); the
   reconciliation table built by dbt (`dbt run` of rec_bank_repayments__unconfirmed and what it reads);
   feature snapshots with the spec's real schema (1,251 features) for --users users on both days (synthetic
   values, as bench_materialize writes them: a full dbt build at 1M users is the transform benchmark's
   subject), one feature drifted on the second day.
2. The quality stage of the second day, in a process of its own (its peak RSS is its own): raw-feed checks,
   the reconciliation check, the snapshot gate (drift in DuckDB + GX), the report.
3. Side by side on a --compare-users slice of the same snapshot, each in its own process: the gate before
   issue 12 (GX's pandas engine, one range expectation per feature, 1,251) and today's snapshot gate.
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from bench_materialize import _write_snapshots  # the synthetic snapshot with the real schema

DAY = date(2026, 1, 2)
DRIFTED = "payments__amount_paid_sum_30d"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--feed-users", type=int, default=1_000_000)
    parser.add_argument("--compare-users", type=int, default=60_000)
    parser.add_argument("--stage", nargs=2, metavar=("ROOT", "WHAT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage:
        return _stage(Path(args.stage[0]), args.stage[1])
    with tempfile.TemporaryDirectory(prefix="bench-quality-") as tmp:
        root = Path(tmp)
        setup = _world(root / "full", args.users, args.feed_users)
        _slice(root / "full", root / "slice", args.compare_users)
        result = {
            "users": args.users, "feed_users": args.feed_users, "setup_s": setup,
            "quality_stage": _in_process(root / "full", "stage"),
            "compare_users": args.compare_users,
            "gate_before": _in_process(root / "slice", "gate_before"),
            "gate_now": _in_process(root / "slice", "gate_now"),
        }
        result["speed_up"] = round(result["gate_before"]["seconds"] / result["gate_now"]["seconds"], 1)
        print(json.dumps(result))


def _settings(root: Path):
    from millet.settings import Settings

    return Settings(data_root=root / "data", secrets_dir=root / "secrets", pseudonym_key="bench-key")


def _world(root: Path, users: int, feed_users: int) -> float:
    from millet.contracts import ingestion_order
    from millet.ingest import ingest_channel_day
    from millet.simulate import simulate
    from millet.simulate.faults import Faults
    from millet.transform.dbt import record_build

    started = time.monotonic()
    settings = _settings(root)
    first = DAY - timedelta(days=1)
    simulate(settings.landing_dir, users=feed_users, days=2, start=first, seed=3,
             faults=Faults.realistic(first), truth_dir=settings.truth_dir)
    for day in (first, DAY):
        for channel in ingestion_order():
            ingest_channel_day(channel, day, settings)
    _build_reconciliation(settings)
    for day in (first, DAY):
        _write_snapshots(settings.snapshots_dir, users, None, str(day))
        record_build(day, {}, settings)
    _drift_one_feature(settings)
    return round(time.monotonic() - started, 1)


def _build_reconciliation(settings) -> None:
    """`dbt run` of the reconciliation model alone (and the staging views it reads), as the nightly build
    would run it, with the same variables."""
    from millet.transform.dbt import reconciliation_path, run_dbt

    settings.export()
    settings.warehouse_path.parent.mkdir(parents=True, exist_ok=True)
    reconciliation_path(DAY, settings).parent.mkdir(parents=True, exist_ok=True)
    run_dbt(["run", "--select", "+rec_bank_repayments__unconfirmed"], DAY, settings)


def _drift_one_feature(settings) -> None:
    from millet.transform import snapshot_path

    path = snapshot_path("payments", DAY, settings)
    table = pq.read_table(path)
    index = table.schema.get_field_index(DRIFTED)
    tripled = pc.multiply(table.column(DRIFTED), pa.scalar(3.0, pa.float32()))
    pq.write_table(table.set_column(index, DRIFTED, tripled), path, compression="zstd")


def _slice(full: Path, out: Path, users: int) -> None:
    """The first `users` rows of both days' snapshots, with the build records, as a world of its own."""
    for path in (full / "data").rglob("snapshots/*/dt=*/*.parquet"):
        target = out / path.relative_to(full)
        target.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pq.read_table(path).slice(0, users), target, compression="zstd")
    for path in (full / "data" / "manifests" / "features").glob("*.json"):
        target = out / path.relative_to(full)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(path.read_text())


def _in_process(root: Path, what: str) -> dict:
    done = subprocess.run([sys.executable, __file__, "--stage", str(root), what], capture_output=True,
                          text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _stage(root: Path, what: str) -> None:
    settings = _settings(root)
    started, outcome = time.monotonic(), {}
    if what == "stage":
        outcome = _quality_stage(settings)
    elif what == "gate_now":
        from millet.quality.checkpoint import check_features

        outcome = _failures(check_features(DAY, settings))
    else:
        outcome = _gate_before(settings)
    print(json.dumps({"seconds": round(time.monotonic() - started, 1), "peak_rss_gb": _peak_rss_gb(),
                      **outcome}))


def _peak_rss_gb() -> float:
    """This process's own peak (VmHWM): getrusage's ru_maxrss carries the parent's over fork and exec."""
    status = Path("/proc/self/status").read_text()
    kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:"))
    return round(kb / 2**20, 2)


def _quality_stage(settings) -> dict:
    from millet.quality.checkpoint import QualityGateFailed, check_features
    from millet.quality.feeds import FeedCheckFailed, check_feeds
    from millet.quality.reconcile import ReconciliationFailed, reconcile_repayments
    from millet.quality.report import write_report

    steps, outcome = {}, {}
    for name, run, failure in [("raw_feeds", check_feeds, FeedCheckFailed),
                               ("reconciliation", reconcile_repayments, ReconciliationFailed),
                               ("snapshot_gate", check_features, QualityGateFailed),
                               ("report", write_report, None)]:
        started = time.monotonic()
        try:
            result = run(DAY, settings)
            outcome[name] = _failures(result) if name == "snapshot_gate" else "ok"
        except failure as exc:  # a critical finding is an outcome here, not an error
            outcome[name] = f"critical: {str(exc)[:200]}"
        steps[name] = round(time.monotonic() - started, 1)
    return {"steps_s": steps, "outcome": outcome}


def _failures(summary: dict) -> dict:
    return {family: {**s["failed"], **s["warnings"]} for family, s in summary.items()
            if s["failed"] or s["warnings"]}


def _gate_before(settings) -> dict:
    """The gate as it was before issue 12 (commit 7b2db33^): every family's snapshot into pandas, one GX
    range expectation per feature (bounds by aggregation), keys and row count, on GX's pandas engine."""
    import great_expectations as gx
    import great_expectations.expectations as gxe
    import pandas as pd
    from great_expectations.data_context.types.base import ProgressBarsConfig

    from millet.feature_spec import families
    from millet.transform import snapshot_path

    bounds = {"share": (0, 1), "days_since_last": (0, 180), "mean": (0, 1e9)}
    evaluated = 0
    for fam in families():
        frame = pd.read_parquet(snapshot_path(fam.name, DAY, settings))
        context = gx.get_context(mode="ephemeral")
        context.variables.progress_bars = ProgressBarsConfig(globally=False)
        batch = (context.data_sources.add_pandas(name=f"s_{fam.name}").add_dataframe_asset(name=fam.model)
                 .add_batch_definition_whole_dataframe(name="as_of_day"))
        suite = gx.ExpectationSuite(name=f"feature_snapshot__{fam.name}")
        suite.add_expectation(gxe.ExpectTableRowCountToBeBetween(min_value=1))
        suite.add_expectation(gxe.ExpectColumnValuesToNotBeNull(column="user_key"))
        suite.add_expectation(gxe.ExpectColumnValuesToBeUnique(column="user_key"))
        for f in fam.features:
            low, high = bounds.get(f.agg, (0, f.window_days if f.agg == "days_active" else None))
            suite.add_expectation(gxe.ExpectColumnValuesToBeBetween(column=f.name, min_value=low,
                                                                    max_value=high))
        suite = context.suites.add(suite)
        validation = context.validation_definitions.add(
            gx.ValidationDefinition(name=f"{fam.name}_snapshot", data=batch, suite=suite))
        checkpoint = context.checkpoints.add(gx.Checkpoint(name=f"{fam.name}_gate",
                                                           validation_definitions=[validation]))
        result = checkpoint.run(batch_parameters={"dataframe": frame})
        evaluated += sum(len(run.results) for run in result.run_results.values())
    return {"expectations": evaluated}


if __name__ == "__main__":
    main()
