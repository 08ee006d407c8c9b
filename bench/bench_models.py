"""Benchmark: training the credit-risk model, and scoring one user over HTTP, on a world built for it.

    .venv/bin/millet world --users 20000 --days 300        # with MILLET_DATA_ROOT=R
    .venv/bin/python bench/bench_models.py --root R

1. `train`: `train_credit_risk` on the world, in a fresh process: wall time and peak RSS, and the figures
   the run reports (rows, AUCs, the ratio to the oracle).
2. `score`: `millet serve` over the world on a loopback port; then, one request at a time on a keep-alive
   connection, `POST /score` and `POST /get-online-features` (credit_risk_v1) for the same random users
   of the last snapshots (any family), alternating, so that both see the same machine: p50 and p99 of each.
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).parent))
from bench_serve import _free_port, _wait_until_up, stop  # noqa: E402

SERVICE = "credit_risk_v1"
MILLET = str(Path(sys.executable).with_name("millet"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", type=Path, required=True, help="a data root made by `millet world`")
    parser.add_argument("--stage", choices=["all", "train", "score"], default="all")
    parser.add_argument("--requests", type=int, default=2_000)
    args = parser.parse_args()
    if args.stage == "train":
        return print(json.dumps(_train(args.root)))
    if args.stage == "score":
        return print(json.dumps(_score(args.root, args.requests)))
    results = {}
    for stage in ("train", "score"):
        done = subprocess.run([sys.executable, __file__, "--root", str(args.root), "--stage", stage,
                               "--requests", str(args.requests)], capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"stage {stage} failed:\n{done.stderr[-3000:]}")
        results[stage] = json.loads(done.stdout.strip().splitlines()[-1])
    print(json.dumps(results))


def _settings(root: Path):
    from millet.settings import Settings

    return Settings(data_root=root, serve_auth="none")  # the unloaded latency; bench_load measures auth


def _train(root: Path) -> dict:
    from millet.scoring.credit_risk import train_credit_risk

    began = time.perf_counter()
    meta = train_credit_risk(_settings(root))
    return {"seconds": round(time.perf_counter() - began, 1),
            "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2, 2),
            "version": meta["version"], "rows": meta["rows"], "features": meta["features"],
            "auc": {name: round(m["auc"], 4) for name, m in meta["test"].items()},
            "oracle_ratio": round(meta["oracle_ratio"], 3), "passed": meta["passed"]}


def _score(root: Path, requests: int) -> dict:
    from millet.feature_spec import families
    from millet.transform import snapshot_path

    settings = _settings(root)
    last = max(p.name.removeprefix("dt=") for p in (settings.snapshots_dir / "credit").glob("dt=*"))
    keys = sorted({key for fam in families() for key in pq.read_table(
        snapshot_path(fam.name, last, settings), columns=["user_key"])["user_key"].to_pylist()})
    port = _free_port()
    with tempfile.TemporaryFile("w+") as log:  # a file, not a pipe: nothing reads it until the end
        server = subprocess.Popen([MILLET, "serve", "--port", str(port)], stdout=subprocess.DEVNULL,
                                  stderr=log, env={**os.environ, **settings.millet_environ()})
        try:
            _wait_until_up(port, server, log)
            timings = _alternating(port, keys, requests)
        finally:
            stop(server)
    return {"users_in_snapshot": len(keys), "requests": requests,
            **{f"{name}_{q}_ms": _quantile(times, q)
               for name, times in timings.items() for q in ("p50", "p99")}}


def _alternating(port: int, keys: list[str], n: int) -> dict[str, list[float]]:
    conn, rng = http.client.HTTPConnection("127.0.0.1", port, timeout=30), random.Random(1)
    calls = {"score": ("/score", lambda key: {"user_key": key}),
             "features": ("/get-online-features",
                          lambda key: {"entities": {"user_key": [key]}, "feature_service": SERVICE})}
    timings = {name: [] for name in calls}
    for i in range(n + 50):  # the first 50 warm up: the model, the registry's plans
        key = rng.choice(keys)
        for name, (path, body) in calls.items():
            began = time.perf_counter()
            conn.request("POST", path, body=json.dumps(body(key)),
                         headers={"Content-Type": "application/json"})
            answer = conn.getresponse()
            payload = answer.read()
            if answer.status != 200:
                raise RuntimeError(f"{path}: {answer.status} {payload[:300]!r}")
            if i >= 50:
                timings[name].append(time.perf_counter() - began)
    conn.close()
    return timings


def _quantile(times: list[float], q: str) -> float:
    ordered = sorted(times)
    at = {"p50": 0.5, "p99": 0.99}[q]
    return round(ordered[min(int(len(ordered) * at), len(ordered) - 1)] * 1000, 2)

if __name__ == "__main__":
    main()
