"""`millet simulate`: stream each day's drop of every channel into the landing zone, plus the truth.

Memory is bounded by one slice of users of one channel-day (and the small loan book): days are
generated one after another, and late or lagged events wait in a buffer for their delivery day.
"""

from __future__ import annotations

import gzip
import json
import os
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from millet.contracts import contract_for
from millet.settings import declared_duckdb_config
from millet.simulate.behaviour import GENERATORS
from millet.simulate.events import DAY_US, envelope, midnight_us
from millet.simulate.faults import COUNTED, Faults, corrupt
from millet.simulate.loans import LoanBook, with_envelope
from millet.simulate.population import Population, make_population

NO_FAULTS = Faults()
CHUNK_USERS = 250_000
DELIVERED_AFTER_DAY_END = timedelta(minutes=30)  # the partners' nightly export lands then
CHANNEL_SEED = {name: i + 1 for i, name in enumerate([*GENERATORS, "loans", "bank_repayments", "consent"])}


def simulate(
    landing_dir: Path,
    *,
    users: int,
    days: int,
    start: date,
    seed: int,
    faults: Faults = NO_FAULTS,
    truth_dir: Path | None = None,
    progress: bool = False,
) -> list[Path]:
    """Write `days` daily drops for every channel, and the ground truth; returns the files written."""
    truth_dir = truth_dir or landing_dir.parent / "truth"
    pop = make_population(users, seed)
    _write_parquet(pop.to_table(), truth_dir / "users.parquet")
    book, pending, written = LoanBook(pop), defaultdict(list), []
    # One DuckDB for the whole run: opening one takes ~40 ms, more than serialising a small world's day.
    with ThreadPoolExecutor(max_workers=2) as pool, duckdb.connect(config=declared_duckdb_config()) as con:
        con.execute("set TimeZone = 'UTC'")
        for offset in _progress(range(days), progress):
            day = start + timedelta(days=offset)
            drop = _Drop(landing_dir, day, seed, faults, pending, pool, con)
            consent = _consent_records(pop, day, first=offset == 0)
            written += drop.deliver("consent", [drop.lines(consent, "consent")])
            for channel, generate in GENERATORS.items():  # one channel in memory at a time
                chunks = range(0, len(pop), CHUNK_USERS)
                written += drop.deliver(
                    channel,
                    [
                        drop.lines(
                            generate(_slice(pop, lo, lo + CHUNK_USERS), day, _rng(seed, day, channel, i), i),
                            channel,
                        )
                        for i, lo in enumerate(chunks)
                    ],
                )
            written += _deliver_loans(pop, book, drop, truth_dir)
            _write_json(drop.log, truth_dir / "faults" / f"dt={day}.json")
    return written


def _consent_records(pop: Population, day: date, first: bool) -> dict:
    """Everyone's onboarding choice on the first day simulated; no later changes (yet)."""
    who = np.arange(len(pop)) if first else np.empty(0, np.int64)
    ev = envelope(pop, who, np.full(len(who), midnight_us(day)), "cns", day, 0, phone=False)
    who = ev.pop("_who")
    return ev | {"consent_given": pop.consent[who], "source": np.full(len(who), "onboarding")}


def _deliver_loans(pop: Population, book: LoanBook, drop: _Drop, truth_dir: Path) -> list[Path]:
    day, faults = drop.day, drop.faults
    loss = faults.bank_sync_loss if day == faults.bank_sync_failure_day else 0.0
    loans, bank, truth = book.day(day, _rng(drop.seed, day, "loans", 0), loss)
    _write_parquet(truth, truth_dir / "loans" / f"dt={day}" / "part-0.parquet")
    drop.log["bank_sync"] = {"repayments_lost": bank.pop("_lost")}
    # The bank books a repayment up to two days later: each record waits for its own day's drop.
    for booked, records in _split_by_day(bank):
        lines = drop.lines(with_envelope(pop, records, "bnk", booked), "bank_repayments")
        drop.pending[(booked, "bank_repayments")].append(lines)
    files = drop.deliver("loans", [drop.lines(with_envelope(pop, loans, "lon", day), "loans")])
    return files + drop.deliver("bank_repayments", drop.pending.pop((day, "bank_repayments"), []))


@dataclass
class _Drop:
    """One day's delivery: applies faults, holds late lines back, writes part files, logs counts."""

    landing_dir: Path
    day: date
    seed: int
    faults: Faults
    pending: dict
    pool: ThreadPoolExecutor
    con: duckdb.DuckDBPyConnection  # serialises the lines (`lines`); used from this thread only
    log: dict = field(default_factory=dict)

    def lines(self, columns: dict, channel: str) -> pa.Array:
        """One JSON object per event, fields in contract order; DuckDB serialises (fast, deterministic:
        insertion order is preserved)."""
        schema = contract_for(channel).schema
        table = pa.table({name: columns[name] for name in schema.names if name in columns})
        stamps = [f.name for f in schema if pa.types.is_timestamp(f.type)]
        select = ", ".join(
            f"strftime({name}, '%Y-%m-%dT%H:%M:%S.%fZ') as {name}" if name in stamps else name
            for name in table.column_names
        )
        self.con.register("events", table)
        try:
            sql = f"select to_json(e)::varchar from (select {select} from events) e"
            return self.con.sql(sql).to_arrow_table().column(0).combine_chunks()
        finally:
            self.con.unregister("events")

    def deliver(self, channel: str, parts: list[pa.Array]) -> list[Path]:
        rng = _rng(self.seed, self.day, channel, 999)
        counts = dict.fromkeys(COUNTED, 0)
        for i, lines in enumerate(parts):
            parts[i], later, part_counts = corrupt(lines, contract_for(channel), self.day, self.faults, rng)
            for delay, held in later.items():
                self.pending[(self.day + timedelta(days=delay), channel)].append(held)
            for k, v in part_counts.items():
                counts[k] += v
        # Bank records already wait for their booking day; only other channels' late lines arrive here.
        arrived = self.pending.pop((self.day, channel), []) if channel != "bank_repayments" else []
        parts.append(pa.concat_arrays(arrived) if arrived else pa.array([], pa.string()))
        self.log[channel] = dict(counts) | {"delivered_late_today": sum(len(a) for a in arrived)}
        folder = self.landing_dir / channel / f"dt={self.day}"
        return self._write(folder, parts, channel)

    def _write(self, folder: Path, parts: list[pa.Array], channel: str) -> list[Path]:
        """Part files, in parallel; file faults: a truncated part, or an extra empty one."""
        rng = _rng(self.seed, self.day, channel, 1_000)
        jobs = [
            (folder / f"part-{i:04d}.jsonl.gz", lines, rng.random() < self.faults.truncated_gzip)
            for i, lines in enumerate(parts)
            if len(lines)
        ]
        if rng.random() < self.faults.empty_file or not jobs:
            jobs.append((folder / f"part-{len(parts):04d}.jsonl.gz", [], False))
        # Every empty file, a quiet day's included: ingestion cannot tell them apart, and need not.
        self.log[channel] |= {"files_truncated": sum(truncate for *_, truncate in jobs),
                              "files_empty": sum(len(lines) == 0 for _, lines, _ in jobs)}
        landed = delivery_time(self.day)
        return list(self.pool.map(lambda job: write_drop(*job, delivered_at=landed), jobs))


def _split_by_day(records: dict):
    days = records["_ts"] // DAY_US
    for ordinal_day in np.unique(days):
        keep = days == ordinal_day
        yield date(1970, 1, 1) + timedelta(days=int(ordinal_day)), {k: v[keep] for k, v in records.items()}


def delivery_time(day: date) -> datetime:
    """When the partners' drop of `day` lands: shortly after the day ends (UTC)."""
    return datetime.combine(day + timedelta(days=1), time(), UTC) + DELIVERED_AFTER_DAY_END


def write_drop(path: Path, lines: pa.Array | list[str], truncate: bool = False,
               delivered_at: datetime | None = None) -> Path:
    """A gzipped JSON-lines part file; `delivered_at` stamps it (its mtime) with when it landed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    body = _jsonl_bytes(pa.array(lines, pa.string()) if isinstance(lines, list) else lines)
    # mtime=0 keeps the clock out of the gzip header: same inputs, same bytes.
    data = gzip.compress(body, compresslevel=1, mtime=0)
    path.write_bytes(data[: len(data) // 2] if truncate else data)
    if delivered_at is not None:
        os.utime(path, (delivered_at.timestamp(), delivered_at.timestamp()))
    return path


def _jsonl_bytes(lines: pa.Array) -> bytes | memoryview:
    """The lines, each ending in a newline: the value buffer of `line + "\\n"`, with no Python strings."""
    if len(lines) == 0:
        return b""
    terminated = pc.binary_join_element_wise(lines, "\n", "")
    offsets = np.frombuffer(terminated.buffers()[1], np.int32)
    start, end = offsets[terminated.offset], offsets[terminated.offset + len(terminated)]
    return memoryview(terminated.buffers()[2])[start:end]


def _slice(pop: Population, lo: int, hi: int) -> Population:
    return replace(pop, **{k: v[lo:hi] for k, v in vars(pop).items()})


def _rng(seed: int, day: date, channel: str, part: int) -> np.random.Generator:
    return np.random.default_rng([seed, day.toordinal(), CHANNEL_SEED[channel], part])


def _write_parquet(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, compression="zstd")


def _write_json(data: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _progress(days, enabled: bool):
    if not enabled:
        return days
    from tqdm import tqdm

    return tqdm(days, desc="simulating days", unit="day")
