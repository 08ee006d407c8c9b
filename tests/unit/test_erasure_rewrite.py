"""An erasure rewrites a Parquet file without a person's rows one row group at a time: every other row, the
schema and the row groups kept; a file left with no rows still readable; nothing left behind on failure."""

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from millet.privacy.zones import drop_rows

ROWS, GROUP = 1_000, 128
FORGOTTEN = {"u3", "u20", "nobody"}


def _write(path, keys: list[str]) -> pa.Table:
    """The table as read back from `path` (Parquet names a list's items its own way)."""
    table = pa.table({"user_key": keys, "value": list(range(len(keys))),
                      "seen": [[i, i + 1] for i in range(len(keys))]})
    pq.write_table(table.replace_schema_metadata({b"written_by": b"the test"}), path, row_group_size=GROUP)
    return pq.read_table(path)


def _leftovers(folder) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_the_rows_of_the_forgotten_go_and_everything_else_stays_in_its_row_groups(tmp_path):
    path = tmp_path / "part-0.parquet"
    written = _write(path, [f"u{i % 37}" for i in range(ROWS)])
    expected = [row for row in written.to_pylist() if row["user_key"] not in FORGOTTEN]

    assert drop_rows(path, FORGOTTEN) == ROWS - len(expected)

    rewritten = pq.ParquetFile(path)
    assert rewritten.read().to_pylist() == expected
    assert rewritten.schema_arrow.equals(written.schema, check_metadata=True)
    assert rewritten.num_row_groups == -(-ROWS // GROUP)  # each group kept as one: zone maps still skip
    assert _leftovers(tmp_path) == []


def test_a_file_of_only_the_forgotten_is_left_empty_and_readable(tmp_path):
    path = tmp_path / "part-0.parquet"
    written = _write(path, ["u3", "u20"] * 200)

    assert drop_rows(path, FORGOTTEN) == 400

    assert pq.read_table(path).schema.equals(written.schema, check_metadata=True)
    assert duckdb.sql(f"select count(*) from read_parquet('{path}')").fetchall() == [(0,)]


def test_a_file_without_the_forgotten_is_not_rewritten(tmp_path):
    path = tmp_path / "part-0.parquet"
    _write(path, ["u1", "u2"] * 10)
    before = path.stat().st_mtime_ns, path.read_bytes()

    assert drop_rows(path, FORGOTTEN) == 0
    assert (path.stat().st_mtime_ns, path.read_bytes()) == before


def test_a_rewrite_that_fails_leaves_the_file_as_it_was_and_no_copy(tmp_path, monkeypatch):
    path = tmp_path / "part-0.parquet"
    _write(path, [f"u{i % 37}" for i in range(ROWS)])
    before = path.read_bytes()
    calls = []

    def full_disk(writer, table, *args, **kwargs):
        calls.append(table.num_rows)
        if len(calls) == 3:  # two row groups written, then the disk is full
            raise OSError(28, "No space left on device")
        return original(writer, table, *args, **kwargs)

    original = pq.ParquetWriter.write_table
    monkeypatch.setattr(pq.ParquetWriter, "write_table", full_disk)
    with pytest.raises(OSError, match="No space left"):
        drop_rows(path, FORGOTTEN)

    assert path.read_bytes() == before
    assert _leftovers(tmp_path) == []


def test_an_erasure_reaches_the_lists_models_and_training_sets_and_a_withdrawal_does_not(tmp_path):
    """What models and `millet training-set` wrote under the data root holds a person as much as the
    snapshots do: an erasure removes them there too; the bank reconciliation, which the law keeps, it
    leaves; a consent withdrawal (behaviour only) leaves all of them. Mutation that fails it: any of
    the lists', models' or training sets' folders left out of an erasure."""
    from millet.privacy.zones import Scope, purge
    from millet.settings import Settings

    settings = Settings(data_root=tmp_path / "data", pseudonym_key="k")
    written = [settings.tracking_dir / "early_warning" / "dt=2026-03-01" / "part-0.parquet",
               settings.models_dir / "credit_risk" / "v1" / "test_scores.parquet",
               settings.training_dir / "credit_risk_2026-03-01.parquet"]
    kept_by_law = settings.reconciliation_dir / "dt=2026-03-01" / "part-0.parquet"
    for path in [*written, kept_by_law]:
        path.parent.mkdir(parents=True)
        pq.write_table(pa.table({"user_key": ["gone", "stays"], "score": [0.1, 0.2]}), path)

    def holding_the_forgotten() -> list:
        return [p for p in [*written, kept_by_law] if "gone" in pq.read_table(p)["user_key"].to_pylist()]

    purge({"gone"}, Scope.BEHAVIOUR, settings)
    assert holding_the_forgotten() == [*written, kept_by_law]
    purge({"gone"}, Scope.EVERYTHING, settings)
    assert holding_the_forgotten() == [kept_by_law]
    assert all(pq.read_table(p)["user_key"].to_pylist() == ["stays"] for p in written)
