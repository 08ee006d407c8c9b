"""Forgetting a person: erasure requests become tombstones, and the next night removes them everywhere.

Requests come from the `deletions` landing feed (validated, pseudonymised and quarantined like every
feed) and from `millet forget`, which stores only the user_key. The night's `apply_erasures` task (before
the day's behaviour is ingested) adds them to the tombstones and removes each new one from every zone
(zones.py). A tombstone then keeps them out: ingestion drops their late or re-sent events, and the credit
mart leaves them out of every later snapshot, though their loan records (kept by law) still feed its state.

Consent withdrawal is narrower: a person whose consent record of the day says no has their behaviour
(every consent-bound channel and family) removed the same way, and nothing else; the consent feed
already keeps their new behaviour out from that day on.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from millet.contracts.base import account_id_field, rule_of
from millet.files import replacing, write_text
from millet.ingest import ingest_channel_day
from millet.ingest.bronze import latest_consent_sql
from millet.ingest.partition import PART_FILE, partition_dir
from millet.privacy.zones import Scope, compact_warehouse, purge
from millet.settings import Settings, get_settings
from millet.sqltext import literal

TOMBSTONES = pa.schema([("user_key", pa.string()), ("requested_on", pa.date32()), ("source", pa.string())])
WITHDRAWALS = pa.schema([("user_key", pa.string()), ("withdrawn_on", pa.date32())])
REQUEST = pa.schema([("user_key", pa.string()), ("requested_at", pa.timestamp("us", tz="UTC")),
                     ("source", pa.string())])


def forget(account_ids: list[str], settings: Settings | None = None) -> list[str]:
    """Queue the erasure of these accounts for the next nightly run; returns their user_keys. The account
    ids are hashed first: only the user_keys are written. Raises ValueError, queueing nothing, for an id
    not in the contract's format: its key would match nobody (a pasted space), and the person named would
    never be erased while the night reported them forgotten."""
    settings = settings or get_settings()
    pattern = rule_of(account_id_field()).pattern
    if malformed := [account for account in account_ids if not re.fullmatch(pattern, account)]:
        raise ValueError(f"not an account id (the contract's format is {pattern}): "
                         f"{', '.join(map(repr, malformed))}; nothing was queued")
    keys = settings.pseudonym_chain.user_keys(account_ids)
    now = datetime.now(UTC)
    table = pa.table({"user_key": keys, "requested_at": [now] * len(keys),
                      "source": ["millet forget"] * len(keys)}, schema=REQUEST)
    folder = settings.erasure_dir / "requests"
    folder.mkdir(parents=True, exist_ok=True)
    with replacing(folder / f"{now:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}.parquet") as copy:
        pq.write_table(table, copy)
    return keys


def ensure_tombstones(settings: Settings) -> None:
    """An empty tombstone list where there is none yet: the credit mart reads it every night."""
    if not settings.tombstones_path.exists():
        _write_tombstones(TOMBSTONES.empty_table(), settings)


def apply_erasures(day: str | date, settings: Settings | None = None) -> dict:
    """Ingest the day's erasure requests, add them (and `millet forget`'s) to the tombstones, and remove
    every newly forgotten person, and every withdrawal of the day's behaviour, from every zone."""
    settings = settings or get_settings()
    return due_erasures(date.fromisoformat(str(day)), settings).apply(settings)


@dataclass(frozen=True)
class DueErasures:
    """A night's erasures, found before anything is removed: a history ingested in one pass must have
    ingested the behaviour of the days before one that removes someone (millet.ingest.history)."""

    day: date
    requests_in: int
    new: dict[str, str]  # user_key → where the request came from
    withdrawn: frozenset[str]  # whose consent record of the day says no
    forget_requests: tuple[Path, ...]  # only these are deleted after: one filed meanwhile waits a night

    @property
    def removes_anyone(self) -> bool:
        return bool(self.new or self.withdrawn)

    def apply(self, settings: Settings) -> dict:
        removed = purge(set(self.new), Scope.EVERYTHING, settings) if self.new else {}
        behaviour = purge(set(self.withdrawn), Scope.BEHAVIOUR, settings) if self.withdrawn else {}
        if self.removes_anyone:  # once for both, before the records: a re-run after a kill does it again
            compact_warehouse(settings)
        if self.new:
            added = pa.table({"user_key": list(self.new), "requested_on": [self.day] * len(self.new),
                              "source": list(self.new.values())}, schema=TOMBSTONES)
            _write_tombstones(pa.concat_tables([pq.read_table(settings.tombstones_path), added]), settings)
        if self.withdrawn:
            keys = sorted(self.withdrawn)
            added = pa.table({"user_key": keys, "withdrawn_on": [self.day] * len(keys)}, schema=WITHDRAWALS)
            path = settings.withdrawals_path
            _write_sorted(pa.concat_tables([pq.read_table(path), added]) if path.exists() else added, path)
        for request in self.forget_requests:
            request.unlink()  # applied: the tombstone is the record now
        summary = {"requests_in": self.requests_in, "forgotten": len(self.new), "rows_removed": removed,
                   "consent_withdrawn": len(self.withdrawn), "behaviour_rows_removed": behaviour}
        out = settings.manifests_dir / "erasure" / f"dt={self.day}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        write_text(out, json.dumps(summary, indent=2) + "\n")
        return summary


def due_erasures(day: date, settings: Settings, database=None) -> DueErasures:
    """Ingest the day's deletions feed (in `database`, an open ingest_database, if given) and find who is
    to be forgotten and whose behaviour removed."""
    ensure_tombstones(settings)
    manifest = ingest_channel_day("deletions", day, settings, database)
    known = set(pq.read_table(settings.tombstones_path, columns=["user_key"]).column(0).to_pylist())
    forget_requests = tuple(_forget_requests(settings))
    requested = _requests(day, forget_requests, settings)
    new = {key: source for key, source in requested.items() if key not in known}
    withdrawn = _withdrawals(day, settings) - known - set(new)
    return DueErasures(day, manifest["lines_in"], new, frozenset(withdrawn), forget_requests)


def _requests(day: date, forget_requests: tuple[Path, ...], settings: Settings) -> dict[str, str]:
    """user_key → where the request came from: the deletions feed up to `day`, and `millet forget`'s
    request files `forget_requests`."""
    found: dict[str, str] = {}
    for path in sorted((settings.bronze_dir / "deletions").glob(f"dt=*/{PART_FILE}")):
        if date.fromisoformat(path.parent.name.removeprefix("dt=")) <= day:
            found |= dict.fromkeys(pq.read_table(path, columns=["user_key"]).column(0).to_pylist(),
                                   "deletions feed")
    for path in forget_requests:
        keys = pq.read_table(path, columns=["user_key"]).column(0).to_pylist()
        found |= dict.fromkeys(keys, "millet forget")
    return found


def _forget_requests(settings: Settings) -> list[Path]:
    return sorted((settings.erasure_dir / "requests").glob("*.parquet"))


def _withdrawals(day: date, settings: Settings) -> set[str]:
    """People whose consent record that arrived on `day` is their latest one, and says no."""
    import duckdb

    if not (partition_dir(settings.bronze_dir / "consent", day.isoformat()) / PART_FILE).exists():
        return set()  # no consent record arrived that day
    with duckdb.connect(config=settings.duckdb_config()) as con:
        rows = con.sql(f"select user_key from ({latest_consent_sql(settings, str(day))}) "
                       f"where not consent_given and dt = {literal(day.isoformat())}::date").fetchall()
    return {key for (key,) in rows}


def _write_tombstones(table: pa.Table, settings: Settings) -> None:
    _write_sorted(table, settings.tombstones_path)


def _write_sorted(table: pa.Table, path: Path) -> None:
    """`table` by user_key to `path`, whole or not at all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(path) as copy:
        pq.write_table(table.sort_by("user_key"), copy)
