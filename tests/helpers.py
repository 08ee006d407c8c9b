"""Plain-Python readings of landing drops, independent of the code under test."""

from __future__ import annotations

import gzip
import hashlib
import hmac
import json
from pathlib import Path


def landing_lines(landing_dir: Path, channel: str, day: str) -> list[str]:
    lines = []
    for path in sorted((landing_dir / channel / f"dt={day}").glob("*.jsonl.gz")):
        lines += [ln for ln in gzip.open(path, "rt").read().split("\n") if ln.strip()]
    return lines


def parsed_rows(lines: list[str]) -> tuple[list[dict], int]:
    """Rows that are valid JSON, first delivery only; and how many lines were not JSON."""
    rows, seen, broken = [], set(), 0
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            broken += 1
            continue
        if row["event_id"] not in seen:
            seen.add(row["event_id"])
            rows.append(row)
    return rows, broken


def hmac_key(account_id: str, secret: bytes) -> str:
    return hmac.new(secret, account_id.encode(), hashlib.sha256).hexdigest()[:32]


def decoded_strings(root: Path) -> set[str]:
    """Every string value and column name in every Parquet file under `root`, decompressed."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    found: set[str] = set()
    for path in root.rglob("*.parquet"):
        table = pq.read_table(path)
        found.update(table.column_names)
        for column in table.columns:
            if pa.types.is_string(column.type):
                found.update(v for v in column.to_pylist() if v is not None)
    return found
