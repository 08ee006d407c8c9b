"""Millet's batch materialization engine: a dbt snapshot into a packed online store, a batch at a time.

Feast's local engine turns every value into a Python protobuf and every row into a dict before the online
store sees it. This engine reads the feature view's snapshot rows with DuckDB, packs each batch's rows
into serialized Feast Values with numpy (millet.serving.online.rowcodec) and hands the records to the store in
one bulk write. Named in feature_store.yaml as `batch_engine`; `FeatureStore.materialize` drives it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc
from feast import Entity, FeatureView
from feast.infra.common.materialization_job import MaterializationJobStatus, MaterializationTask
from feast.infra.compute_engines.base import ComputeEngine
from feast.infra.compute_engines.local.job import LocalMaterializationJob
from feast.repo_config import FeastConfigBaseModel
from pydantic import Field

from millet.serving.definitions import source_files
from millet.serving.online.rowcodec import pack_columns
from millet.serving.online.stores import (
    PackedOnlineStore,
    layout_digest,
    layout_of,
    record,
    string_entity_keys,
)
from millet.settings import declared_duckdb_config
from millet.sqltext import ident, literal


class SnapshotMaterializationEngineConfig(FeastConfigBaseModel):
    type: Literal["millet.serving.online.engine.SnapshotMaterializationEngine"] = (
        "millet.serving.online.engine.SnapshotMaterializationEngine"
    )
    batch_rows: int = 20_000
    """Rows packed and written at a time: memory is about batch_rows × features × 7 bytes, twice."""
    duckdb: dict = Field(default_factory=declared_duckdb_config)
    """The settings of its DuckDB connection (Settings.duckdb_config)."""


class SnapshotMaterializationEngine(ComputeEngine):
    def __init__(self, *, batch_rows: int = 20_000, duckdb: dict | None = None, **kwargs):
        kwargs.pop("type", None)
        super().__init__(**kwargs)
        self.batch_rows = batch_rows
        self.duckdb_config = duckdb or declared_duckdb_config()

    def update(self, project: str, views_to_delete: Sequence[FeatureView],
               views_to_keep: Sequence[FeatureView],
               entities_to_delete: Sequence[Entity], entities_to_keep: Sequence[Entity]):
        pass  # nothing of its own to set up: the online store owns its tables

    def teardown_infra(self, project: str, fvs: Sequence[FeatureView], entities: Sequence[Entity]):
        pass

    def _materialize_one(self, registry, task: MaterializationTask, **kwargs) -> LocalMaterializationJob:
        job_id = f"{task.feature_view.name}-{task.start_time}-{task.end_time}"
        try:
            self.materialize_view(task.feature_view, task.start_time, task.end_time)
        except Exception as exc:  # Feast re-raises a failed job's error to the caller
            return LocalMaterializationJob(job_id, MaterializationJobStatus.ERROR, exc)
        # No progress bar (task.tqdm_builder): a view's day takes seconds, and a bar ticked once the work is
        # done reports a rate of millions of rows a second that nothing achieved.
        return LocalMaterializationJob(job_id, MaterializationJobStatus.SUCCEEDED)

    def materialize_view(self, view: FeatureView, start: datetime, end: datetime) -> int:
        """Write each entity's latest row stamped in [start, end) to the online store; return the rows."""
        store = self.online_store
        if not isinstance(store, PackedOnlineStore):
            raise TypeError(f"{type(self).__name__} writes to Millet's packed online stores, "
                            f"not {type(store).__name__}; see features/feature_store.yaml")
        layout, join_key = layout_of(view), _single_join_key(view)
        digest, stamp = layout_digest(layout), view.batch_source.timestamp_field

        def encoded(batch: pa.RecordBatch) -> tuple[list[bytes], list[bytes]]:
            keys = string_entity_keys(batch.column(join_key).to_pylist(), join_key, self.repo_config)
            return keys, _records(batch, layout, digest, stamp)

        # Two stages in step: the next batch is read and packed while the store writes this one.
        written, pending = 0, None
        with ThreadPoolExecutor(max_workers=1) as packer:
            rows = _latest_rows(view, join_key, layout, start, end, self.batch_rows, self.duckdb_config)
            for batch in rows:
                ready, pending = pending, packer.submit(encoded, batch)
                written += batch.num_rows
                if ready is not None:
                    store.write_records(self.repo_config, view, layout, *ready.result())
            if pending is not None:
                store.write_records(self.repo_config, view, layout, *pending.result())
        return written


def _single_join_key(view: FeatureView) -> str:
    keys = [column.name for column in view.entity_columns]
    if len(keys) != 1:
        raise ValueError(f"feature view {view.name} has join keys {keys}; this engine handles exactly one")
    return keys[0]


def _latest_rows(view: FeatureView, join_key: str, layout, start: datetime, end: datetime,
                 batch_rows: int, duckdb_config: dict) -> Iterator[pa.RecordBatch]:
    import duckdb

    source = view.batch_source
    stamp = source.timestamp_field
    columns = ", ".join(ident(c) for c in (join_key, stamp, *layout))
    # A snapshot for as-of day D is stamped at the midnight closing D and lives in partition dt=D, so
    # only partitions dt in [start - 1 day, end] can hold rows stamped in [start, end).
    sql = f"""
        select {columns}
        from read_parquet({literal(source_files(source.path))}, hive_partitioning = true)
        where dt between {literal(_day(start - timedelta(days=1)))} and {literal(_day(end))}
          and {ident(stamp)} >= {literal(_utc(start))} and {ident(stamp)} < {literal(_utc(end))}
        qualify row_number() over (partition by {ident(join_key)} order by {ident(stamp)} desc) = 1
    """
    with duckdb.connect(config=duckdb_config) as con:
        con.execute("set TimeZone = 'UTC'")
        yield from con.sql(sql).to_arrow_reader(batch_rows)


def _day(stamp: datetime) -> str:
    return stamp.astimezone(UTC).date().isoformat() if stamp.tzinfo else stamp.date().isoformat()


def _utc(stamp: datetime) -> str:
    stamp = stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)
    return stamp.astimezone(UTC).isoformat()


def _records(batch: pa.RecordBatch, layout, digest: bytes, stamp: str) -> list[bytes]:
    rows = pack_columns([batch.column(name) for name in layout])
    micros = pc.cast(batch.column(stamp), pa.timestamp("us", "UTC")).cast(pa.int64()).to_pylist()
    return [record(digest, ts, row) for ts, row in zip(micros, rows.to_pylist(), strict=True)]
