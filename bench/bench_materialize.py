"""Benchmark: publishing a snapshot online, Millet's path against stock `feast materialize`.

    .venv/bin/python bench/bench_materialize.py --backend sqlite --users 200000 --stock-users 5000
    .venv/bin/python bench/bench_materialize.py --backend redis --users 1000000 --service credit_risk_v1

1. Writes a synthetic snapshot with the real schema (every feature of the spec, or only one service's)
   for --users users, laid out as dbt writes it; a --stock-users slice of it is the comparison data.
2. Side by side, in one run, on the slice: stock Feast (its SQLite or Redis online store and its local
   engine) and Millet (packed online store + SnapshotMaterializationEngine), each into a fresh store.
3. Millet alone on all --users.
Prints one JSON line: rows/s of each and their ratio, and Millet's time for the whole snapshot.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from millet.feature_spec import families
from millet.serving.definitions import SERVICES
from millet.serving.store import materialize_day, snapshot_timestamp, store_over

DAY = "2026-07-01"
REDIS_DB = 10
STORES = {
    "stock": ({"sqlite": {"type": "sqlite"}, "redis": {"type": "redis"}}, "local"),
    "millet": ({"sqlite": {"type": "millet.serving.online.stores.PackedSqliteOnlineStore"},
                "redis": {"type": "millet.serving.online.stores.PackedRedisOnlineStore"}},
               {"type": "millet.serving.online.engine.SnapshotMaterializationEngine"}),
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", choices=["sqlite", "redis"], default="sqlite")
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument("--stock-users", type=int, default=5_000)
    parser.add_argument("--service", choices=[s.name for s in SERVICES], help="only this service's features")
    args = parser.parse_args()
    keep = None
    if args.service:
        keep = next(s for s in SERVICES if s.name == args.service).wants
    work = Path(tempfile.mkdtemp(prefix="millet-bench-mat-"))
    try:
        features = _write_snapshots(work / "full", args.users, keep)
        _write_slice(work / "full", work / "slice", args.stock_users)
        side = {kind: _publish(kind, args.backend, work / "slice", work / f"{kind}-slice", keep)
                for kind in ("stock", "millet")}
        whole = _publish("millet", args.backend, work / "full", work / "millet-full", keep)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rate = {kind: args.stock_users / t for kind, t in side.items()}
    print(json.dumps({
        "backend": args.backend, "service": args.service or "all features", "features": features,
        "slice_users": args.stock_users, "stock_s": round(side["stock"], 2),
        "millet_s": round(side["millet"], 3),
        "stock_rows_per_s": round(rate["stock"]), "millet_rows_per_s": round(rate["millet"]),
        "ratio": round(rate["millet"] / rate["stock"], 1),
        "users": args.users, "millet_whole_s": round(whole, 1),
        "millet_whole_values_per_s": round(args.users * features / whole),
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
    }))


def _write_snapshots(root: Path, users: int, keep, day: str = DAY) -> int:
    """Random values with the spec's types, a tenth of them null, for `users` hex user keys (the same
    keys whatever the day; other values each day)."""
    keys = pa.array([f"{i:032x}" for i in np.random.default_rng(7).permutation(users * 4)[:users]])
    rng = np.random.default_rng(int(day.replace("-", "")))
    stamp = pa.array([snapshot_timestamp(day)] * users, pa.timestamp("us", "UTC"))
    total = 0
    for fam in families():
        kept = [f for f in fam.features if keep is None or keep(f)]
        if not kept:
            continue
        columns = {"user_key": keys, "event_timestamp": stamp}
        for f in kept:
            nulls = rng.random(users) < 0.1
            if f.dtype == "int32":
                columns[f.name] = pa.array(rng.poisson(3, users).astype("int32"), mask=nulls)
            else:
                columns[f.name] = pa.array(rng.gamma(2, 50, users).astype("float32"), mask=nulls)
        out = root / fam.name / f"dt={day}" / "part-0.parquet"
        out.parent.mkdir(parents=True)
        pq.write_table(pa.table(columns), out, compression="zstd")
        total += len(kept)
    return total


def _write_slice(full: Path, out: Path, users: int) -> None:
    for path in full.rglob("*.parquet"):
        target = out / path.relative_to(full)
        target.parent.mkdir(parents=True)
        pq.write_table(pq.read_table(path).slice(0, users), target)


def _publish(kind: str, backend: str, snapshots: Path, work: Path, keep) -> float:
    online, engine = STORES[kind]
    config = dict(online[backend], **({"path": str(work / "online.db")} if backend == "sqlite"
                                      else {"connection_string": f"127.0.0.1:6379,db={REDIS_DB}"}))
    store = store_over(snapshots, work, config, engine, project=f"bench_{kind}_{os.getpid()}", keep=keep)
    try:
        started = time.perf_counter()
        materialize_day(store, DAY)
        return time.perf_counter() - started
    finally:
        store.teardown()


if __name__ == "__main__":
    main()
