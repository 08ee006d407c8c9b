"""Millet's offline store (ASOF joins) against Feast's own DuckDB offline store, on the same files.

Feast's join is the reference: both stores answer the same `get_historical_features` call, and every
value must agree, at the edges that matter (a label one microsecond before a snapshot, exactly on it,
exactly at the TTL's end and one microsecond past it, a user with no snapshot, nulls in the data).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from feast import Entity, FeatureService, FeatureStore, FeatureView, Field, FileSource, RepoConfig, ValueType
from feast.data_format import ParquetFormat
from feast.infra.offline_stores.ibis import IbisRetrievalJob
from feast.types import Float32, Int32

from millet.serving.offline.asof import MAX_RUNS, AsofRetrievalJob, SnapshotChanged, in_row_order
from millet.serving.offline.training import in_label_order
from millet.serving.store import OFFLINE_STORE

TTL = timedelta(days=2)
DAY1, DAY2 = datetime(2026, 1, 2, tzinfo=UTC), datetime(2026, 1, 3, tzinfo=UTC)
US = timedelta(microseconds=1)


def _snapshots(root):
    """Two views; `both` has a snapshot on each day, `first` only on DAY1; `absent` has none."""
    rows = {
        "alpha": [("both", DAY1, 1, 0.5), ("first", DAY1, 2, None), ("both", DAY2, 3, None)],
        "beta": [("both", DAY1, 10, 1.5), ("both", DAY2, 11, 2.5), ("first", DAY1, None, 4.0)],
    }
    for view, data in rows.items():
        for day in (DAY1, DAY2):
            part = [r for r in data if r[1] == day]
            folder = root / view / f"dt={day.date()}"
            folder.mkdir(parents=True)
            pq.write_table(pa.table({
                "user_key": pa.array([r[0] for r in part], pa.string()),
                "event_timestamp": pa.array([r[1] for r in part], pa.timestamp("us", "UTC")),
                "created_at": pa.array([r[1] for r in part], pa.timestamp("us", "UTC")),
                f"{view}_n": pa.array([r[2] for r in part], pa.int32()),
                f"{view}_x": pa.array([r[3] for r in part], pa.float32()),
            }), folder / "part-0.parquet")


def _objects(root, created: bool = False, online: bool = False):
    user = Entity(name="user", join_keys=["user_key"], value_type=ValueType.STRING)
    views = [FeatureView(
        name=view, entities=[user], ttl=TTL, online=online,
        schema=[Field(name=f"{view}_n", dtype=Int32), Field(name=f"{view}_x", dtype=Float32)],
        source=FileSource(name=view, path=str(root / view), file_format=ParquetFormat(),
                          timestamp_field="event_timestamp",
                          created_timestamp_column="created_at" if created else ""),
    ) for view in ("alpha", "beta")]
    return [user, *views, FeatureService(name="both_views", features=views)]


def _store(tmp_path, name: str, offline_store: str, objects, online=None,
           batch_engine="local") -> FeatureStore:
    work = tmp_path / name
    work.mkdir()
    store = FeatureStore(config=RepoConfig(
        project="offline_test", provider="local", registry=str(work / "registry.db"),
        online_store=online or {"type": "sqlite", "path": str(work / "online.db")}, batch_engine=batch_engine,
        offline_store={"type": offline_store}, entity_key_serialization_version=3, repo_path=str(work)))
    store.apply(objects)
    return store


def _labels() -> pd.DataFrame:
    instants = [DAY1 - US, DAY1, DAY1 + timedelta(hours=7), DAY2 - US, DAY2, DAY1 + TTL, DAY1 + TTL + US,
                DAY2 + TTL, DAY2 + TTL + US]
    users = ["both", "first", "absent"]
    rows = [(u, t) for u in users for t in instants] * 2  # each row twice: duplicates keep both rows
    rng = np.random.default_rng(1)
    rows = [rows[i] for i in rng.permutation(len(rows))]
    return pd.DataFrame({"user_key": [u for u, _ in rows], "event_timestamp": [t for _, t in rows],
                         "label": range(len(rows)), "_label_row": range(len(rows))})


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("offline")
    _snapshots(tmp_path / "snapshots")
    objects = _objects(tmp_path / "snapshots")
    return {"feast": _store(tmp_path, "feast", "duckdb", objects),
            "millet": _store(tmp_path, "millet", OFFLINE_STORE, objects)}


@pytest.mark.parametrize("full_feature_names", [False, True])
def test_asof_joins_give_feasts_point_in_time_rows(stores, full_feature_names):
    """Mutations caught: the TTL's end made exclusive (`>` for `>=`), the snapshot's own instant made
    exclusive, the TTL dropped, the matched row's file or row number not joined on, rows not put back
    in the entity frame's order."""
    frames = {}
    for name, store in stores.items():
        job = store.get_historical_features(entity_df=_labels(), features=store.get_feature_service(
            "both_views"), full_feature_names=full_feature_names)
        assert isinstance(job, AsofRetrievalJob if name == "millet" else IbisRetrievalJob)
        table = job.to_arrow()
        if name == "millet":  # Millet's store returns the entity frame's order itself
            assert table["_label_row"].to_pylist() == list(range(table.num_rows))
        frames[name] = in_label_order(table).to_pandas()
    millet, feast = frames["millet"], frames["feast"]
    assert list(millet.columns) == list(feast.columns)
    features = [c for c in millet.columns if c.endswith(("_n", "_x"))]
    assert len(features) == 4 and all(c.startswith(("alpha__", "beta__")) == full_feature_names
                                      for c in features)
    assert list(millet["label"]) == list(range(len(millet)))
    for column in features:
        assert millet[column].isna().tolist() == feast[column].isna().tolist(), column
        assert millet[column].dropna().tolist() == feast[column].dropna().tolist(), column
    # the reference itself is not trivial: some rows found a snapshot, some did not
    assert 0 < feast[features[0]].notna().sum() < len(feast)
    edge = millet[(millet["user_key"] == "both") & (millet["event_timestamp"] == DAY2 + TTL)]
    assert edge[features[0]].tolist() == [3, 3]  # the TTL's last instant still sees DAY2's snapshot


@pytest.mark.parametrize("runs", [1, 7, MAX_RUNS + 1])
def test_rows_arriving_in_runs_are_put_in_order(runs):
    """Mutation caught: runs stitched by their position in the table instead of by their first row."""
    n = 50_000
    cuts = np.sort(np.random.default_rng(runs).choice(np.arange(1, n), runs - 1, replace=False))
    pieces = np.split(np.arange(n), cuts)
    shuffled = np.concatenate([pieces[k] for k in np.random.default_rng(2).permutation(runs)])
    table = pa.table({"row": shuffled, "value": shuffled * 3})
    ordered = in_row_order(table, "row")
    assert ordered["row"].to_pylist() == list(range(n))
    assert ordered["value"].to_pylist() == [3 * r for r in range(n)]


def test_created_timestamp_tie_breaks_are_left_to_feasts_join(tmp_path):
    """Mutation caught: the ASOF join taken for a source with a created timestamp (ties it cannot
    break as Feast does)."""
    _snapshots(tmp_path / "snapshots")
    store = _store(tmp_path, "millet", OFFLINE_STORE, _objects(tmp_path / "snapshots", created=True))
    job = store.get_historical_features(entity_df=_labels(), features=store.get_feature_service("both_views"))
    assert isinstance(job, IbisRetrievalJob)


def test_a_snapshot_rewritten_between_the_match_and_the_fetch_is_refused_not_misread(tmp_path, monkeypatch):
    """An erasure rewrites a day's file without a row while a training set is read: the rows after it move
    up, and the fetch, which finds a matched row again by its place, would read the next user's features.
    Mutation that fails it: the fetch joined on file and row number alone (`both`'s labels get `first`'s
    DAY1 values, `first`'s get `zeta`'s)."""
    _snapshots(tmp_path / "snapshots")
    store = _store(tmp_path, "millet", OFFLINE_STORE, _objects(tmp_path / "snapshots"))
    day1 = tmp_path / "snapshots" / "alpha" / f"dt={DAY1.date()}" / "part-0.parquet"
    fetch_sql = AsofRetrievalJob.fetch_sql

    def erase_then_fetch(job):  # `both` erased, and a user after `first` (as long a file: no row is gone)
        table = pq.read_table(day1)
        kept = table.filter(pa.compute.not_equal(table["user_key"], "both"))
        later = kept.set_column(0, "user_key", pa.array(["zeta"] * kept.num_rows, pa.string()))
        pq.write_table(pa.concat_tables([kept, later]), day1)
        return fetch_sql(job)

    monkeypatch.setattr(AsofRetrievalJob, "fetch_sql", erase_then_fetch)
    job = store.get_historical_features(entity_df=_labels(), features=store.get_feature_service("both_views"))
    with pytest.raises(SnapshotChanged, match="changed while the training set was read"):
        job.to_arrow()


def _leave_a_killed_copy(root) -> None:
    """What DuckDB's COPY leaves beside a snapshot when the build writing it is killed (dbt_project.yml's
    use_tmp_file): `tmp_part-0.parquet`, cut short, so not readable Parquet."""
    for view in ("alpha", "beta"):
        folder = root / view / f"dt={DAY2.date()}"
        whole = (folder / "part-0.parquet").read_bytes()
        (folder / "tmp_part-0.parquet").write_bytes(whole[: len(whole) // 2])


def test_a_copy_left_by_a_killed_build_is_read_neither_for_training_nor_for_serving(tmp_path):
    """Mutation that fails it: either reader globbing every *.parquet under the source (DuckDB refuses the
    cut-short copy: 'No magic bytes')."""
    _snapshots(tmp_path / "snapshots")
    objects = _objects(tmp_path / "snapshots", online=True)
    expected = _store(tmp_path, "before", OFFLINE_STORE, objects).get_historical_features(
        entity_df=_labels(), features=[f"{view}:{view}_n" for view in ("alpha", "beta")]).to_arrow()
    _leave_a_killed_copy(tmp_path / "snapshots")

    store = _store(tmp_path, "after", OFFLINE_STORE, objects)
    training = store.get_historical_features(entity_df=_labels(),
                                             features=[f"{view}:{view}_n" for view in ("alpha", "beta")])
    assert training.to_arrow().equals(expected)

    served = _store(tmp_path, "served", OFFLINE_STORE, objects, online={
        "type": "millet.serving.online.stores.PackedSqliteOnlineStore", "path": str(tmp_path / "packed.db")},
        batch_engine={"type": "millet.serving.online.engine.SnapshotMaterializationEngine"})
    served.materialize(DAY1 - US, DAY2 + US)
    online = served.get_online_features(features=["alpha:alpha_n", "beta:beta_n"],
                                        entity_rows=[{"user_key": "both"}, {"user_key": "first"}]).to_dict()
    assert (online["alpha_n"], online["beta_n"]) == ([3, 2], [11, None])  # both's DAY2 row, first's DAY1
