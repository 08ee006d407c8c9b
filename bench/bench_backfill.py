"""How long `millet backfill` takes for one day, ending as soon as its run has finished against waiting
for the scheduler to mark the backfill complete (it looks every 30 s; Millet's code before 1c0df64
waited for that mark). Alternates the two, one day each, on one small world, in one process.

    .venv/bin/python bench/bench_backfill.py --root /tmp/bench-backfill --pairs 2
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from datetime import date, timedelta
from pathlib import Path
from unittest import mock

from millet import orchestrate
from millet.settings import Settings
from millet.simulate import simulate

START = date(2026, 3, 1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--users", type=int, default=50)
    args = parser.parse_args()
    settings = Settings(data_root=args.root / "data", secrets_dir=args.root / "secrets",
                        pseudonym_key="bench-only-key", task_retries=0)
    simulate(settings.landing_dir, users=args.users, days=2 * args.pairs, start=START, seed=3)
    took: dict[str, list[float]] = {"ends with its run": [], "waits for the scheduler's mark": []}
    for n in range(2 * args.pairs):
        day = str(START + timedelta(days=n))
        way = list(took)[n % 2]
        old_way = mock.patch.object(orchestrate, "_runs_finished", lambda *_: False)
        began = time.monotonic()
        with old_way if way.startswith("waits") else contextlib.nullcontext():
            outcome = orchestrate.backfill(day, day, settings)
        took[way].append(time.monotonic() - began)
        print(f"{day} {way}: {took[way][-1]:.1f} s {outcome}", flush=True)
    for way, seconds in took.items():
        print(f"{way}: median {statistics.median(seconds):.1f} s over {len(seconds)} days")


if __name__ == "__main__":
    main()
