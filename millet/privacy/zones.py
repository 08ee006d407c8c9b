"""Removing people from every zone under the data root, by user_key.

What stays, and why: the landing drops (raw as delivered; deleted after `MILLET_LANDING_RETENTION_DAYS`,
and a tombstone keeps a re-run from loading them again), the loan and repayment records the lender must
keep by law (bronze `loans` and `bank_repayments`, their intermediate tables, the credit state built from
them, the bank reconciliation), the erasure requests and tombstones themselves (pseudonymous), and the
simulator's ground truth (not Millet's). Everything else that holds a user_key loses the person's rows:
bronze, quarantine (masked lines by their user_key, sealed lines by the account ids inside them),
the warehouse's tables (and the file rewritten: see compact_warehouse), the rolling state, every
snapshot, the nightly lists, what models wrote, the online store; and text files (alerts, reports,
logs, manifests) have the key replaced by `[erased]`.
"""

from __future__ import annotations

import contextlib
import enum
import os
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from millet.contracts import all_contracts, contracts
from millet.feature_spec import families
from millet.files import abandoned_copies, duckdb_copies, replacing, sync, write_bytes
from millet.locks import try_lock
from millet.settings import Settings
from millet.sqltext import ident, literal

if TYPE_CHECKING:
    import duckdb  # imported where used: erasing from files alone does not load it

TEXT_SUFFIXES = (".json", ".jsonl", ".html", ".log", ".txt", ".csv", ".md", ".yml", ".yaml")
ERASED = b"[erased]"


class Scope(enum.Enum):
    EVERYTHING = "everything"  # an erasure: all but what the law keeps
    BEHAVIOUR = "behaviour"  # a consent withdrawal: the consent-bound channels and their families only


def purge(keys: set[str], scope: Scope, settings: Settings) -> dict[str, int]:
    """Remove the people with these user_keys from every zone `scope` covers; rows removed per zone. The
    warehouse's rows are deleted: compact_warehouse then removes them from the file."""
    removed: Counter = Counter()
    with no_build_running(settings) as warehouse:  # none writes the files while they are rewritten
        _remove_copies_of_the_gone(settings)
        files = _parquet_files(scope, settings)
        # One file per core at a time: an active person is in nearly every day's bronze and snapshot, so a
        # night with any erasure rewrites most of the history's files, and Arrow's work releases the GIL.
        # A file in flight holds one row group (about 0.5 GB for the widest snapshot's, whatever the users).
        with ThreadPoolExecutor(max_workers=_usable_cpus()) as pool:
            for path, count in zip(files, pool.map(lambda path: drop_rows(path, keys), files), strict=True):
                removed[path.relative_to(settings.root).parts[0]] += count
        if warehouse:
            removed["warehouse"] += _purge_warehouse(warehouse, keys, scope)
    removed["online_store"] += _purge_online_store(keys, scope, settings)
    if scope is Scope.EVERYTHING:
        removed["quarantine"] += _purge_quarantine(keys, settings)
        removed["text_files"] += _scrub_text(keys, settings)
    return {zone: n for zone, n in sorted(removed.items()) if n}


class BuildRunning(RuntimeError):
    pass


@contextlib.contextmanager
def no_build_running(settings: Settings) -> Iterator[duckdb.DuckDBPyConnection | None]:
    """The warehouse open for writing, which DuckDB allows one process at a time, and which every dbt build
    holds from its first model to its end: while it is held, no build writes (one that starts fails, and
    Airflow retries it). None where there is no warehouse yet: no build has run. BuildRunning if a build
    holds it now."""
    import duckdb

    if not settings.warehouse_path.exists():
        yield None
        return
    try:
        con = duckdb.connect(str(settings.warehouse_path), config=settings.duckdb_config())
    except duckdb.IOException as exc:
        raise BuildRunning(f"another process holds the warehouse (a dbt build?): {exc}; run this again "
                           "when it has ended") from exc
    with con:
        yield con


def remove_abandoned_copies(settings: Settings) -> list[Path]:
    """Delete the copies killed writers left under the data root; returns them. No build may run meanwhile
    (BuildRunning)."""
    with no_build_running(settings):
        return _remove_copies_of_the_gone(settings)


def _remove_copies_of_the_gone(settings: Settings) -> list[Path]:
    """Millet's copies whose writer is gone (abandoned_copies) and DuckDB's beside the files dbt writes,
    the caller holding the warehouse (so no build is writing them). They hold other people's rows where no
    erasure, or key rotation, looks; DuckDB's, cut short, are not readable Parquet."""
    gone = [*abandoned_copies(settings.root),
            *duckdb_copies([settings.state_dir, settings.snapshots_dir, settings.reconciliation_dir])]
    for path in gone:
        path.unlink(missing_ok=True)
    return gone


def _usable_cpus() -> int:
    """The CPUs this process may run on (its affinity: a taskset's or a container's cpuset), where the OS
    says; else all of them."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def behaviour_channels() -> list[str]:
    return [c.channel for c in contracts().values() if c.consent_bound]


def behaviour_families() -> list[str]:
    return [fam.name for fam in families() if all(f.consent_bound for f in fam.features)]


def _erased_channels(scope: Scope) -> list[str]:
    if scope is Scope.BEHAVIOUR:
        return behaviour_channels()
    return [c.channel for c in all_contracts().values() if not (c.kept_by_law or c.is_request_feed)]


def _erased_families(scope: Scope) -> list[str]:
    return behaviour_families() if scope is Scope.BEHAVIOUR else [fam.name for fam in families()]


def _parquet_files(scope: Scope, settings: Settings) -> list[Path]:
    folders = [settings.bronze_dir / channel for channel in _erased_channels(scope)]
    folders += [settings.snapshots_dir / family for family in _erased_families(scope)]
    state = {f"state_{f}" for f in _erased_families(scope) if f not in _families_kept_by_law()}
    folders += [m for m in settings.state_dir.glob("state_*__*") if m.name.split("__")[0] in state]
    if scope is Scope.EVERYTHING:
        folders += [settings.tracking_dir, settings.models_dir, settings.root / "quality",
                    settings.training_dir]
    kept = settings.reconciliation_dir
    return [p for folder in folders for p in sorted(folder.rglob("*.parquet"))
            if kept not in p.parents]


def _families_kept_by_law() -> set[str]:
    """The credit family's state is built from the loan records the law keeps (a re-base rebuilds it
    from them): it stays; its snapshots do not (the credit mart leaves tombstoned people out)."""
    return {fam.name for fam in families() if not any(f.consent_bound for f in fam.features)}


def drop_rows(path: Path, keys: set[str]) -> int:
    """Rewrite the Parquet file at `path` without the rows whose user_key is one of `keys`."""
    try:
        file = pq.ParquetFile(path)
    except pa.ArrowInvalid as exc:
        raise pa.ArrowInvalid(f"{path} is not readable Parquet ({exc}): no one can be removed from it; "
                              "restore it, or delete it if it is not Millet's") from exc
    with file:
        if "user_key" not in file.schema_arrow.names:
            return 0
        wanted = pa.array(sorted(keys), pa.string())
        hits = pc.is_in(file.read(columns=["user_key"]).column(0), value_set=wanted)
        count = pc.sum(hits).as_py() or 0
        if count:
            _rewrite_without(file, pc.invert(hits), path)
    return count


def _rewrite_without(file: pq.ParquetFile, keep: pa.ChunkedArray, path: Path) -> None:
    """`file` rewritten to `path` with the rows `keep` marks, one row group at a time: a file's columns
    decoded whole (a snapshot's hundreds of features) would take memory many times its size, per core."""
    with replacing(path) as copy, pq.ParquetWriter(copy, file.schema_arrow, compression="zstd") as writer:
        start = 0
        for i in range(file.num_row_groups):
            group = file.read_row_group(i)
            kept = group.filter(keep.slice(start, group.num_rows))
            start += group.num_rows
            if kept.num_rows:
                writer.write_table(kept)


def _replace(path: Path, table: pa.Table, schema: pa.Schema) -> None:
    with replacing(path) as copy:
        pq.write_table(table.cast(schema), copy, compression="zstd")


def _purge_warehouse(con: duckdb.DuckDBPyConnection, keys: set[str], scope: Scope) -> int:
    prefixes = tuple(f"int_{channel}__" for channel in _erased_channels(scope))
    removed = 0
    tables = con.sql("select c.table_schema, c.table_name from information_schema.columns c "
                     "join information_schema.tables t using (table_catalog, table_schema, table_name) "
                     "where c.column_name = 'user_key' and t.table_type = 'BASE TABLE'").fetchall()
    for schema, table in tables:
        if table.startswith(prefixes):
            name = f'"{schema}"."{table}"'
            removed += con.execute(f"delete from {name} where user_key in (select unnest($keys))",
                                   {"keys": sorted(keys)}).fetchone()[0]
    return removed


def compact_warehouse(settings: Settings) -> None:
    """Rewrite the warehouse into a fresh file, whole or not at all. DuckDB's DELETE and UPDATE leave the
    rows they replace in the file's free blocks, which a CHECKPOINT frees and nothing overwrites: an
    erased person's behaviour, or a user_key from before a rotation, stayed readable in the raw file.
    A copy holds only what is live (DuckDB's own way to reclaim space: COPY FROM DATABASE).

    The original stays open read-only until the copy has replaced it, so no writer (dbt) can open it
    meanwhile and write what the copy would lose; a second compaction is refused, not waited for."""
    import duckdb

    path = settings.warehouse_path
    if not path.exists():
        return
    fresh, lock = path.with_name(f".{path.name}.compacting"), path.with_name(f".{path.name}.compaction-lock")
    held = try_lock(lock)
    if held is None:
        raise RuntimeError(f"another process is compacting the warehouse ({lock})")
    with held:
        try:
            _remove(fresh)  # a copy left by a kill
            with duckdb.connect(str(path), read_only=True, config=settings.duckdb_config()) as con:
                catalog = con.execute("select current_database()").fetchone()[0]
                con.execute(f"attach {literal(str(fresh))} as compacted (read_only false)")
                con.execute(f"copy from database {ident(catalog)} to compacted")
                con.execute("detach compacted")
                for wal in (_wal(path), _wal(fresh)):  # the original's would be replayed onto the copy
                    if wal.exists():
                        raise RuntimeError(f"{wal} is there; the warehouse was not compacted")
                fresh.replace(path)
                sync(path.parent)  # the swap survives a power cut: the erasure is done for good
        finally:
            _remove(fresh)  # a copy that failed (a full disk) does not take the space it lacked


def _remove(database: Path) -> None:
    for path in (database, _wal(database)):
        path.unlink(missing_ok=True)


def _wal(database: Path) -> Path:
    return database.with_name(f"{database.name}.wal")


def _purge_online_store(keys: set[str], scope: Scope, settings: Settings) -> int:
    from millet.serving.online.stores import PackedOnlineStore, string_entity_keys
    from millet.serving.store import has_published, open_store

    if not has_published(settings):
        return 0
    store = open_store(settings)
    online = store.provider.online_store
    if not isinstance(online, PackedOnlineStore):
        raise TypeError("erasure removes records from Millet's packed online stores only")
    entity_keys = string_entity_keys(sorted(keys), "user_key", store.config)
    erased = set(_erased_families(scope))
    removed = 0
    for view in store.list_feature_views():
        if view.name in erased:
            removed += len(online.read_records(store.config, view, entity_keys))
            online.delete_records(store.config, view, entity_keys)
    return removed


def _purge_quarantine(keys: set[str], settings: Settings) -> int:
    from millet.ingest.quarantine import Sealer, naming, readable_text, unseal_file, unsealed_lines

    sealer, chain, removed = Sealer(settings.pseudonym_secret), settings.pseudonym_chain, 0
    for path in sorted(settings.quarantine_dir.glob("*/dt=*/*.parquet")):
        channel, day = path.parent.parent.name, path.parent.name.removeprefix("dt=")
        table = pq.read_table(path)
        drop = naming(keys, chain, table.column("masked_line").to_pylist(),
                      unsealed_lines(table, sealer, channel, day))
        if any(drop):
            _replace(path, table.filter(pa.array([not d for d in drop])), table.schema)
            removed += sum(drop)
    for path in sorted(settings.quarantine_dir.glob("*/files/dt=*/*")):
        channel, day = path.parents[2].name, path.parent.name.removeprefix("dt=")
        if any(naming(keys, chain, [None], [readable_text(unseal_file(path, sealer, channel, day))])):
            path.unlink()  # a file that could not be read cannot be edited: it goes whole
            removed += 1
    return removed


def _scrub_text(keys: set[str], settings: Settings) -> int:
    """Replace each key in the text files outside the zones the law keeps; files changed."""
    skip = {settings.landing_dir, settings.truth_dir, settings.erasure_dir, settings.reconciliation_dir,
            settings.bronze_dir / "loans", settings.bronze_dir / "bank_repayments"}
    needles = [key.encode() for key in keys]
    changed = 0
    for path in settings.root.rglob("*"):
        if path.suffix not in TEXT_SUFFIXES or not path.is_file() or skip & set(path.parents):
            continue
        data = path.read_bytes()
        if not any(n in data for n in needles):
            continue
        for needle in needles:
            data = data.replace(needle, ERASED)
        write_bytes(path, data)
        changed += 1
    return changed
