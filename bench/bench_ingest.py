"""Benchmark: ingest one simulated day of every feed (landing → bronze), realistic faults.

    .venv/bin/python bench/bench_ingest.py --users 1000000
    .venv/bin/python bench/bench_ingest.py --users 60 --days 200   # a history's many small drops

Simulates first, in a process of its own (not timed), then times ingestion of every feed for that
day, consent first, in a fresh process, so the peak memory reported (RSS) is ingestion's alone; over
several days, every feed's days as a history build ingests them (`ingest_range`).
Prints lines ingested, seconds, lines/s, peak RSS and (one day) the seconds per feed as one JSON line.
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

DAY = date(2026, 1, 1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--stage", choices=["all", "simulate", "ingest"], default="all")
    parser.add_argument("--days", type=int, default=1)
    parser.add_argument("--root", type=Path, help="data root (a temporary one for --stage all)")
    args = parser.parse_args()
    if args.days < 1:
        parser.error("--days must be at least 1")
    if args.stage == "simulate":
        return _simulate(args.root, args.users, args.days)
    if args.stage == "ingest":
        ingest = _ingest if args.days == 1 else _ingest_range
        return print(json.dumps({"users": args.users, "days": args.days, **ingest(args.root, args.days)}))
    with tempfile.TemporaryDirectory(prefix="millet-bench-") as tmp:
        for stage in ("simulate", "ingest"):
            subprocess.run([sys.executable, __file__, "--stage", stage, "--root", tmp,
                            "--users", str(args.users), "--days", str(args.days)], check=True)


def _settings(root: Path):
    from millet.settings import Settings

    return Settings(data_root=root, pseudonym_key="bench-only-key")


def _simulate(root: Path, users: int, days: int) -> None:
    from millet.simulate import simulate
    from millet.simulate.faults import Faults

    settings = _settings(root)
    simulate(settings.landing_dir, users=users, days=days, start=DAY, seed=7, faults=Faults.realistic(DAY),
             truth_dir=settings.truth_dir)


def _ingest(root: Path, days: int) -> dict:
    from millet.contracts import contract_for, ingestion_order
    from millet.ingest import ingest_channel_day

    settings = _settings(root)
    feeds = [contract_for(channel) for channel in ingestion_order()]
    lines, per_feed = 0, {}
    began = time.perf_counter()
    for contract in feeds:
        start = time.perf_counter()
        manifest = ingest_channel_day(contract.channel, DAY, settings)
        assert manifest["balanced"], manifest
        lines += manifest["lines_in"]
        per_feed[contract.channel] = round(time.perf_counter() - start, 1)
    seconds = time.perf_counter() - began
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    return {"lines": lines, "seconds": round(seconds, 1), "lines_per_s": round(lines / seconds),
            "peak_rss_gb": round(peak_gb, 2), "seconds_per_feed": per_feed}


def _ingest_range(root: Path, days: int) -> dict:
    from millet.ingest.history import ingest_range

    began = time.perf_counter()
    manifests = ingest_range(DAY, DAY + timedelta(days=days - 1), _settings(root))
    seconds = time.perf_counter() - began
    assert all(m["balanced"] for m in manifests)
    lines = sum(m["lines_in"] for m in manifests)
    return {"lines": lines, "seconds": round(seconds, 1), "lines_per_s": round(lines / seconds),
            "channel_days": len(manifests), "ms_per_channel_day": round(1000 * seconds / len(manifests))}


if __name__ == "__main__":
    main()
