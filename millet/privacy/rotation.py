"""Rotating the pseudonymisation key: a new link on the key chain, and everything stored re-keyed by it.

A user_key cannot be recomputed from the account id (raw ids are not kept past landing retention), so a
rotation does not replace the key: it adds k_new to the chain (millet/ingest/pseudonymise.py) and maps
every stored user_key u to HMAC(k_new, u), which is what ingestion computes from then on. Someone who
holds an old key alone can then link nothing stored or ingested after the rotation.

Re-keyed: every Parquet file under the data root with a `user_key` column (bronze, the rolling state,
snapshots, tombstones and requests, models, tracking, training sets); quarantine (the user_key in masked
lines; sealed lines and files re-sealed under a seal key derived from the new key); the warehouse's
tables (and the file rewritten, so that no old key stays in its free blocks); text files (alerts,
reports, manifests, logs) wherever a stored user_key appears; and the online store, cleared and
republished from the re-keyed snapshots of the day it last published. Landing (raw
drops, no user_key) and the simulator's ground truth are not Millet's and are left alone.

Interruptible: the new key is written first (`Settings.rotation_key_path`; while it exists nothing else
hashes, so no night can mix the chains), and each file's re-keyed bytes are recorded in a journal (their
sha256) before they replace it, so running the command again skips what is done and redoes what is not,
and never re-keys a file twice. The warehouse's update carries its own marker in the same transaction.
The chain grows only once everything is re-keyed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from millet.ingest.pseudonymise import KeyChain
from millet.ingest.quarantine import MASKED_USER_KEY as _MASKED_KEY
from millet.ingest.quarantine import SEALED_SUFFIX, Sealer, line_place
from millet.privacy.zones import TEXT_SUFFIXES, compact_warehouse, remove_abandoned_copies
from millet.settings import Settings, read_keyring, read_or_create_keyring, write_private

_KEY = rb"(?<![0-9a-f])[0-9a-f]{32}(?![0-9a-f])"  # a user_key as it appears in text
_WAREHOUSE_MARKER = "millet_rotation_applied"
Rewrite = Callable[[Path], None]


def rotate_key(settings: Settings, on_rewrite: Rewrite | None = None) -> dict:
    """Add a key to the chain and re-key everything under the data root; resumes an unfinished rotation.
    `on_rewrite(path)` hears each file about to be replaced by its re-keyed copy."""
    if settings.pseudonym_key is not None:
        raise ValueError("MILLET_PSEUDONYM_KEY is set: a rotation rewrites the keyring file, so keep the "
                         f"keys there ({settings.keyring_path}, one per line, mode 0600) and unset it")
    if not settings.keyring_path.exists():
        raise FileNotFoundError(f"no keyring at {settings.keyring_path}: nothing was pseudonymised yet")
    started, keys = time.perf_counter(), read_keyring(settings.keyring_path)
    new = read_or_create_keyring(settings.rotation_key_path)[0]
    work = settings.root / "rotation"
    summary = {"files": 0, "warehouse_tables": 0, "republished_day": None}
    if keys[-1] != new:  # else: everything was done, and only the clean-up below was interrupted
        link, work_journal = KeyChain([new]), Journal(work / "journal.jsonl", settings.root, on_rewrite)
        remove_abandoned_copies(settings)  # rows under old keys no re-keying would reach
        stored = _stored_keys(settings, work)
        summary["files"] = _rekey_files(settings, link, Sealer(keys[-1]), Sealer(new), stored, work_journal)
        summary["warehouse_tables"] = _rekey_warehouse(settings, link)
        summary["republished_day"] = _republish(settings)
        write_private(settings.keyring_path, b"\n".join([*keys, new]) + b"\n")
    _drop_warehouse_marker(settings)
    shutil.rmtree(work, ignore_errors=True)
    settings.rotation_key_path.unlink(missing_ok=True)
    return summary | {"keys_in_chain": len(read_keyring(settings.keyring_path)),
                      "seconds": round(time.perf_counter() - started, 1)}


class Journal:
    """Which files hold their re-keyed bytes: path → sha256 of those bytes, appended before each replace."""

    def __init__(self, path: Path, root: Path, on_rewrite: Rewrite | None):
        self.path, self.root, self.on_rewrite = path, root, on_rewrite
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = path.read_text().splitlines() if path.exists() else []
        self.done = {entry["path"]: entry["sha256"] for entry in map(json.loads, lines)}

    def rewrite(self, path: Path, produce: Callable[[Path], bool]) -> bool:
        """Replace `path` with what `produce(tmp)` writes (it returns False when nothing changes)."""
        name = str(path.relative_to(self.root))
        if name in self.done and self.done[name] == _sha256(path):
            return False
        tmp = path.with_name(f".{path.name}.rekey.tmp")
        if not produce(tmp):
            tmp.unlink(missing_ok=True)
            return False
        digest = _sha256(tmp)
        with self.path.open("a") as handle:
            handle.write(json.dumps({"path": name, "sha256": digest}) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        self.done[name] = digest
        if self.on_rewrite:
            self.on_rewrite(path)
        tmp.replace(path)
        return True


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


# ---- what holds user_keys -----------------------------------------------------------------------
def _not_millets(settings: Settings) -> set[Path]:
    return {settings.landing_dir, settings.truth_dir, settings.root / "rotation"}


def _files(settings: Settings, keep: Callable[[Path], bool]) -> Iterator[Path]:
    skip = _not_millets(settings)
    for path in sorted(settings.root.rglob("*")):
        if path.is_file() and not path.name.startswith(".") and not skip & set(path.parents) and keep(path):
            yield path


def _keyed_parquet(settings: Settings) -> list[Path]:
    return list(_files(settings, lambda p: p.suffix == ".parquet" and settings.quarantine_dir not in p.parents
                       and "user_key" in pq.read_schema(p).names))


def _quarantine_tables(settings: Settings) -> list[Path]:
    return sorted(settings.quarantine_dir.glob("*/dt=*/*.parquet"))


def _sealed_files(settings: Settings) -> list[Path]:
    return sorted(settings.quarantine_dir.glob(f"*/files/dt=*/*{SEALED_SUFFIX}"))


def _text_files(settings: Settings) -> list[Path]:
    return list(_files(settings, lambda p: p.suffix in TEXT_SUFFIXES))


def _stored_keys(settings: Settings, work: Path) -> set[str]:
    """Every user_key stored before the rotation began (kept in `work`, so that a resumed rotation still
    knows which keys in text files are old ones)."""
    saved = work / "stored_keys.parquet"
    if saved.exists():
        return set(pq.read_table(saved).column(0).to_pylist())
    keys: set[str] = set()
    for path in _keyed_parquet(settings):
        keys.update(pc.unique(pq.read_table(path, columns=["user_key"]).column(0)).drop_null().to_pylist())
    for path in _quarantine_tables(settings):
        for line in pq.read_table(path, columns=["masked_line"]).column(0).drop_null().to_pylist():
            keys.update(match.group(2) for match in _MASKED_KEY.finditer(line))
    tmp = saved.with_name(".stored_keys.tmp")
    pq.write_table(pa.table({"user_key": sorted(keys)}), tmp)
    tmp.replace(saved)
    return keys


# ---- re-keying ----------------------------------------------------------------------------------
def _rekey_files(settings: Settings, link: KeyChain, old: Sealer, new: Sealer, stored: set[str],
                 journal: Journal) -> int:
    changed = 0
    for path in _keyed_parquet(settings):
        changed += journal.rewrite(path, lambda tmp, p=path: _rekey_parquet(p, tmp, link))
    for path in _quarantine_tables(settings):
        changed += journal.rewrite(path, lambda tmp, p=path: _rekey_quarantine(p, tmp, link, old, new))
    for path in _sealed_files(settings):
        changed += journal.rewrite(path, lambda tmp, p=path: _reseal_file(p, tmp, old, new))
    for path in _text_files(settings):
        changed += journal.rewrite(path, lambda tmp, p=path: _rekey_text(p, tmp, link, stored))
    return changed


def _mapping(link: KeyChain, keys: list[str]) -> dict[str, str]:
    return dict(zip(keys, link.user_keys(keys), strict=True))


def _rekey_parquet(path: Path, tmp: Path, link: KeyChain) -> bool:
    table = pq.read_table(path)
    column = table.column("user_key")
    distinct = pc.unique(column).drop_null()
    if not len(distinct):
        return False
    rekeyed = pa.array(link.user_keys(distinct.to_pylist()), column.type)
    index = table.schema.get_field_index("user_key")
    table = table.set_column(index, table.schema.field(index), rekeyed.take(pc.index_in(column, distinct)))
    pq.write_table(table, tmp, compression="zstd")
    return True


def _rekey_quarantine(path: Path, tmp: Path, link: KeyChain, old: Sealer, new: Sealer) -> bool:
    """Masked lines get their user_key re-keyed; sealed lines are re-sealed, bound to the same place."""
    table = pq.read_table(path)
    channel, day = path.parent.parent.name, path.parent.name.removeprefix("dt=")
    masked = table.column("masked_line").to_pylist()
    keys = sorted({m.group(2) for line in masked if line for m in _MASKED_KEY.finditer(line)})
    mapping = _mapping(link, keys) if keys else {}
    masked = [None if line is None else _MASKED_KEY.sub(lambda m: m[1] + mapping[m[2]] + m[3], line)
              for line in masked]
    sealed = [None if blob is None else new.seal(old.unseal(blob, *where), *where)
              for blob, where in zip(table.column("sealed_line").to_pylist(), _places(table, channel, day),
                                     strict=True)]
    if not keys and not any(blob is not None for blob in sealed):
        return False
    table = table.set_column(table.schema.get_field_index("masked_line"), "masked_line",
                             pa.array(masked, pa.string()))
    table = table.set_column(table.schema.get_field_index("sealed_line"), "sealed_line",
                             pa.array(sealed, pa.binary()))
    pq.write_table(table, tmp, compression="zstd")
    return True


def _places(table: pa.Table, channel: str, day: str) -> Iterator[tuple[str, ...]]:
    for source_file, line_no in zip(table.column("source_file").to_pylist(),
                                    table.column("line_no").to_pylist(), strict=True):
        yield line_place(channel, day, source_file, line_no)


def _reseal_file(path: Path, tmp: Path, old: Sealer, new: Sealer) -> bool:
    channel, day = path.parents[2].name, path.parent.name.removeprefix("dt=")
    where = (channel, day, path.name.removesuffix(SEALED_SUFFIX))
    tmp.write_bytes(new.seal(old.unseal(path.read_bytes(), *where), *where))
    return True


def _rekey_text(path: Path, tmp: Path, link: KeyChain, stored: set[str]) -> bool:
    data = path.read_bytes()
    found = sorted({m.decode() for m in re.findall(_KEY, data)} & stored)
    if not found:
        return False
    mapping = {old.encode(): new.encode() for old, new in _mapping(link, found).items()}
    tmp.write_bytes(re.sub(_KEY, lambda m: mapping.get(m.group(0), m.group(0)), data))
    return True


def _rekey_warehouse(settings: Settings, link: KeyChain) -> int:
    """Every table with a user_key, and a marker, in one transaction: all of it is re-keyed, or none."""
    import duckdb

    if not settings.warehouse_path.exists():
        return 0
    with duckdb.connect(str(settings.warehouse_path), config=settings.duckdb_config()) as con:
        if con.execute("select count(*) from information_schema.tables where table_name = $name",
                       {"name": _WAREHOUSE_MARKER}).fetchall()[0][0]:
            return 0  # a resumed rotation: done before the interruption
        tables = con.sql("select c.table_schema, c.table_name from information_schema.columns c "
                         "join information_schema.tables t using (table_catalog, table_schema, table_name) "
                         "where c.column_name = 'user_key' and t.table_type = 'BASE TABLE' "
                         "order by 1, 2").fetchall()
        con.begin()
        for schema, table in tables:
            name = f'"{schema}"."{table}"'
            con.execute(f"update {name} set user_key = {link.sql('user_key')}", link.parameters()).fetchall()
        con.execute(f"create table main.{_WAREHOUSE_MARKER} as select current_timestamp as applied_at")
        con.commit()
    return len(tables)


def _drop_warehouse_marker(settings: Settings) -> None:
    """Drop the marker, then compact the file: the update left every old user_key in its free blocks."""
    import duckdb

    if settings.warehouse_path.exists():
        with duckdb.connect(str(settings.warehouse_path), config=settings.duckdb_config()) as con:
            con.execute(f"drop table if exists main.{_WAREHOUSE_MARKER}")
        compact_warehouse(settings)


def _republish(settings: Settings) -> str | None:
    """Clear the online store (its records are keyed by the old user_keys) and load the day it last
    published again, from the re-keyed snapshots; None when nothing was ever published."""
    from millet.serving.store import has_published, open_store, publish_features, published_day

    if not has_published(settings):
        return None
    store = open_store(settings)
    day = published_day(store, settings)
    if day is None:
        return None
    store.provider.online_store.teardown(store.config, store.list_feature_views(), [])
    publish_features(day, settings)
    return day.isoformat()
