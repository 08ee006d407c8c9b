"""Ingest one channel's drop for one arrival day into bronze, with a quarantine and a manifest.

Bronze is partitioned by ARRIVAL day (`dt`) and keeps each event's own timestamp: features as of
day D read only partitions dt <= D, which is exactly what the lender knew at the end of D.

The work happens in one DuckDB per channel-day (a history's ingest reuses one per channel, each day in an
empty catalog of its own): each landing file's lines are checked
by SQL generated from the contract (`validate`), then the good rows are deduplicated, pseudonymised
and filtered for consent, and bronze and quarantine are streamed to their partitions.
"""

from __future__ import annotations

import json
import tempfile
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, time, timedelta

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from millet.contracts import bronze_schema, contract_for
from millet.contracts.base import Contract
from millet.files import write_text
from millet.ingest import quarantine
from millet.ingest.landing import LINES_SCHEMA, UnreadableFile, drop_files, read_lines
from millet.ingest.partition import PART_FILE, partition_dir, write_partition
from millet.ingest.validate import checked_lines_sql
from millet.settings import Settings, get_settings
from millet.sqltext import ident, literal

_BATCH_ROWS = 1_000_000  # rows per batch streamed to Parquet, and so per row group


@dataclass
class Manifest:
    """What one ingest run did; `lines_in == rows_out + quarantined + duplicates + excluded_no_consent +
    excluded_erased`."""

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
    excluded_erased: int = 0  # events of people who asked to be forgotten (late or re-sent ones)
    reasons: dict[str, int] = field(default_factory=dict)
    unknown_fields: list[str] = field(default_factory=list)
    files_quarantined: dict[str, str] = field(default_factory=dict)  # file → reason; its lines are unknown
    delivered_at: str | None = None  # when the drop's last file landed (its mtime, UTC): freshness

    @property
    def balanced(self) -> bool:
        return self.lines_in == (self.rows_out + self.quarantined + self.duplicates + self.excluded_no_consent
                                 + self.excluded_erased)


def ingest_channel_day(channel: str, day: str | date, settings: Settings | None = None,
                       database: duckdb.DuckDBPyConnection | None = None) -> dict:
    """Load landing/<channel>/dt=<day>/ into bronze; returns the manifest as a dict. `database`: an open
    `ingest_database` to work in, for many days in a row (opening one takes about 40 ms, more than half of
    a small drop's ingest); else one of its own. A database whose day failed is not to be used again."""
    settings = settings or get_settings()
    day = date.fromisoformat(str(day)).isoformat()  # a name that reaches SQL and paths: checked
    contract = contract_for(channel)
    if (kept := _ingested_and_gone(channel, day, settings)) is not None:
        return kept
    manifest = Manifest(channel=channel, dt=day, contract_version=contract.version)
    with _empty_catalog(database) if database is not None else ingest_database(settings) as con:
        _check_landing_files(con, settings, contract, day, manifest)
        _resolve_good_rows(con, settings, contract, day)
        _count(con, manifest)
        _write_outputs(con, settings, manifest, contract)
    return asdict(manifest) | {"balanced": manifest.balanced}


def _ingested_and_gone(channel: str, day: str, settings: Settings) -> dict | None:
    """The day's manifest, when the day is in bronze and retention removed its landing drop since
    (millet.ingest.retention): ingesting nothing again would replace the day's record with an empty one,
    as a re-run of an old day or of a one-pass history would. Also when part of the drop is still there
    (a purge killed inside the folder: it is marked before it goes). None otherwise: a drop a person
    removed is ingested as missing, and alerted."""
    path = settings.ingest_manifest_path(channel, day)
    if not path.exists():
        return None
    manifest = json.loads(path.read_text())
    bronze = partition_dir(settings.bronze_dir / channel, day) / PART_FILE
    return manifest if manifest.get("landing_removed") and bronze.exists() else None


@contextmanager
def _empty_catalog(con: duckdb.DuckDBPyConnection):
    """`con` working in an in-memory catalog of its own, dropped after with every table in it: the next
    channel-day in the same database starts from nothing. After a failure the day's error is what is
    raised: a result it left open refuses the clean-up's query, and the database is not reused."""
    (home,), = con.sql("select current_database()").fetchall()
    con.execute("attach ':memory:' as channel_day; use channel_day")
    try:
        yield con
    except BaseException:
        with suppress(duckdb.Error):
            con.execute(f"use {ident(home)}; detach channel_day")
        raise
    con.execute(f"use {ident(home)}; detach channel_day")


@contextmanager
def ingest_database(settings: Settings):
    """An in-memory DuckDB for ingesting, within the ingest memory limit, spilling to a scratch folder."""
    settings.scratch_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=settings.scratch_dir, prefix="ingest-") as spill:
        con = duckdb.connect(config=settings.duckdb_config(
            memory_limit=settings.ingest_memory_limit, temp_directory=spill, preserve_insertion_order=False))
        con.execute("set TimeZone = 'UTC'")
        try:
            yield con
        finally:
            con.close()


def _check_landing_files(con, settings: Settings, contract: Contract, day: str, manifest: Manifest) -> None:
    """Every line of every readable file into table `checked`: typed values, or a reason and the line."""
    closes_at = datetime.combine(date.fromisoformat(day) + timedelta(days=1), time(), tzinfo=UTC)
    keep = [contract.account, *(name for name in bronze_schema(contract).names if name != "user_key")]
    sql = checked_lines_sql(contract, closes_at, keep,
                            max_lateness=timedelta(days=settings.max_event_lateness_days))
    # The first readable file creates the table (the query's own column types), the others add to it.
    create, add, created = f"create table checked as {sql}", f"insert into checked {sql}", False
    for path in drop_files(settings.landing_dir, contract.channel, day):
        manifest.files.append(path.name)
        landed = datetime.fromtimestamp(path.stat().st_mtime, UTC).isoformat(timespec="seconds")
        manifest.delivered_at = max(manifest.delivered_at or landed, landed)
        try:
            lines = read_lines(path)
        except UnreadableFile as exc:
            manifest.files_quarantined[path.name] = exc.reason
            if any(quarantine.naming(_erased(settings), settings.pseudonym_chain, [None],
                                     [quarantine.readable_text(path.read_bytes())])):
                manifest.files_quarantined[path.name] += "; not kept: it names someone forgotten"
                continue
            folder = settings.quarantine_dir / contract.channel / "files" / f"dt={day}"
            quarantine.quarantine_file(path, folder, quarantine.Sealer(settings.pseudonym_secret),
                                       contract.channel, day)
            continue
        con.register("lines", lines)
        con.execute(add if created else create)
        created = True
    if not created:  # no readable file: the table, with no rows
        con.register("lines", LINES_SCHEMA.empty_table())
        con.execute(create)
    con.unregister("lines")


def _resolve_good_rows(con, settings: Settings, contract: Contract, day: str) -> None:
    """Table `resolved`: each good row with its user_key and what becomes of it (`outcome`)."""
    # Today's ids are the small side: the lookback's ids stream past them, never all held at once.
    con.execute(f"""
        create table seen_before as
        select distinct earlier.event_id from {_earlier_event_ids(settings, contract.channel, day)} earlier
        semi join checked on earlier.event_id = checked.event_id
    """)
    consent_filter = "false"
    if contract.consent_bound:
        _load_consenting_users(con, settings, day)
        consent_filter = "user_key not in (select user_key from consenting)"
    erased_filter = "false"
    if not (contract.kept_by_law or contract.is_request_feed) and settings.tombstones_path.exists():
        # A tombstone keeps a forgotten person's late or re-sent events from bringing them back.
        con.execute(f"create table erased as select user_key from read_parquet("
                    f"{literal(str(settings.tombstones_path))})")
        erased_filter = "user_key in (select user_key from erased)"
    # At-least-once delivery: an event already in an earlier day's bronze, or earlier in this drop, is a
    # duplicate; the first delivery of the day wins (file, then line, order).
    con.execute(f"""
        create table resolved as
        with good as (
            select * exclude (reason, detail, raw_line, unknown_fields),
                {settings.pseudonym_chain.sql(contract.account)} as user_key,
                row_number() over (partition by event_id order by source_file, line_no) > 1 as repeated
            from checked where reason is null
        )
        select good.*, case
                when event_id in (select event_id from seen_before) then 'duplicate_seen_before'
                when repeated then 'duplicate'
                when {erased_filter} then 'excluded_erased'
                when {consent_filter} then 'excluded_no_consent'
                else 'kept'
            end as outcome
        from good
    """, settings.pseudonym_chain.parameters())


def _load_consenting_users(con, settings: Settings, day: str) -> None:
    """Table `consenting`: users whose latest consent record that had arrived by the end of `day` agrees,
    unless a withdrawal applied since (millet.privacy.erasure) came after that record: a re-run of a night
    before someone withdrew must not load their behaviour again. (On the night itself no such withdrawal
    exists yet: the record of the day would be the withdrawal.)

    An allow-list on purpose: a user with no valid record (say, a malformed line) is not assumed to agree.
    """
    consent = settings.bronze_dir / "consent"
    if not any(consent.glob(f"dt=*/{PART_FILE}")):
        raise RuntimeError(f"no consent records under {consent}: ingest the consent feed before behaviour")
    withdrawn_since = "false"
    if settings.withdrawals_path.exists():
        withdrawn_since = (f"exists (select 1 from read_parquet({literal(str(settings.withdrawals_path))}) w "
                           "where w.user_key = c.user_key and w.withdrawn_on > c.dt)")
    con.execute(f"create table consenting as select user_key from ({latest_consent_sql(settings, day)}) c "
                f"where consent_given and not {withdrawn_since}")


def latest_consent_sql(settings: Settings, day: str) -> str:
    """SQL: each user's latest consent record that had arrived by the end of `day` (user_key,
    consent_given, and `dt`, the day it arrived)."""
    consent = settings.bronze_dir / "consent"
    return f"""
        select user_key, consent_given, dt
        from read_parquet({literal(f"{consent}/*/{PART_FILE}")}, hive_partitioning = true)
        where dt <= {literal(date.fromisoformat(day).isoformat())}::date
        qualify row_number() over (partition by user_key order by event_ts desc, event_id desc) = 1"""


def _earlier_event_ids(settings: Settings, channel: str, day: str) -> str:
    """SQL for the event ids in this channel's bronze of the `dedupe_lookback_days` before `day`."""
    first = date.fromisoformat(day) - timedelta(days=settings.dedupe_lookback_days)
    days = (str(first + timedelta(days=offset)) for offset in range(settings.dedupe_lookback_days))
    parts = [p for d in days if (p := partition_dir(settings.bronze_dir / channel, d) / PART_FILE).exists()]
    if not parts:
        return "(select null::varchar as event_id where false)"
    return f"read_parquet([{', '.join(literal(str(p)) for p in parts)}])"


def _count(con, manifest: Manifest) -> None:
    manifest.lines_in = con.sql("select count(*) from checked").fetchall()[0][0]
    reasons = con.sql("select reason, count(*) from checked where reason is not null group by all order by 1")
    manifest.reasons = dict(reasons.fetchall())
    manifest.quarantined = sum(manifest.reasons.values())
    outcomes = dict(con.sql("select outcome, count(*) from resolved group by all").fetchall())
    manifest.rows_out = outcomes.get("kept", 0)
    manifest.duplicates_seen_before = outcomes.get("duplicate_seen_before", 0)
    manifest.duplicates = manifest.duplicates_seen_before + outcomes.get("duplicate", 0)
    manifest.excluded_no_consent = outcomes.get("excluded_no_consent", 0)
    manifest.excluded_erased = outcomes.get("excluded_erased", 0)
    unknown = con.sql("select distinct unnest(unknown_fields) from checked order by 1").fetchall()
    manifest.unknown_fields = [name for (name,) in unknown]


def _write_outputs(con, settings: Settings, manifest: Manifest, contract: Contract) -> None:
    # Sorted by event id (bronze) and by file and line (quarantine): a re-run writes identical bytes.
    schema = bronze_schema(contract)
    bronze = con.sql(f"select {', '.join(schema.names)} from resolved where outcome = 'kept' "
                     "order by event_id")
    write_partition(bronze.to_arrow_reader(_BATCH_ROWS), settings.bronze_dir / manifest.channel,
                    manifest.dt, schema)
    _write_quarantine(con, settings, manifest, contract)
    out = settings.ingest_manifest_path(manifest.channel, manifest.dt)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text(out, json.dumps(asdict(manifest) | {"balanced": manifest.balanced}, indent=2) + "\n")


def _without_the_forgotten(batch: pa.RecordBatch, settings: Settings) -> pa.RecordBatch:
    """Refused lines (the originals still unsealed) but those naming someone forgotten: a tombstone keeps
    their late, re-sent or re-run lines out of quarantine as out of bronze (they count under their reason)."""
    masked, originals = batch.column("masked_line").to_pylist(), batch.column("sealed_line").to_pylist()
    named = quarantine.naming(_erased(settings), settings.pseudonym_chain, masked, originals)
    return batch.filter(pa.array([not n for n in named])) if any(named) else batch


def _erased(settings: Settings) -> set[str]:
    """The user_keys of everyone forgotten (the tombstones); none before the first erasure."""
    path = settings.tombstones_path
    return set(pq.read_table(path, columns=["user_key"]).column(0).to_pylist()) if path.exists() else set()


def _write_quarantine(con, settings: Settings, manifest: Manifest, contract: Contract) -> None:
    """Refused lines with their identifiers masked, or sealed when they have no fields to mask; none of
    someone forgotten."""
    masked = quarantine.masked_line_sql(contract, "raw_line", settings.pseudonym_chain)
    con.execute(f"""
        create table rejected as
        select source_file, line_no, reason, detail, masked_line,
            case when masked_line is null then raw_line end as sealed_line
        from (select *, {masked} as masked_line from checked where reason is not null)
        order by source_file, line_no
    """, settings.pseudonym_chain.parameters())
    rejected = con.sql("select * from rejected order by source_file, line_no").to_arrow_reader(_BATCH_ROWS)
    sealer = quarantine.Sealer(settings.pseudonym_secret)
    sealed = (quarantine.seal_batch(_without_the_forgotten(batch, settings), sealer, manifest.channel,
                                    manifest.dt) for batch in rejected)
    write_partition(pa.RecordBatchReader.from_batches(quarantine.SCHEMA, sealed),
                    settings.quarantine_dir / manifest.channel, manifest.dt, quarantine.SCHEMA)
