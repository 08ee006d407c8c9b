"""Windowed totals over a long, heavy history come out right (a guard on DuckDB's optimizer).

With DuckDB 2.0.0's compressed materialization on, the credit mart summed 179 daily applications
to -77 (an 8-bit wrap-around). Settings turn that optimizer off; this builds the situation that
showed it, with the benchmark's own history builder, and checks every user's 180-day count.
"""

import subprocess
import sys
from collections import Counter
from datetime import date, timedelta

import duckdb
import pyarrow.parquet as pq

from millet.settings import REPO_ROOT, Settings
from millet.transform import snapshot_path

BENCH = REPO_ROOT / "bench" / "bench_transform.py"


def test_180_day_counts_over_a_heavy_history_equal_their_plain_sums(tmp_path):
    for stage in ("prepare", "nightly"):  # the nightly build fails if a dbt test (features_in_range) does
        done = subprocess.run([sys.executable, str(BENCH), "--stage", stage, "--root", str(tmp_path),
                               "--users", "3000"], capture_output=True, text=True, timeout=1200)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    settings = Settings(data_root=tmp_path, pseudonym_key="bench-only-key")
    built = (settings.snapshots_dir / "credit").iterdir()
    as_of = max(date.fromisoformat(p.name.removeprefix("dt=")) for p in built)

    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        rows = con.sql(f"select user_key, event_date, applications from int_loans__user_daily "
                       f"where arrived_on <= date '{as_of}'").fetchall()
    expected = Counter()
    for user, day, applications in rows:
        if as_of - timedelta(days=180) < day <= as_of:
            expected[user] += applications
    table = pq.read_table(snapshot_path("credit", as_of, settings),
                          columns=["user_key", "credit__applications_count_180d"]).to_pylist()
    actual = {r["user_key"]: r["credit__applications_count_180d"] for r in table}
    assert max(expected.values()) > 127  # beyond 8 bits: the case that went wrong
    assert actual == {user: expected[user] for user in actual}
    assert set(actual) >= {user for user, n in expected.items() if n}
