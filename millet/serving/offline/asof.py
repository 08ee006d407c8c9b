"""Feast's DuckDB offline store, with point-in-time joins as narrow DuckDB ASOF joins.

Feast's own DuckDB store builds its point-in-time join in ibis: an inner join of every label row with
every earlier snapshot row of its user, then the latest per row by a window function (2.5× a bare ASOF
join at 1M label rows, bench/bench_training.py). Here an ASOF join on keys and timestamps alone finds,
per entity row, which snapshot row is the latest (file and row number), and a hash join then reads that
row's features; see _ViewJoin. The semantics are Feast's: for each entity row, the feature view's
latest row with `timestamp <= entity timestamp`, and none if that row is older than the view's TTL
(`timestamp + ttl >= entity timestamp`). Rows come back in the entity frame's order.

Everything else (pulls for materialisation, writes, monitoring) is Feast's, and so is retrieval where
this join would not be exact: an entity frame given as SQL, sources other than local Parquet, field
mappings, created-timestamp tie-breaks, on-demand views. Chosen in feature_store.yaml:

    offline_store:
      type: millet.serving.offline.asof.AsofDuckDBOfflineStore
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from feast import FeatureView, FileSource, OnDemandFeatureView
from feast.data_format import ParquetFormat
from feast.infra.offline_stores import offline_utils
from feast.infra.offline_stores.duckdb import DuckDBOfflineStore, DuckDBOfflineStoreConfig
from feast.infra.offline_stores.offline_store import RetrievalJob, RetrievalMetadata
from pydantic import Field

from millet.files import replacing
from millet.serving.definitions import source_files
from millet.settings import declared_duckdb_config

ROW = "__millet_row"  # the entity row's position, to return rows in the entity frame's order
MAX_RUNS = 10_000  # beyond this many ascending runs, sorting the rows beats stitching the runs
LOST = "__millet_lost_"  # per view: a matched row that was not found again


class SnapshotChanged(RuntimeError):
    pass


class AsofDuckDBOfflineStoreConfig(DuckDBOfflineStoreConfig):
    type: str = "millet.serving.offline.asof.AsofDuckDBOfflineStore"
    duckdb: dict = Field(default_factory=declared_duckdb_config)
    """The settings of its DuckDB connections (Settings.duckdb_config)."""


class AsofDuckDBOfflineStore(DuckDBOfflineStore):
    @staticmethod
    def get_historical_features(config, feature_views, feature_refs, entity_df, registry, project,
                                full_feature_names=False, filter_by_created_timestamp=False) -> RetrievalJob:
        if not _asof_exact(feature_views, feature_refs, entity_df, registry, project):
            return DuckDBOfflineStore.get_historical_features(
                config, feature_views, feature_refs, entity_df, registry, project,
                full_feature_names=full_feature_names,
                filter_by_created_timestamp=filter_by_created_timestamp)
        timestamp = offline_utils.infer_event_timestamp_from_entity_df(dict(entity_df.dtypes))
        # nanoseconds, as pandas keeps them; snapshot timestamps are cast up to match (exact either way)
        entities = entity_df.assign(**{timestamp: pd.to_datetime(entity_df[timestamp], utc=True)
                                       .astype("datetime64[ns, UTC]")})
        views = [_ViewJoin(fv, feature_refs, full_feature_names) for fv in feature_views]
        return AsofRetrievalJob(
            entities, timestamp, views, full_feature_names,
            RetrievalMetadata(features=feature_refs, keys=[c for c in entity_df.columns if c != timestamp],
                              min_event_timestamp=entities[timestamp].min(),
                              max_event_timestamp=entities[timestamp].max()),
            config)


def _asof_exact(feature_views, feature_refs, entity_df, registry, project) -> bool:
    """True where an ASOF join gives exactly Feast's rows; elsewhere Feast's own join runs."""
    if not isinstance(entity_df, pd.DataFrame) or ROW in entity_df.columns:
        return False
    if OnDemandFeatureView.get_requested_odfvs(feature_refs, project, registry):
        return False
    return all(_plain_parquet(fv.batch_source) for fv in feature_views)


def _plain_parquet(source) -> bool:
    return (isinstance(source, FileSource) and isinstance(source.file_format, ParquetFormat)
            and "://" not in source.path and not source.field_mapping
            and not source.created_timestamp_column)


class _ViewJoin:
    """One feature view: its files, keys, TTL and the output names of its features.

    Two steps: `match` finds, per entity row, the file and row of the view's latest fresh row (an ASOF
    join on keys and timestamps alone, narrow and cheap to sort into entity order); `fetch` then reads
    the features of exactly that row by a hash join, which keeps the entity order. One wide ASOF join
    would sort every feature column and then sort again into entity order.
    """

    def __init__(self, fv: FeatureView, feature_refs: list[str], full_feature_names: bool):
        prefix = fv.projection.name_to_use()
        self.features = [ref.split(":", 1)[1] for ref in feature_refs if ref.startswith(f"{prefix}:")]
        base = fv.projection.name_alias or fv.name
        self.names = [f"{base}__{f}" if full_feature_names else f for f in self.features]
        self.keys = fv.projection.join_key_map or {e.name: e.name for e in fv.entity_columns}
        path = fv.batch_source.path
        self.files = _literal(source_files(path))
        self.timestamp = _quote(fv.batch_source.timestamp_field)
        self.ttl = fv.ttl

    def match(self, i: int, timestamp: str) -> tuple[list[str], str]:
        """Select items naming the matched row (__file_i, __row_i; no file when none is fresh) and the
        ASOF join clause, the entity table being `e`."""
        ts, f = self.timestamp, f"f{i}"
        columns = [*(_quote(k) for k in self.keys), f"cast({ts} as timestamptz_ns) as __ts",
                   "filename as __file", "file_row_number as __row"]
        file = f"{f}.__file"
        if self.ttl:
            microseconds = int(self.ttl.total_seconds() * 1e6)
            columns.append(f"cast({ts} + to_microseconds({microseconds}) as timestamptz_ns) as __until")
            file = f"case when {f}.__until >= e.{timestamp} then {f}.__file end"
        on = [f"e.{_quote(entity)} = {f}.{_quote(key)}" for key, entity in self.keys.items()]
        join = (f"asof left join (select {', '.join(columns)} from read_parquet({self.files}, "
                f"hive_partitioning = false)) {f} on {' and '.join(on)} and e.{timestamp} >= {f}.__ts")
        return [f"{file} as __file_{i}", f"{f}.__row as __row_{i}"], join

    def fetch(self, i: int) -> tuple[list[str], str]:
        """Select items for the features and the join clause reading them, the matches being `m`.
        Only matched rows reach the join's hash table (a semi join with the matches first): a training
        set over months of daily snapshots would otherwise hold every snapshot row's features."""
        f = f"f{i}"
        keys = {_quote(key): _quote(entity) for key, entity in self.keys.items()}
        columns = ", ".join(["filename as __file", "file_row_number as __row", *keys,
                             *map(_quote, self.features)])
        wanted = (f"(select distinct __file_{i} as __file, __row_{i} as __row from matched "
                  f"where __file_{i} is not null)")
        rows = (f"select {columns} from read_parquet({self.files}, hive_partitioning = false) "
                f"semi join {wanted} w on filename = w.__file and file_row_number = w.__row")
        # The row is found again by its place, and must still be the entity's: a file rewritten between the
        # two reads (an erasure drops rows) moves the rows after it.
        same = "".join(f" and {f}.{key} = m.{entity}" for key, entity in keys.items())
        join = f"left join ({rows}) {f} on {f}.__file = m.__file_{i} and {f}.__row = m.__row_{i}{same}"
        items = [f"{f}.{_quote(c)} as {_quote(n)}" for c, n in zip(self.features, self.names, strict=True)]
        return [*items, f"m.__file_{i} is not null and {f}.__file is null as {LOST}{i}"], join


class AsofRetrievalJob(RetrievalJob):
    def __init__(self, entities: pd.DataFrame, timestamp: str, views: list[_ViewJoin],
                 full_feature_names: bool, metadata: RetrievalMetadata, config):
        self._entities, self._timestamp, self._views = entities, _quote(timestamp), views
        self._full_feature_names, self._metadata, self._config = full_feature_names, metadata, config

    def match_sql(self) -> str:
        select, joins = ["e.*"], []
        for i, view in enumerate(self._views):
            items, join = view.match(i, self._timestamp)
            select += items
            joins.append(join)
        return f"select {', '.join(select)} from entities e {' '.join(joins)} order by e.{ROW}"

    def fetch_sql(self) -> str:
        matches = [f"__{part}_{i}" for i in range(len(self._views)) for part in ("file", "row")]
        select, joins = [f"m.* exclude ({', '.join(matches)})"], []
        for i, view in enumerate(self._views):
            items, join = view.fetch(i)
            select += items
            joins.append(join)
        return f"select {', '.join(select)} from matched m {' '.join(joins)}"

    def _to_arrow_internal(self, timeout: int | None = None) -> pa.Table:
        import duckdb

        with duckdb.connect(config=self.duckdb_config()) as con:
            con.execute("set TimeZone = 'UTC'")
            con.register("entities", pa.Table.from_pandas(
                self._entities.assign(**{ROW: range(len(self._entities))}), preserve_index=False))
            con.execute(f"create temp table matched as {self.match_sql()}")
            table = con.sql(self.fetch_sql()).to_arrow_table()
        lost = [name for name in table.column_names if name.startswith(LOST)]
        if any(pc.any(table[name]).as_py() for name in lost):
            raise SnapshotChanged("a snapshot file changed while the training set was read (an erasure or "
                                  "a re-run of a night rewrote it): read it again")
        return in_row_order(table.drop_columns(lost), ROW).drop_columns(ROW)

    def duckdb_config(self) -> dict:
        """The store's DuckDB settings, and one more optimizer off: the matches stay the probe side of the
        fetch joins, so their order survives in long runs, and each fetch's semi join keeps the matches
        as its hash table (else DuckDB may build it from the snapshot scan, every row's features, which
        is what the semi join is there to avoid)."""
        config = self._config.offline_store.duckdb
        disabled = [name for name in config.get("disabled_optimizers", "").split(",") if name.strip()]
        return {**config, "disabled_optimizers": ",".join([*disabled, "build_side_probe_side"])}

    def _to_df_internal(self, timeout: int | None = None) -> pd.DataFrame:
        return self._to_arrow_internal(timeout).to_pandas()

    @property
    def full_feature_names(self) -> bool:
        return self._full_feature_names

    @property
    def on_demand_feature_views(self) -> list[OnDemandFeatureView]:
        return []

    @property
    def metadata(self) -> RetrievalMetadata:
        return self._metadata

    def persist(self, storage, allow_overwrite: bool = False, timeout: int | None = None):
        """A saved dataset: one Parquet file at the storage's path (a file storage, as Feast's DuckDB
        store supports)."""
        from feast.errors import SavedDatasetLocationAlreadyExists

        path = Path(storage.to_data_source().path)
        if not path.is_absolute():
            path = Path(self._config.repo_path) / path
        if path.exists() and not allow_overwrite:
            raise SavedDatasetLocationAlreadyExists(location=str(path))
        with replacing(path) as copy:
            pq.write_table(self.to_arrow(), copy)


def in_row_order(table: pa.Table, column: str) -> pa.Table:
    """`table` sorted by `column`, a permutation of 0..n-1 that arrives in a few ascending runs (one per
    batch of the probe side): the runs are put in order without copying, or else the rows are sorted."""
    rows = table[column].to_numpy()
    if len(rows) == 0:
        return table
    starts = np.append(0, np.flatnonzero(np.diff(rows) != 1) + 1)
    if len(starts) > MAX_RUNS:
        return table.take(np.argsort(rows))
    ends = np.append(starts[1:], len(rows))
    return pa.concat_tables([table.slice(starts[k], ends[k] - starts[k]) for k in np.argsort(rows[starts])])


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
