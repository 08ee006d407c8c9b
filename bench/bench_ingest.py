"""Benchmark: ingest one simulated day of every feed (landing → bronze), realistic faults.

    .venv/bin/python bench/bench_ingest.py --users 1000000

Simulates first, in a process of its own (not timed), then times ingestion of every feed for that
day, consent first, in a fresh process, so the peak memory reported (RSS) is ingestion's alone.
Prints lines ingested, seconds, lines/s, peak RSS and the seconds per feed as one JSON line.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

DAY = date(2026, 1, 1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--stage", choices=["all", "simulate", "ingest"], default="all")
    parser.add_argument("--root", type=Path, help="data root (a temporary one for --stage all)")
    args = parser.parse_args()
    if args.stage == "simulate":
        return _simulate(args.root, args.users)
    if args.stage == "ingest":
        return print(json.dumps({"users": args.users, **_ingest(args.root)}))
    with tempfile.TemporaryDirectory(prefix="millet-bench-") as tmp:
        for stage in ("simulate", "ingest"):
            subprocess.run([sys.executable, __file__, "--stage", stage, "--root", tmp,
                            "--users", str(args.users)], check=True)


def _settings(root: Path):
    from millet.settings import Settings

    return Settings(data_root=root, pseudonym_key="bench-only-key")


def _simulate(root: Path, users: int) -> None:
    from millet.simulate import simulate
    from millet.simulate.faults import Faults

    settings = _settings(root)
    simulate(settings.landing_dir, users=users, days=1, start=DAY, seed=7, faults=Faults.realistic(DAY),
             truth_dir=settings.truth_dir)


def _ingest(root: Path) -> dict:
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


if __name__ == "__main__":
    main()
