"""Plain-Python readings of landing drops, independent of the code under test, and shared test data."""

from __future__ import annotations

import gzip
import hashlib
import hmac
import json
import re
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


def as_quarantined(line: str, secret: bytes) -> dict | str:
    """What quarantine must show of a refused `line` (an order): the record with its account id replaced
    by the user_key and its device id and phone by their shape (digits 9, letters x); a line that is not
    a JSON object, whole (sealed, and shown once unsealed)."""
    try:
        record = json.loads(line)
    except ValueError:
        return line
    if not isinstance(record, dict):
        return line
    if record.get("account_id") is not None:
        record["user_key"] = hmac_key(str(record["account_id"]), secret)
    record.pop("account_id", None)
    for name in ("device_id", "phone"):
        if record.get(name) is not None:
            record[name] = re.sub("[A-Za-z]", "x", re.sub("[0-9]", "9", str(record[name])))
        else:
            record.pop(name, None)
    return record


def shown_quarantine(settings, channel: str, day: str) -> list[dict]:
    """The quarantine partition's rows, each with `shown`: its masked record, or its unsealed line."""
    import pyarrow.parquet as pq

    from millet.ingest.quarantine import Sealer, unsealed_lines

    table = pq.read_table(settings.quarantine_dir / channel / f"dt={day}")
    opened = unsealed_lines(table, Sealer(settings.pseudonym_secret), channel, day)
    return [row | {"shown": json.loads(row["masked_line"]) if row["masked_line"] is not None else line}
            for row, line in zip(table.to_pylist(), opened, strict=True)]


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


# A hand-written web-store order, for ingestion tests: change a field with order_line(field=value),
# drop one with order_line(field=...).
DAY = "2026-02-01"
GOOD = {
    "event_id": "e1", "event_ts": "2026-02-01T10:00:00Z", "account_id": "A000000042",
    "device_id": "861234567890123", "phone": "+8613800000000", "order_id": "O1", "amount": 99.5,
    "items": 2, "payment_type": "full", "coupon_used": False, "status": "placed", "address_changed": False,
}


def order_line(**changes) -> str:
    record = {**GOOD, **changes}
    return json.dumps({k: v for k, v in record.items() if v is not ...})


def land_consent(settings, choices: dict[str, bool], day: str = DAY) -> None:
    """Deliver and ingest a consent feed for `day`: behaviour ingestion reads it first."""
    records = [
        json.dumps({"event_id": f"c-{account}-{day}", "event_ts": f"{day}T00:00:00Z", "account_id": account,
                    "consent_given": given, "source": "onboarding"})
        for account, given in choices.items()
    ]
    from millet.ingest import ingest_channel_day
    from millet.simulate.run import write_drop

    write_drop(settings.landing_dir / "consent" / f"dt={day}" / "part-0000.jsonl.gz", records)
    ingest_channel_day("consent", day, settings)


def ingest_days(settings, start, days: int, workers: int = 2) -> None:
    """Ingest every channel's drops for `days` days from `start`, as the nightly runs would."""
    from datetime import timedelta

    from millet.ingest.history import ingest_range

    ingest_range(start, start + timedelta(days=days - 1), settings, workers)
