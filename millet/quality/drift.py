"""Population Stability Index and null-rate change of every feature of a family, between the day's
snapshot and a baseline snapshot, in DuckDB: one pass over the baseline for its deciles, then one pass
over both snapshots for their bin counts, whatever the number of features (DuckDB's cost here grows with
the number of aggregates, not with the rows: the two snapshots share one query).

Bins are fixed by the baseline: its deciles (repeated cut points merged, so a mostly-zero count gets
fewer, wider bins) and a bin of its own for nulls. PSI = sum over bins of (new - base) * ln(new / base),
with each share floored at FLOOR so that an empty bin does not make it infinite.
"""

from __future__ import annotations

import math
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from millet.settings import declared_duckdb_config
from millet.sqltext import ident, literal

FLOOR = 1e-4
DECILES = [i / 10 for i in range(1, 10)]
DRIFT_SCHEMA = pa.schema([
    ("feature", pa.string()), ("psi", pa.float64()), ("null_rate", pa.float64()),
    ("baseline_null_rate", pa.float64()), ("null_rate_change", pa.float64()),
    ("rows", pa.int64()), ("baseline_rows", pa.int64()), ("population_ratio", pa.float64()),
])


def feature_drift(snapshot: Path, baseline: Path, features: list[str], duckdb_config: dict | None = None
                  ) -> pa.Table:
    """One row per feature: its PSI against the baseline and its null rates (DRIFT_SCHEMA). `duckdb_config`:
    the connection's settings (memory_limit, threads, ...)."""
    if not features:
        return DRIFT_SCHEMA.empty_table()
    # A feature the baseline does not have (a category added to a contract since) has nothing to drift
    # from: its own null rate, no PSI, until a baseline holds it.
    in_baseline = set(pq.read_schema(baseline).names)
    compared = [f for f in features if f in in_baseline]
    with duckdb.connect(config=duckdb_config or declared_duckdb_config()) as con:
        cuts = _baseline_cuts(con, baseline, compared) if compared else {}
        cuts |= {f: [] for f in features if f not in in_baseline}
        (base_rows, base_bins), (rows, bins) = _bin_counts(con, [baseline, snapshot], cuts)
    table = {name: [] for name in DRIFT_SCHEMA.names}
    for feature in features:
        share, base_share = _shares(bins[feature], rows), _shares(base_bins[feature], base_rows)
        null_rate, base_null_rate = share[0], base_share[0] if feature in in_baseline else None
        table["feature"].append(feature)
        table["psi"].append(psi(share, base_share) if rows and base_rows and feature in in_baseline else None)
        table["null_rate"].append(null_rate)
        table["baseline_null_rate"].append(base_null_rate)
        table["null_rate_change"].append(None if None in (null_rate, base_null_rate)
                                         else null_rate - base_null_rate)
        table["rows"].append(rows)
        table["baseline_rows"].append(base_rows)
        table["population_ratio"].append(rows / base_rows if base_rows else None)
    return pa.table(table, schema=DRIFT_SCHEMA)


def _baseline_cuts(con, baseline: Path, features: list[str]) -> dict[str, list[float]]:
    """Each feature's distinct baseline deciles, in order (empty for an all-null feature)."""
    quantiles = ", ".join(f"quantile_disc({ident(f)}, {DECILES}) as {ident(f)}" for f in features)
    row = con.execute(f"select {quantiles} from read_parquet({literal(str(baseline))})").fetchone()
    return {f: sorted({float(v) for v in (cuts or []) if v is not None})
            for f, cuts in zip(features, row, strict=True)}


def _bin_counts(con, snapshots: list[Path], cuts: dict[str, list[float]]) -> list[tuple[int, dict]]:
    """For each snapshot, its row count and, per feature, its counts in [null, <= c1, (c1, c2], ..., > ck].

    One aggregate per cut point rather than one per bin: count(x) and count_if(x > c) for each cut c, the
    bins then being differences of neighbouring counts (the cuts are increasing, so x > c_j implies
    x > c_(j-1), and for a non-null x, x <= c is exactly not x > c, NaN included). Each row costs one
    comparison per cut instead of two per bin and an `and`, with one aggregate fewer per feature."""
    aggregates, slots = ["count(*)"], {}
    for feature, points in cuts.items():
        column, start = ident(feature), len(aggregates)
        aggregates.append(f"count({column})")
        aggregates.extend(f"count_if({column} > {_number(point)})" for point in points)
        slots[feature] = (start, len(aggregates))
    sides = " union all by name ".join(f"select {i} as side, * from read_parquet({literal(str(path))})"
                                       for i, path in enumerate(snapshots))
    found = {row[0]: row[1:] for row in con.execute(
        f"select side, {', '.join(aggregates)} from ({sides}) group by side").fetchall()}
    empty = [0] * len(aggregates)  # a snapshot with no rows has no group
    result = []
    for i in range(len(snapshots)):
        row = found.get(i, empty)
        rows, bins = row[0], {}
        for feature, (a, b) in slots.items():
            # count_if over a column of nulls only gives NULL, not 0
            non_null, *above = [c or 0 for c in row[a:b]]
            edges = [non_null, *above, 0]  # rows above each lower bound: none above the last bin
            within = (low - high for low, high in zip(edges, edges[1:], strict=False))
            bins[feature] = [rows - non_null, *within]
        result.append((rows, bins))
    return result


def _number(value: float) -> str:
    """A cut point as SQL: its repr, or a cast for NaN and the infinities (no SQL literal spells them)."""
    return repr(value) if math.isfinite(value) else f"'{value}'::double"


def _shares(counts: list[int], rows: int) -> list[float | None]:
    return [c / rows if rows else None for c in counts]


def psi(new: list[float], base: list[float]) -> float:
    """Population Stability Index of shares over the same bins: Σ (new − base)·ln(new / base)."""
    total = 0.0
    for n, b in zip(new, base, strict=True):
        n, b = max(n, FLOOR), max(b, FLOOR)
        total += (n - b) * math.log(n / b)
    return total
