"""Ingest one channel's drop for one arrival day into bronze, with a quarantine and a manifest.

Bronze is partitioned by ARRIVAL day (`dt`) and keeps each event's own timestamp: features as of
day D read only partitions dt <= D, which is exactly what the lender knew at the end of D.
"""

from __future__ import annotations

import gzip
import json
import shutil
import zlib
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from millet.contracts import bronze_schema, contract_for
from millet.contracts.base import Contract
from millet.ingest.partition import PART_FILE, partition_dir, write_partition
from millet.ingest.pseudonymise import user_key
from millet.ingest.validate import Rejected, check_record, parse_line, unknown_fields
from millet.settings import Settings, get_settings

QUARANTINE_SCHEMA = pa.schema(
    [("source_file", pa.string()), ("line_no", pa.int64()), ("reason", pa.string()),
     ("detail", pa.string()), ("raw_line", pa.string())]
)


@dataclass
class Manifest:
    """What one ingest run did; `lines_in == rows_out + quarantined + duplicates` always."""

    channel: str
    dt: str
    contract_version: str
    files: list[str] = field(default_factory=list)
    lines_in: int = 0
    rows_out: int = 0
    quarantined: int = 0
    duplicates: int = 0
    duplicates_seen_before: int = 0  # of `duplicates`: re-sent events already in an earlier day's bronze
    excluded_no_consent: int = 0  # behaviour of users who declined, or with no valid record saying yes
    reasons: dict[str, int] = field(default_factory=dict)
    unknown_fields: list[str] = field(default_factory=list)
    files_quarantined: dict[str, str] = field(default_factory=dict)  # file → reason; its lines are unknown

    @property
    def balanced(self) -> bool:
        return self.lines_in == self.rows_out + self.quarantined + self.duplicates + self.excluded_no_consent


def ingest_channel_day(channel: str, day: str | date, settings: Settings | None = None) -> dict:
    """Load landing/<channel>/dt=<day>/ into bronze; returns the manifest as a dict."""
    settings = settings or get_settings()
    day = str(day)
    contract = contract_for(channel)
    closes_at = datetime.combine(date.fromisoformat(day) + timedelta(days=1), time(), tzinfo=UTC)
    manifest = Manifest(channel=channel, dt=day, contract_version=contract.version)
    rows, quarantine, extra = [], [], set()
    # At-least-once delivery re-sends old events days later: what earlier days already loaded counts as seen.
    earlier = _earlier_event_ids(settings, channel, contract, day)
    consenting = _consenting_user_keys(settings, day) if contract.consent_bound else None
    seen: set[str] = set()
    secret = settings.pseudonym_secret

    for path in sorted((settings.landing_dir / channel / f"dt={day}").glob("*.jsonl.gz")):
        manifest.files.append(path.name)
        try:
            lines = _read_lines(path)
        except UnreadableFile as exc:
            manifest.files_quarantined[path.name] = exc.reason
            _quarantine_file(path, settings.quarantine_dir / channel / "files" / f"dt={day}")
            continue
        for line_no, line in enumerate(lines, start=1):
            manifest.lines_in += 1
            try:
                record = parse_line(line)
                row = check_record(record, contract, closes_at)
            except Rejected as exc:
                quarantine.append((path.name, line_no, exc.reason, str(exc), line))
                continue
            event_id = row[contract.event_id]
            if event_id in seen or event_id in earlier:
                manifest.duplicates += 1
                manifest.duplicates_seen_before += event_id in earlier
                continue
            seen.add(event_id)
            extra |= unknown_fields(record, contract)
            row = _pseudonymise(row, contract, secret)
            if consenting is not None and row["user_key"] not in consenting:
                manifest.excluded_no_consent += 1
                continue
            rows.append(row)

    manifest.rows_out = len(rows)
    manifest.quarantined = len(quarantine)
    manifest.reasons = dict(sorted(Counter(q[2] for q in quarantine).items()))
    manifest.unknown_fields = sorted(extra)
    _write_outputs(settings, manifest, contract, rows, quarantine)
    return asdict(manifest) | {"balanced": manifest.balanced}


def _consenting_user_keys(settings: Settings, day: str) -> set[str]:
    """Users whose latest consent record that had arrived by the end of `day` gives consent.

    An allow-list on purpose: a user with no valid record (say, a malformed line) is not assumed to agree.
    """
    import duckdb

    consent = settings.bronze_dir / "consent"
    if not any(consent.glob("dt=*/*.parquet")):
        raise RuntimeError(f"no consent records under {consent}: ingest the consent feed before behaviour")
    query = f"""
        select user_key from read_parquet('{consent}/*/*.parquet', hive_partitioning = true)
        where dt <= date '{day}'
        qualify row_number() over (partition by user_key order by event_ts desc, event_id desc) = 1
            and consent_given
    """
    return {key for (key,) in duckdb.sql(query).fetchall()}


def _earlier_event_ids(settings: Settings, channel: str, contract: Contract, day: str) -> set[str]:
    """Event ids in this channel's bronze partitions of the `dedupe_lookback_days` before `day`."""
    first = date.fromisoformat(day) - timedelta(days=settings.dedupe_lookback_days)
    ids: set[str] = set()
    for offset in range(settings.dedupe_lookback_days):
        part = partition_dir(settings.bronze_dir / channel, str(first + timedelta(days=offset))) / PART_FILE
        if part.exists():
            ids.update(pq.read_table(part, columns=[contract.event_id]).column(0).to_pylist())
    return ids


class UnreadableFile(ValueError):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _read_lines(path: Path) -> list[str]:
    try:
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            return [line.rstrip("\n") for line in handle if line.strip()]
    except (EOFError, gzip.BadGzipFile, zlib.error):
        raise UnreadableFile("truncated_or_corrupt_gzip") from None
    except UnicodeDecodeError:
        raise UnreadableFile("bad_encoding") from None


def _quarantine_file(path: Path, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, folder / path.name)


def _pseudonymise(row: dict, contract: Contract, secret: bytes) -> dict:
    kept = {k: v for k, v in row.items() if k not in contract.raw_identifiers}
    return {"user_key": user_key(row[contract.account], secret), **kept}


def _write_outputs(settings: Settings, manifest: Manifest, contract: Contract, rows, quarantine) -> None:
    # Sorted by event id so a re-run of the same day writes byte-identical content.
    rows.sort(key=lambda r: r[contract.event_id])
    table = pa.Table.from_pylist(rows, schema=bronze_schema(contract))
    write_partition(table, settings.bronze_dir / manifest.channel, manifest.dt)
    rejected = pa.Table.from_pylist(
        [dict(zip(QUARANTINE_SCHEMA.names, q, strict=True)) for q in quarantine], schema=QUARANTINE_SCHEMA
    )
    write_partition(rejected, settings.quarantine_dir / manifest.channel, manifest.dt)
    out = settings.manifests_dir / "ingest" / manifest.channel / f"dt={manifest.dt}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(asdict(manifest) | {"balanced": manifest.balanced}, indent=2) + "\n")
