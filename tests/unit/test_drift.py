"""PSI and null rates of millet.quality.drift against figures worked out by hand."""

import math

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from millet.quality.drift import FLOOR, feature_drift


def _write(path, **columns):
    pq.write_table(pa.table(columns), path)
    return path


def test_psi_over_baseline_deciles_with_nulls_as_a_bin(tmp_path):
    # Baseline: 1..10, 100 rows each, so its deciles are 1..9 and each of the 10 bins holds a tenth.
    base_values = [v for v in range(1, 11) for _ in range(100)]
    baseline = _write(tmp_path / "base.parquet", moved=base_values, same=base_values,
                      holes=[None if i % 10 == 0 else v for i, v in enumerate(base_values)])
    # New: `moved` all in the top bin (> 9); `same` unchanged; `holes` loses its nulls to bin 1..1.
    snapshot = _write(tmp_path / "new.parquet", moved=[10] * 1000, same=base_values,
                      holes=[1 if i % 10 == 0 else v for i, v in enumerate(base_values)])

    drift = feature_drift(snapshot, baseline, ["moved", "same", "holes"])
    rows = {r["feature"]: r for r in drift.to_pylist()}

    nine_empty = 9 * (FLOOR - 0.1) * math.log(FLOOR / 0.1)
    assert rows["moved"]["psi"] == pytest.approx(nine_empty + (1 - 0.1) * math.log(1 / 0.1))
    assert rows["same"]["psi"] == 0.0
    # holes, baseline: nulls 0.1; its deciles over the 900 values put 1..10 at 90 each (tenths of 900 = 0.09
    # of rows per value). New: no nulls, value 1 takes the nulls' 100 rows.
    base_shares = {"null": 0.1, **{v: 0.09 for v in range(1, 11)}}
    new_shares = {"null": FLOOR, 1: 0.19, **{v: 0.09 for v in range(2, 11)}}
    expected = sum((new_shares[k] - base_shares[k]) * math.log(new_shares[k] / base_shares[k])
                   for k in base_shares)
    assert rows["holes"]["psi"] == pytest.approx(expected)
    assert (rows["holes"]["null_rate"], rows["holes"]["baseline_null_rate"]) == (0.0, 0.1)
    assert rows["holes"]["null_rate_change"] == pytest.approx(-0.1)
    assert {r["rows"] for r in rows.values()} == {1000}


def test_an_empty_snapshot_has_no_psi_and_a_baseline_of_nulls_one_bin(tmp_path):
    baseline = _write(tmp_path / "base.parquet", x=pa.array([None] * 10, pa.float32()))
    empty = _write(tmp_path / "empty.parquet", x=pa.array([], pa.float32()))
    full = _write(tmp_path / "full.parquet", x=pa.array([1.0] * 10, pa.float32()))

    assert feature_drift(empty, baseline, ["x"]).to_pylist()[0]["psi"] is None
    moved = feature_drift(full, baseline, ["x"]).to_pylist()[0]
    assert moved["psi"] == pytest.approx((FLOOR - 1) * math.log(FLOOR) + (1 - FLOOR) * math.log(1 / FLOOR))
    assert moved["null_rate_change"] == -1.0


def test_a_feature_null_in_the_new_snapshot_counts_as_all_nulls(tmp_path):
    baseline = _write(tmp_path / "base.parquet", x=pa.array([1.0, 2.0], pa.float32()))
    nulls = _write(tmp_path / "nulls.parquet", x=pa.array([None, None], pa.float32()))

    moved = feature_drift(nulls, baseline, ["x"]).to_pylist()[0]
    assert (moved["null_rate"], moved["baseline_null_rate"], moved["null_rate_change"]) == (1.0, 0.0, 1.0)


def test_infinite_deciles_bin_like_any_other_cut_point(tmp_path):
    # Baseline: 1..5 and +inf, 100 rows each (float): its deciles include inf, which SQL has no literal for.
    # Bins: [<= 1], (1, 2], (2, 3], (3, 4], (4, 5], (5, inf], (> inf) empty; new: everything at inf.
    values = [float(v) for v in (1, 2, 3, 4, 5, math.inf) for _ in range(100)]
    baseline = _write(tmp_path / "base.parquet", x=values)
    snapshot = _write(tmp_path / "new.parquet", x=[math.inf] * 600)

    moved = feature_drift(snapshot, baseline, ["x"]).to_pylist()[0]

    sixth = 1 / 6
    expected = 5 * (FLOOR - sixth) * math.log(FLOOR / sixth) + (1 - sixth) * math.log(1 / sixth)
    assert moved["psi"] == pytest.approx(expected)


def test_a_feature_the_baseline_lacks_has_its_null_rate_and_no_psi(tmp_path):
    """A contract category added since the baseline: its features are new columns. Mutation that fails it:
    the baseline's deciles asked of every feature (DuckDB refuses a column the file does not have)."""
    values = [v for v in range(1, 11) for _ in range(10)]
    baseline = _write(tmp_path / "base.parquet", kept=values)
    snapshot = _write(tmp_path / "new.parquet", kept=[10] * 100,
                      added=[None if i % 4 == 0 else 1.0 for i in range(100)])

    rows = {r["feature"]: r for r in feature_drift(snapshot, baseline, ["kept", "added"]).to_pylist()}

    assert rows["kept"] == feature_drift(snapshot, baseline, ["kept"]).to_pylist()[0]  # as without it
    assert rows["kept"]["psi"] > 0
    added = rows["added"]
    assert (added["psi"], added["baseline_null_rate"], added["null_rate_change"]) == (None, None, None)
    assert (added["null_rate"], added["rows"], added["baseline_rows"]) == (0.25, 100, 100)
