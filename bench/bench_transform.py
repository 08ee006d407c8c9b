"""Benchmark: the nightly transform (dbt build for one as-of date) with 180 days of history built.

    .venv/bin/python bench/bench_transform.py --users 100000

1. Simulates and ingests two real days, D0 and D1 (not timed).
2. Builds D0 with dbt, then gives every intermediate model 180 days of history by copying D0's
   per-user daily partials to each of the 180 arrival days before it (the same volume as 180 real
   days; only the loan book's bronze, which the credit mart reads directly, stays one day deep), and
   rebuilds D0's rolling window state over that history.
3. Times, each in a fresh process, on the same data:
   - `nightly`: the nightly run for D1, `dbt build` (incremental intermediate models, the state rolled
     forward from D0's, marts, tests);
   - `direct`: the same compiled SQL run directly in DuckDB, for dbt's overhead as a ratio;
   - `rebuild`: D1 again with D0's state moved away, so every window is recomputed from the 180 days of
     daily partials (a re-base night without its comparison; what every night cost before the state).
   Each reports wall time and peak RSS; `rolled_vs_rebuild` is the ratio of the first to the last.
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

D0 = date(2026, 6, 30)
D1 = D0 + timedelta(days=1)
HISTORY_DAYS = 180
TIMED = ("nightly", "direct", "rebuild")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--stage", choices=["all", "prepare", *TIMED], default="all")
    parser.add_argument("--root", type=Path)
    parser.add_argument("--duckdb-memory-limit", default="4GB", help="DuckDB's memory limit (the setting's "
                        "default); beyond it DuckDB spills to disk")
    parser.add_argument("--user-slices", type=int, default=1, help="the setting state_user_slices")
    args = parser.parse_args()
    settings = _settings(args.root, args.duckdb_memory_limit, args.user_slices) if args.root else None
    if args.stage == "prepare":
        return _prepare(settings, args.users)
    if args.stage in TIMED:
        return print(json.dumps(_timed(settings, args.stage)))
    with tempfile.TemporaryDirectory(prefix="millet-bench-") as tmp:
        results = {"users": args.users, "history_days": HISTORY_DAYS}
        for stage in ("prepare", *TIMED):
            done = subprocess.run([sys.executable, __file__, "--stage", stage, "--root", tmp, "--users",
                                   str(args.users), "--duckdb-memory-limit", args.duckdb_memory_limit,
                                   "--user-slices", str(args.user_slices)],
                                  capture_output=True, text=True)
            if done.returncode:
                sys.exit(f"stage {stage} failed:\n{done.stderr[-3000:]}")
            results[stage] = json.loads(done.stdout.strip().splitlines()[-1])
        results["dbt_overhead_ratio"] = round(results["nightly"]["seconds"] / results["direct"]["seconds"], 2)
        results["rolled_vs_rebuild"] = round(results["nightly"]["seconds"] / results["rebuild"]["seconds"], 3)
        print(json.dumps(results))


def _settings(root: Path, duckdb_memory_limit: str = "4GB", user_slices: int = 1):
    from millet.settings import Settings

    return Settings(data_root=root, pseudonym_key="bench-only-key", rebase_every_days=0,
                    duckdb_memory_limit=duckdb_memory_limit, state_user_slices=user_slices)


def _prepare(settings, users: int) -> None:
    import duckdb

    from millet.contracts import ingestion_order
    from millet.ingest import ingest_channel_day
    from millet.simulate import simulate
    from millet.transform import build_features

    simulate(settings.landing_dir, users=users, days=2, start=D0, seed=7, truth_dir=settings.truth_dir)
    for day in (D0, D1):
        for channel in ingestion_order():
            ingest_channel_day(channel, day, settings)
    build_features(D0, settings)
    con = duckdb.connect(str(settings.warehouse_path))
    models = [name for (name,) in con.sql("select table_name from information_schema.tables "
                                           "where table_name like 'int_%'").fetchall()]
    for model in models:  # one arrival day at a time, oldest first, as the nightly runs append them
        for k in range(HISTORY_DAYS, 0, -1):
            con.execute(f"""
                insert into {model}
                select * replace (arrived_on - {k} as arrived_on, event_date - {k} as event_date)
                from {model} where arrived_on = date '{D0}'
            """)
    con.close()
    began = time.perf_counter()
    build_features(D0, settings, rebase=True)  # D0's state over the whole history
    print(json.dumps({"rebuild_d0_seconds": round(time.perf_counter() - began, 1)}))


def _timed(settings, stage: str) -> dict:
    from millet.transform import build_features
    from millet.transform.dbt import state_models, state_path

    if stage == "rebuild":
        for model in state_models(settings):
            state_path(model, D0, settings).rename(state_path(model, D0, settings).with_name("kept"))
    began = time.perf_counter()
    if stage == "direct":
        _run_compiled_sql(settings)
    else:
        build_features(D1, settings)
    seconds = time.perf_counter() - began
    if stage == "rebuild":
        for model in state_models(settings):
            state_path(model, D0, settings).with_name("kept").rename(state_path(model, D0, settings))
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    return {"seconds": round(seconds, 1), "peak_rss_gb": round(peak_gb, 2)}


def _run_compiled_sql(settings) -> None:
    """What the nightly dbt run executed, straight in DuckDB: the compiled models, in dependency order,
    as delete+insert for the intermediate tables (the day just built by dbt is rebuilt) and COPY for
    the state (to its own location: the marts read it there) and the marts; without dbt's tests."""
    import duckdb

    from millet.feature_spec import families
    from millet.transform import snapshot_path
    from millet.transform.dbt import dbt_target_dir, state_path

    compiled = dbt_target_dir(settings) / "compiled" / "millet" / "models"
    con = duckdb.connect(str(settings.warehouse_path), config=settings.duckdb_config())
    con.execute("set TimeZone = 'UTC'")  # as dbt's profile sets it
    con.execute(f"set variable as_of = date '{D1}'")  # as the external materialization does
    # A state model compiled for user slices runs here as one slice holding every key.
    con.execute("set variable user_slice_from = ''")
    con.execute("set variable user_slice_to = cast(null as varchar)")
    for path in sorted((compiled / "intermediate").rglob("*.sql")):
        con.execute(f"delete from {path.stem} where arrived_on = date '{D1}'")
        con.execute(f"insert into {path.stem} {path.read_text()}")
    for path in sorted((compiled / "state").rglob("*.sql")):
        con.execute(f"copy ({path.read_text()}) to '{state_path(path.stem, D1, settings)}' "
                    "(format parquet, compression zstd)")
    for fam in families():
        sql = (compiled / "marts" / "features" / f"{fam.model}.sql").read_text()
        target = snapshot_path(fam.name, D1, settings).with_name("direct.parquet")
        con.execute(f"copy ({sql}) to '{target}' (format parquet, compression zstd)")
    con.close()


if __name__ == "__main__":
    main()
