"""Benchmark: a point-in-time training set through Feast against a bare DuckDB ASOF join of the same data.

    .venv/bin/python bench/bench_training.py --labels 1000000 --users 200000
    .venv/bin/python bench/bench_training.py --labels 14000 --users 20000 --days 270 --runs millet

The second is a model's training set (few label rows over months of daily snapshots), where memory is the
risk: every snapshot row's features in a hash table.

Writes synthetic snapshots (the real schema; --days daily snapshots of --users users) and --labels label
rows at random instants over those days. Then, each in its own process so each peak is its own:
- `millet`: what `millet training-set` does between reading the labels and writing the frame: Feast's
  `get_historical_features` for the service on Millet's offline store, to Arrow, in the labels' order;
- `feast`: the same call on Feast's own DuckDB offline store (what Millet used before);
- `bare`: DuckDB alone, one ASOF LEFT JOIN per feature view on user_key and time, with the same TTL.
Prints one JSON line: seconds and peak RSS of each, their ratios to the bare join, and whether the
frames agree with the bare join's on a sample of rows.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).parent))
from bench_materialize import _write_snapshots  # noqa: E402

from millet.serving.definitions import SERVICES, SNAPSHOT_TTL  # noqa: E402
from millet.serving.store import snapshot_timestamp  # noqa: E402

SERVICE = "repayment_ability_v1"
RUNS = ("bare", "millet", "feast")
FIRST_DAY = "2026-07-01"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--labels", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument("--runs", nargs="+", choices=RUNS, default=list(RUNS),
                        help="which to run (the bare join always runs: the others are compared with it)")
    parser.add_argument("--run", choices=RUNS)
    parser.add_argument("--work", type=Path)
    args = parser.parse_args()
    if args.run:
        return _run(args.run, args.work)
    work = Path(tempfile.mkdtemp(prefix="millet-bench-train-"))
    try:
        features = _prepare(work, args)
        kinds = ["bare", *(kind for kind in args.runs if kind != "bare")]
        runs = {kind: _in_process(kind, work) for kind in kinds}
        agree = {kind: _agree(work / "bare.parquet", work / f"{kind}.parquet") for kind in kinds[1:]}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ratios = {f"{kind}_time_ratio": round(runs[kind]["s"] / runs["bare"]["s"], 2) for kind in kinds[1:]}
    print(json.dumps({"labels": args.labels, "service": SERVICE, "features": features, **runs, **ratios,
                      "frames_agree_with_bare": agree}))


def _prepare(work: Path, args) -> int:
    keep = next(s for s in SERVICES if s.name == SERVICE).wants
    first = snapshot_timestamp(FIRST_DAY) - timedelta(days=1)
    for d in range(args.days):
        day = (first + timedelta(days=d)).date().isoformat()
        features = _write_snapshots(work / "days" / day, args.users, keep, day=day)
        for path in (work / "days" / day).rglob("*.parquet"):
            target = work / "snapshots" / path.relative_to(work / "days" / day)
            target.parent.mkdir(parents=True, exist_ok=True)
            path.rename(target)
    keys = pq.read_table(next((work / "snapshots").rglob("*.parquet")), columns=["user_key"]).column(0)
    rng = np.random.default_rng(3)
    start = snapshot_timestamp(FIRST_DAY)
    offsets = rng.integers(0, args.days * 86_400_000_000, args.labels)
    labels = pa.table({
        "user_key": keys.take(pa.array(rng.integers(0, len(keys), args.labels))),
        "event_timestamp": pa.array(
            np.datetime64(start.replace(tzinfo=None), "us") + offsets.astype("timedelta64[us]"),
            pa.timestamp("us", "UTC")),
        "label": pa.array(rng.integers(0, 2, args.labels).astype("int8")),
    })
    pq.write_table(labels, work / "labels.parquet")
    return features


def _in_process(kind: str, work: Path) -> dict:
    done = subprocess.run([sys.executable, __file__, "--run", kind, "--work", str(work)],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])[kind]


def _run(kind: str, work: Path) -> None:
    labels = pq.read_table(work / "labels.parquet")
    build = _bare(work) if kind == "bare" else _feast(work, kind)  # set-up (registry, connection) not timed
    started = time.perf_counter()
    frame = build(labels)
    seconds = time.perf_counter() - started
    pq.write_table(_sample(frame), work / f"{kind}.parquet")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(json.dumps({kind: {"s": round(seconds, 1), "rows": frame.num_rows, "columns": frame.num_columns,
                             "peak_rss_gb": round(peak, 2)}}))


def _feast(work: Path, kind: str):
    from millet.serving.offline.training import entity_frame, in_label_order
    from millet.serving.store import OFFLINE_STORE, store_over

    keep = next(s for s in SERVICES if s.name == SERVICE).wants
    store = store_over(work / "snapshots", work / kind, {"type": "sqlite", "path": str(work / kind / "o.db")},
                       keep=keep, project="bench_train",
                       offline_store=OFFLINE_STORE if kind == "millet" else "duckdb")
    service = store.get_feature_service(SERVICE)

    def build(labels: pa.Table) -> pa.Table:
        # millet.serving.offline.training.training_table, minus reading the labels file and opening the store
        job = store.get_historical_features(entity_df=entity_frame(labels.to_pandas()), features=service)
        return in_label_order(job.to_arrow())
    return build


def _bare(work: Path):
    import duckdb

    con = duckdb.connect()
    con.execute("set TimeZone = 'UTC'")

    def join(labels: pa.Table) -> pa.Table:
        con.register("labels", labels)
        return con.sql(_asof_sql(work)).to_arrow_table()
    return join


def _asof_sql(work: Path) -> str:
    ttl = int(SNAPSHOT_TTL.total_seconds())
    select, joins = ["l.*"], []
    for i, family in enumerate(sorted(p.name for p in (work / "snapshots").iterdir())):
        columns = [c for c in pq.read_schema(next((work / "snapshots" / family).rglob("*.parquet"))).names
                   if c not in ("user_key", "event_timestamp")]
        select += [f"case when f{i}.event_timestamp >= l.event_timestamp - interval {ttl} second "
                   f"then f{i}.\"{c}\" end as \"{c}\"" for c in columns]
        joins.append(f"asof left join read_parquet('{work}/snapshots/{family}/*/*.parquet') f{i} "
                     f"on l.user_key = f{i}.user_key and l.event_timestamp >= f{i}.event_timestamp")
    return f"select {', '.join(select)} from labels l {' '.join(joins)}"


def _sample(frame: pa.Table) -> pa.Table:
    """Rows whose label row order is known on both sides: sorted by key and time, the first 2,000."""
    import pyarrow.compute as pc

    order = pc.sort_indices(frame, [("user_key", "ascending"), ("event_timestamp", "ascending")])
    return frame.take(order[:2000])


def _agree(bare: Path, feast: Path) -> bool:
    b, f = pq.read_table(bare), pq.read_table(feast)
    shared = [c for c in b.column_names if c in f.column_names and c not in ("label",)]
    return all(b[c].cast(pa.float64()).to_pylist() == f[c].cast(pa.float64()).to_pylist() for c in shared
               if c not in ("user_key", "event_timestamp"))


if __name__ == "__main__":
    main()
