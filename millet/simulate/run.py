"""`millet simulate`: write each day's log drop to the landing zone, one day at a time."""

from __future__ import annotations

import gzip
import json
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa

from millet.simulate.commerce import orders_for_day
from millet.simulate.faults import Faults
from millet.simulate.population import make_population

GENERATORS = {"commerce": orders_for_day}
NO_FAULTS = Faults()


def simulate(
    landing_dir: Path,
    *,
    users: int,
    days: int,
    start: date,
    seed: int,
    faults: Faults = NO_FAULTS,
) -> list[Path]:
    """Write `days` daily drops for every channel; returns the files written."""
    pop = make_population(users, seed)
    written = []
    for offset in range(days):
        day = start + timedelta(days=offset)
        for channel_no, (channel, generate) in enumerate(GENERATORS.items()):
            rng = np.random.default_rng([seed, day.toordinal(), channel_no + 1])
            lines = faults.apply(to_json_lines(generate(pop, day, rng)), rng)
            written.append(write_drop(landing_dir / channel / f"dt={day}" / "part-0000.jsonl.gz", lines))
    return written


def to_json_lines(table: pa.Table) -> list[str]:
    rows = table.to_pylist()
    for row in rows:
        for key, value in row.items():
            if hasattr(value, "isoformat"):
                row[key] = value.isoformat().replace("+00:00", "Z")
    return [json.dumps(row, separators=(",", ":")) for row in rows]


def write_drop(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    # mtime=0 keeps the gzip header free of the clock: same inputs, same bytes.
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as gz:
        gz.write(("\n".join(lines) + "\n").encode() if lines else b"")
    return path
