"""Benchmark: ingest one simulated day of every channel (landing → bronze), realistic faults.

    .venv/bin/python bench/bench_ingest.py --users 100000

Simulates first (not timed), then times ingestion of every feed for that day, consent first.
Prints lines ingested, seconds, lines/s and peak memory (RSS) as one JSON line.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from datetime import date
from pathlib import Path

from millet.contracts import contracts
from millet.ingest import ingest_channel_day
from millet.settings import Settings
from millet.simulate import simulate
from millet.simulate.faults import Faults


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=100_000)
    args = parser.parse_args()
    day = date(2026, 1, 1)
    with tempfile.TemporaryDirectory(prefix="millet-bench-") as tmp:
        settings = Settings(data_root=Path(tmp), pseudonym_key="bench-only-key")
        faults = Faults.realistic(day)
        simulate(settings.landing_dir, users=args.users, days=1, start=day, seed=7, faults=faults,
                 truth_dir=settings.truth_dir)
        began = time.perf_counter()
        feeds = sorted(contracts().values(), key=lambda c: not c.is_consent_feed)
        lines = sum(ingest_channel_day(c.channel, day, settings)["lines_in"] for c in feeds)
        seconds = time.perf_counter() - began
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    print(json.dumps({"users": args.users, "lines": lines, "seconds": round(seconds, 1),
                      "lines_per_s": round(lines / seconds), "peak_rss_gb": round(peak_gb, 2)}))


if __name__ == "__main__":
    main()
