"""Benchmark: simulate N users × D days, all channels, with realistic faults.

    .venv/bin/python bench/bench_simulate.py --users 1000000 --days 1

Prints wall time, events written, events/s and peak memory (RSS) as one JSON line.
"""

from __future__ import annotations

import argparse
import gzip
import json
import resource
import tempfile
import time
from datetime import date
from pathlib import Path

from millet.simulate import simulate
from millet.simulate.faults import Faults


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=1)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    start = date(2026, 1, 1)
    with tempfile.TemporaryDirectory(prefix="millet-bench-") as tmp:
        began = time.perf_counter()
        files = simulate(Path(tmp) / "landing", users=args.users, days=args.days, start=start, seed=args.seed,
                         faults=Faults.realistic(start))
        seconds = time.perf_counter() - began
        events = sum(_lines(f) for f in files)
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    print(json.dumps({"users": args.users, "days": args.days, "seconds": round(seconds, 1), "events": events,
                      "events_per_s": round(events / seconds), "peak_rss_gb": round(peak_gb, 2)}))


def _lines(path: Path) -> int:
    try:
        with gzip.open(path, "rb") as handle:
            return sum(1 for _ in handle)
    except (EOFError, OSError):  # a deliberately truncated part
        return 0


if __name__ == "__main__":
    main()
