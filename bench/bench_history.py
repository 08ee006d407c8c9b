"""Benchmark: a history built in one pass (every daily snapshot of 180 days) against one nightly run.

    .venv/bin/python bench/bench_history.py --users 50000

1. `prepare` simulates and ingests one real day, D0 (not timed), and copies its bronze to each of the
   179 days before it and to the day after, D1, with every event moved by the same number of days (the
   volume of 181 real days; ids repeat across days, which nothing downstream of ingestion minds).
2. `history` builds every snapshot from D0 - 179 to D0 with `build_history` (the first night rebuilt from
   the partials, the other 179 in one dbt build), in a fresh process.
3. `nightly` builds D1 as any night does (rolled from D0's state), in a fresh process.
Each reports wall time and peak RSS; `history_vs_nightly` is the ratio (the target: under 10).
Prints one JSON line.

`--stage floor` (after `nightly`) is the floor of any history design that writes a snapshot per day: in
one process, D1's six snapshots (what the night wrote) held in memory and written to Parquet once for
each of the 180 days, as the build writes them (zstd) and uncompressed (the cheapest DuckDB writes);
then D1's night built again in a fresh process, so that the ratio is of one run.

`--stage night --rebase` (after `history`) builds D1 with D0's state moved aside, so that every window is
recomputed from the 180 days of partials: the night as it was before rolling state, which issue 13's
history target was set against. Run it beside a plain `--stage night`, each in a fresh process.

`--stage erasure` (after `nightly`) forgets one person at D1 as a night's erasure does (every zone, with
the process's peak memory after it, then the warehouse file rewritten so that their rows leave its free
blocks: `compact_warehouse`, timed apart); then D1's night built again in a fresh process, for the
ratio. Side by side with other code on a copy of the same root, as for `nights` (`code` in the output
says which ran).

`--stage nights --nights N` (after `prepare` alone) builds the N nights up to D0 one by one, each in a
fresh process as the DAG's task runs it, and prints each night's seconds: what a night costs that is not
the first. Side by side with other code on a copy of the same prepared root:
`PYTHONPATH=<worktree of the other commit> python bench/bench_history.py --stage nights --root R2`.
"""

from __future__ import annotations

import argparse
import contextlib
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
DAYS = 180
FIRST = D0 - timedelta(days=DAYS - 1)
TIMED = ("history", "nightly")
CODECS = ("zstd", "uncompressed")
NIGHTS = 5


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--stage", choices=["all", "prepare", "nights", "night", "floor", "erasure", *TIMED],
                        default="all")
    parser.add_argument("--root", type=Path)
    parser.add_argument("--nights", type=int, default=NIGHTS)
    parser.add_argument("--day", type=date.fromisoformat, default=D1)
    parser.add_argument("--rebase", action="store_true", help="with --stage night: a full recomputation")
    args = parser.parse_args()
    if args.stage != "all" and not args.root:
        parser.error(f"--stage {args.stage} needs --root (the prepared data root)")
    if args.stage == "prepare":
        return _prepare(_settings(args.root), args.users)
    if args.stage == "nights":
        return print(json.dumps(_nights(args.root, args.nights)))
    if args.stage == "floor":
        return print(json.dumps(_floor(args.root)))
    if args.stage == "erasure":
        return print(json.dumps(_erasure(args.root)))
    if args.stage == "night":
        return print(json.dumps(_timed(_settings(args.root), "nightly", args.day, args.rebase)))
    if args.stage in TIMED:
        return print(json.dumps(_timed(_settings(args.root), args.stage)))
    with tempfile.TemporaryDirectory(prefix="millet-bench-") as tmp:
        results = {"users": args.users, "days": DAYS}
        for stage in ("prepare", *TIMED):
            done = subprocess.run([sys.executable, __file__, "--stage", stage, "--root", tmp, "--users",
                                   str(args.users)], capture_output=True, text=True)
            if done.returncode:
                sys.exit(f"stage {stage} failed:\n{done.stderr[-3000:]}")
            results[stage] = json.loads(done.stdout.strip().splitlines()[-1])
        ratio = results["history"]["seconds"] / results["nightly"]["seconds"]
        results["history_vs_nightly"] = round(ratio, 2)
        print(json.dumps(results))


def _settings(root: Path):
    from millet.settings import Settings

    return Settings(data_root=root, pseudonym_key="bench-only-key", rebase_every_days=0)


def _prepare(settings, users: int) -> None:
    import duckdb

    from millet.contracts import ingestion_order
    from millet.ingest import ingest_channel_day
    from millet.ingest.partition import PART_FILE, partition_dir
    from millet.simulate import simulate

    simulate(settings.landing_dir, users=users, days=1, start=D0, seed=7, truth_dir=settings.truth_dir)
    for channel in ingestion_order():
        ingest_channel_day(channel, D0, settings)
    con = duckdb.connect()
    for channel in sorted(p.name for p in settings.bronze_dir.iterdir()):
        day0 = partition_dir(settings.bronze_dir / channel, str(D0))
        for offset in [*range(-(DAYS - 1), 0), 1]:
            target = partition_dir(settings.bronze_dir / channel, str(D0 + timedelta(days=offset)))
            target.mkdir(parents=True, exist_ok=True)
            con.execute(f"copy (select * replace (event_ts + interval ({offset}) day as event_ts) "
                        f"from read_parquet('{day0}/*.parquet')) to '{target / PART_FILE}' "
                        "(format parquet, compression zstd)")
    print(json.dumps({"bronze_days": DAYS + 1}))


def _nights(root: Path, nights: int) -> dict[str, float]:
    """Each night up to D0 in a fresh process, as the DAG's build task runs it."""
    seconds = {}
    for day in (D0 - timedelta(days=n) for n in range(nights - 1, -1, -1)):
        done = subprocess.run([sys.executable, __file__, "--stage", "night", "--root", str(root), "--day",
                               str(day)], capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"night {day} failed:\n{done.stderr[-3000:]}")
        seconds[str(day)] = json.loads(done.stdout.strip().splitlines()[-1])["seconds"]
    return seconds


def _floor(root: Path) -> dict:
    """Seconds to write D1's snapshots for every day of a history, per codec, against D1's night."""
    import duckdb

    from millet.feature_spec import families
    from millet.transform.dbt import snapshot_path

    settings = _settings(root)
    con = duckdb.connect()
    values = 0
    for fam in families():
        snapshot = snapshot_path(fam.name, D1, settings)
        con.execute(f"create table {fam.name} as select * from read_parquet('{snapshot}')")
        rows, columns = con.execute(f"select count(*), (select count(*) from (describe {fam.name})) "
                                    f"from {fam.name}").fetchall()[0]
        values += rows * columns
    out = Path(tempfile.mkdtemp(prefix="millet-floor-", dir=root))
    results = {"values_per_day": values}
    for codec in CODECS:
        began = time.perf_counter()
        for day in range(DAYS):
            for fam in families():
                con.execute(f"copy {fam.name} to '{out / f'{fam.name}-{day}.parquet'}' "
                            f"(format parquet, compression {codec})")
        results[f"write_{DAYS}_days_{codec}_s"] = round(time.perf_counter() - began, 1)
        for path in out.iterdir():
            path.unlink()
    out.rmdir()
    con.close()
    night = subprocess.run([sys.executable, __file__, "--stage", "night", "--root", str(root)],
                           capture_output=True, text=True, check=True)
    results["nightly_s"] = json.loads(night.stdout.strip().splitlines()[-1])["seconds"]
    for codec in CODECS:
        written = results[f"write_{DAYS}_days_{codec}_s"]
        results[f"write_vs_nightly_{codec}"] = round(written / results["nightly_s"], 1)
    return results


def _erasure(root: Path) -> dict:
    """Seconds and peak memory to forget one borrower everywhere, then seconds to rewrite the warehouse
    (in a night's order), against D1's night."""
    import pyarrow.parquet as pq

    import millet
    from millet.privacy.zones import Scope, compact_warehouse, purge
    from millet.transform.dbt import snapshot_path

    settings = _settings(root)
    results = {"code": str(Path(millet.__file__).parent),
               "warehouse_gb": round(settings.warehouse_path.stat().st_size / 1024**3, 2)}
    key = pq.read_table(snapshot_path("payments", D1, settings), columns=["user_key"]).column(0)[0].as_py()
    began = time.perf_counter()
    results["rows_removed"] = purge({key}, Scope.EVERYTHING, settings)
    results["forget_one_s"] = round(time.perf_counter() - began, 1)
    results["forget_one_peak_rss_gb"] = _peak_rss_gb()
    began = time.perf_counter()
    compact_warehouse(settings)
    results["compact_s"] = round(time.perf_counter() - began, 1)
    results["warehouse_gb_after"] = round(settings.warehouse_path.stat().st_size / 1024**3, 2)
    night = subprocess.run([sys.executable, __file__, "--stage", "night", "--root", str(root)],
                           capture_output=True, text=True, check=True)
    results["nightly_s"] = json.loads(night.stdout.strip().splitlines()[-1])["seconds"]
    return results


@contextlib.contextmanager
def _without_state(day: date, settings):
    """The day's rolling window state moved aside, so that the next night recomputes every window (a re-base
    with the state at hand would also roll it, to compare), and put back after."""
    from millet.transform.dbt import state_models, state_path

    kept = {state_path(model, day, settings): state_path(model, day, settings).with_name("kept")
            for model in state_models(settings)}
    for path, aside in kept.items():
        path.rename(aside)
    try:
        yield
    finally:
        for path, aside in kept.items():
            aside.rename(path)


def _timed(settings, stage: str, day: date = D1, rebase: bool = False) -> dict:
    from millet.transform import build_features
    from millet.transform.dbt import build_history

    began = time.perf_counter()
    if stage == "history":
        build_history(FIRST, D0, settings)
    else:
        with _without_state(day - timedelta(days=1), settings) if rebase else contextlib.nullcontext():
            began = time.perf_counter()
            build_features(day, settings)
    seconds = time.perf_counter() - began
    return {"seconds": round(seconds, 1), "peak_rss_gb": _peak_rss_gb()}


def _peak_rss_gb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2, 2)


if __name__ == "__main__":
    main()
