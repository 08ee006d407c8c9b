"""Millet's online stores: one record per (feature view, entity), holding the row's Feast Values packed.

Feast's own SQLite store keeps one row per feature per entity, and its Redis store one hash field per
feature, so a snapshot of 1,251 features × 50,000 users is 62 million writes, each built from a
Python protobuf. Here a feature view's row is a single record, written for a whole batch at once by
`millet.serving.online.engine` and read back with one protobuf parse. Both stores are ordinary Feast online
stores named in feature_store.yaml: `FeatureStore.get_online_features` reads them as it reads any
other, and Feast's own per-row `online_write_batch` path works too.

Record: layout digest (8 bytes) + event timestamp (µs since the epoch, int64 little-endian) + the packed
row (millet.serving.online.rowcodec). The layout, the feature names in packed order, is stored once per
digest, so a feature view whose schema changes never has old rows read with new names.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import struct
import threading
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from feast import Entity, FeatureView, RepoConfig
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.online_store import OnlineStore
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.repo_config import FeastConfigBaseModel
from pydantic import StrictStr

from millet.serving.online.rowcodec import pack_values, unpack_row

HEADER = struct.Struct("<8sq")
_LENGTH = struct.Struct("<I")
Layout = tuple[str, ...]
Record = bytes


def layout_of(table: FeatureView) -> Layout:
    return tuple(feature.name for feature in table.features)


def layout_digest(layout: Layout) -> bytes:
    return hashlib.sha256("\n".join(layout).encode()).digest()[:8]


def record(digest: bytes, event_ts: datetime | int, row: bytes) -> Record:
    return HEADER.pack(digest, event_ts if isinstance(event_ts, int) else _micros(event_ts)) + row


def _micros(stamp: datetime) -> int:
    stamp = stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)  # Feast: naive means UTC
    return round(stamp.timestamp() * 1_000_000)


def decode_record(rec: Record) -> tuple[bytes, datetime, Sequence]:
    """(layout digest, event timestamp, the row's Values)."""
    digest, micros = HEADER.unpack_from(rec)
    return digest, datetime.fromtimestamp(micros / 1_000_000, UTC), unpack_row(rec[HEADER.size:])


def entity_key_bytes(key: EntityKeyProto, config: RepoConfig) -> bytes:
    return serialize_entity_key(key, entity_key_serialization_version=config.entity_key_serialization_version)


def string_entity_keys(values: Sequence[str], join_key: str, config: RepoConfig) -> list[bytes]:
    """Feast's serialized keys for many string ids at once: a fixed prefix, the id's length, the id.
    The layout is checked against Feast's own serializer on the first id."""
    def feast_key(value: str) -> bytes:
        return entity_key_bytes(
            EntityKeyProto(join_keys=[join_key], entity_values=[ValueProto(string_val=value)]), config)

    prefix = feast_key("")[:-4]  # the empty id's 4-byte length is the last thing serialized
    encoded = [v.encode() for v in values]
    keys = [prefix + _LENGTH.pack(len(v)) + v for v in encoded]
    if keys and keys[0] != feast_key(values[0]):
        raise RuntimeError("Feast's entity key serialization changed; string_entity_keys needs updating")
    return keys


class PackedOnlineStore(OnlineStore):
    """What both backends share: layouts, packing, and Feast's read and write interface."""

    def write_records(self, config: RepoConfig, table: FeatureView, layout: Layout,
                      keys: Sequence[bytes], records: Iterable[Record]) -> None:
        """The bulk path: serialized entity keys and their records, built elsewhere for a whole batch."""
        self._save_layout(config, layout_digest(layout), layout)
        self._put(config, table, zip(keys, records, strict=True))

    def online_write_batch(self, config: RepoConfig, table: FeatureView, data, progress: Callable | None):
        layout = layout_of(table)
        digest, empty = layout_digest(layout), ValueProto()
        self._save_layout(config, digest, layout)
        self._put(config, table, (
            (entity_key_bytes(key, config),
             record(digest, event_ts, pack_values([values.get(name, empty) for name in layout])))
            for key, values, event_ts, _created in data
        ))
        if progress:
            progress(len(data))

    def online_read(self, config: RepoConfig, table: FeatureView, entity_keys: list[EntityKeyProto],
                    requested_features: list[str] | None = None):
        keys = [entity_key_bytes(key, config) for key in entity_keys]
        found = self._get(config, table, keys)
        return [self._decode(config, found.get(key), requested_features) for key in keys]

    def delete_records(self, config: RepoConfig, table: FeatureView, keys: list[bytes]) -> None:
        """Remove these entities' records of `table` (an erasure); keys as `string_entity_keys` gives them."""
        if keys:
            self._delete(config, table, keys)

    def read_records(self, config: RepoConfig, table: FeatureView, keys: list[bytes]) -> dict[bytes, Record]:
        """The records found for these serialized entity keys (for readers that skip the Value dicts)."""
        return self._get(config, table, keys)

    def positions(self, config: RepoConfig, digest: bytes, requested: tuple[str, ...] | None):
        """(feature, index in the packed row) for the requested features the layout holds, in order."""
        return _positions(self._layout(config, digest), requested)

    def _decode(self, config: RepoConfig, rec: Record | None, requested: list[str] | None):
        if rec is None:
            return None, None
        digest, stamp, values = decode_record(rec)
        positions = self.positions(config, digest, None if requested is None else tuple(requested))
        return stamp, {name: values[i] for name, i in positions}

    def _layout(self, config: RepoConfig, digest: bytes) -> Layout:
        cache = self.__dict__.setdefault("_layouts", {})
        if digest not in cache:
            cache[digest] = self._load_layout(config, digest)
        return cache[digest]

    def plan(self, config: RepoConfig, desired_registry_proto) -> list:
        return []

    # ---- what a backend provides ----------------------------------------------------------------
    def _put(self, config: RepoConfig, table: FeatureView, items: Iterable[tuple[bytes, Record]]) -> None:
        raise NotImplementedError

    def _get(self, config: RepoConfig, table: FeatureView, keys: list[bytes]) -> dict[bytes, Record]:
        raise NotImplementedError

    def _delete(self, config: RepoConfig, table: FeatureView, keys: list[bytes]) -> None:
        raise NotImplementedError

    def _save_layout(self, config: RepoConfig, digest: bytes, layout: Layout) -> None:
        raise NotImplementedError

    def _load_layout(self, config: RepoConfig, digest: bytes) -> Layout:
        raise NotImplementedError


@lru_cache(maxsize=256)
def _positions(layout: Layout, requested: tuple[str, ...] | None) -> tuple[tuple[str, int], ...]:
    index = {name: i for i, name in enumerate(layout)}
    names = layout if requested is None else [name for name in requested if name in index]
    return tuple((name, index[name]) for name in names)


# ---- SQLite: the embedded default -------------------------------------------------------------------
class PackedSqliteOnlineStoreConfig(FeastConfigBaseModel):
    type: Literal["millet.serving.online.stores.PackedSqliteOnlineStore"] = (
        "millet.serving.online.stores.PackedSqliteOnlineStore"
    )
    path: StrictStr = "online.db"


class PackedSqliteOnlineStore(PackedOnlineStore):
    _LAYOUTS = "millet_layouts"

    def _conn(self, config: RepoConfig) -> sqlite3.Connection:
        # One connection per thread: the feature server answers from a thread pool.
        local = self.__dict__.setdefault("_local", threading.local())
        if getattr(local, "conn", None) is None:
            path = Path(config.online_store.path)
            if not path.is_absolute():
                path = Path(config.repo_path or ".") / path
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(path, timeout=60, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(f"CREATE TABLE IF NOT EXISTS {self._LAYOUTS} "
                         "(digest BLOB PRIMARY KEY, features TEXT NOT NULL) WITHOUT ROWID")
            local.conn = conn
        return local.conn

    def _put(self, config, table, items):
        conn = self._conn(config)
        with _transaction(conn):
            conn.executemany(f"INSERT OR REPLACE INTO {_table(config, table)} VALUES (?, ?)", items)

    def _delete(self, config, table, keys):
        conn = self._conn(config)
        # An erasure: SQLite overwrites the freed bytes (Debian's build does by default, others may not),
        # and the write-ahead log goes with its old pages.
        (before,) = conn.execute("PRAGMA secure_delete").fetchone()
        conn.execute("PRAGMA secure_delete=ON")
        try:
            with _transaction(conn):
                conn.executemany(f"DELETE FROM {_table(config, table)} WHERE entity_key = ?",
                                 [(key,) for key in keys])
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.execute(f"PRAGMA secure_delete={int(before)}")

    def _get(self, config, table, keys):
        marks = ",".join("?" * len(keys))
        rows = self._conn(config).execute(
            f"SELECT entity_key, record FROM {_table(config, table)} WHERE entity_key IN ({marks})", keys)
        return dict(rows)

    def _save_layout(self, config, digest, layout):
        conn = self._conn(config)
        conn.execute(f"INSERT OR IGNORE INTO {self._LAYOUTS} VALUES (?, ?)", (digest, json.dumps(layout)))

    def _load_layout(self, config, digest):
        row = self._conn(config).execute(
            f"SELECT features FROM {self._LAYOUTS} WHERE digest = ?", (digest,)).fetchone()
        return tuple(json.loads(row[0]))

    def update(self, config: RepoConfig, tables_to_delete: Sequence[FeatureView],
               tables_to_keep: Sequence[FeatureView], entities_to_delete: Sequence[Entity],
               entities_to_keep: Sequence[Entity], partial: bool):
        conn = self._conn(config)
        for table in tables_to_keep:
            # A rowid table: records are kilobytes, and SQLite keeps large rows out of a WITHOUT ROWID
            # table's key b-tree poorly (bulk writes measured 1.6-2x slower).
            conn.execute(f"CREATE TABLE IF NOT EXISTS {_table(config, table)} "
                         "(entity_key BLOB PRIMARY KEY, record BLOB NOT NULL)")
        for table in tables_to_delete:
            conn.execute(f"DROP TABLE IF EXISTS {_table(config, table)}")

    def teardown(self, config: RepoConfig, tables: Sequence[FeatureView], entities: Sequence[Entity]):
        self.update(config, tables, [], entities, [], partial=False)


def _table(config: RepoConfig, table: FeatureView) -> str:
    return '"' + f"{config.project}_{table.name}".replace('"', '""') + '"'


class _transaction:
    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def __enter__(self):
        self.conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind, *_):
        self.conn.execute("ROLLBACK" if kind else "COMMIT")


# ---- Redis: the service path ------------------------------------------------------------------------
class PackedRedisOnlineStoreConfig(FeastConfigBaseModel):
    type: Literal["millet.serving.online.stores.PackedRedisOnlineStore"] = (
        "millet.serving.online.stores.PackedRedisOnlineStore"
    )
    connection_string: StrictStr  # no default of its own: Millet sets MILLET_REDIS_URL's (store.feast_config)
    key_prefix: StrictStr = "millet"


REDIS_TIMEOUT_S = 30.0  # per command: a batch of a thousand records takes milliseconds


class PackedRedisOnlineStore(PackedOnlineStore):
    """A string key per (feature view, entity): written a thousand at a time with MSET, read with MGET.
    (Feast's own Redis store keeps a hash per entity with a field per feature: one command per entity.)"""

    CHUNK = 1_000

    def _client(self, config: RepoConfig):
        if self.__dict__.get("_redis") is None:
            from feast.infra.online_stores.redis import RedisOnlineStore
            from redis import Redis

            nodes, kwargs = RedisOnlineStore._parse_connection_string(config.online_store.connection_string)
            # A Redis that accepts and never answers must fail the publish or the read, not hang it.
            kwargs = {"socket_connect_timeout": REDIS_TIMEOUT_S, "socket_timeout": REDIS_TIMEOUT_S, **kwargs}
            self._redis = Redis(host=nodes[0]["host"], port=int(nodes[0]["port"]), **kwargs)
        return self._redis

    def _namespace(self, config: RepoConfig) -> str:
        return f"{config.online_store.key_prefix}:{config.project}:"

    def _view_prefix(self, config: RepoConfig, table: FeatureView) -> bytes:
        return f"{self._namespace(config)}{table.name}:".encode()

    def _put(self, config, table, items):
        client, prefix = self._client(config), self._view_prefix(config, table)
        for chunk in _chunks(items, self.CHUNK):
            client.mset({prefix + key: rec for key, rec in chunk})

    def _delete(self, config, table, keys):
        client, prefix = self._client(config), self._view_prefix(config, table)
        for chunk in _chunks(keys, self.CHUNK):
            client.unlink(*(prefix + key for key in chunk))

    def _get(self, config, table, keys):
        prefix = self._view_prefix(config, table)
        found = self._client(config).mget([prefix + key for key in keys])
        return {key: rec for key, rec in zip(keys, found, strict=True) if rec is not None}

    def _layouts_key(self, config: RepoConfig) -> str:
        return self._namespace(config) + "layouts"

    def _save_layout(self, config, digest, layout):
        self._client(config).hsetnx(self._layouts_key(config), digest, json.dumps(layout))

    def _load_layout(self, config, digest):
        return tuple(json.loads(self._client(config).hget(self._layouts_key(config), digest)))

    def update(self, config: RepoConfig, tables_to_delete: Sequence[FeatureView],
               tables_to_keep: Sequence[FeatureView], entities_to_delete: Sequence[Entity],
               entities_to_keep: Sequence[Entity], partial: bool):
        for table in tables_to_delete:
            self._unlink(config, self._view_prefix(config, table).decode() + "*")

    def teardown(self, config: RepoConfig, tables: Sequence[FeatureView], entities: Sequence[Entity]):
        self._unlink(config, self._namespace(config) + "*")

    def _unlink(self, config: RepoConfig, pattern: str) -> None:
        client = self._client(config)
        for keys in _chunks(client.scan_iter(match=pattern, count=10_000), self.CHUNK):
            client.unlink(*keys)


def _chunks(items: Iterable[Any], size: int):
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
