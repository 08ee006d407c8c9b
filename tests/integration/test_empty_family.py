"""A family with no activity as of a day writes an empty snapshot, not a row of NULLs.

The first day simulated, with its loan and bank-repayment drops replaced by empty files: a quiet day
for credit, while every behaviour family has users. dbt-duckdb's `external` materialization would
write one all-NULL row for an empty result (dbt-duckdb#848); the project's override writes none.
Expected users are read from the landing lines in plain Python, not from the pipeline.
"""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from millet.contracts import ingestion_order
from millet.feature_spec import families, family
from millet.ingest import ingest_channel_day
from millet.quality.checkpoint import check_features, drift_path
from millet.settings import Settings
from millet.simulate import simulate
from millet.simulate.run import write_drop
from millet.transform import build_features, snapshot_path
from tests.conftest import TEST_KEY
from tests.helpers import hmac_key, landing_lines

DAY = date(2026, 3, 1)
EMPTY = "credit"
QUIET_CHANNELS = ("loans", "bank_repayments")  # credit's sources
SOURCE = {"device": "device", "appstore": "appstore", "commerce": "commerce", "forum": "forum",
          "payments": "payments"}  # behaviour family → its channel
ARROW_TYPE = {"int32": pa.int32(), "float32": pa.float32()}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("empty_family")
    settings = Settings(data_root=root / "data", pseudonym_key=TEST_KEY.decode())
    simulate(settings.landing_dir, users=200, days=1, start=DAY, seed=5, truth_dir=settings.truth_dir)
    for channel in QUIET_CHANNELS:  # whatever the seed drew, nothing arrives for credit today
        folder = settings.landing_dir / channel / f"dt={DAY}"
        for part in folder.glob("*.jsonl.gz"):
            part.unlink()
        write_drop(folder / "part-0000.jsonl.gz", [])
    for channel in ingestion_order():
        ingest_channel_day(channel, DAY, settings)
    build_features(DAY, settings)
    return settings


def active_users(settings: Settings, channel: str) -> set[str]:
    """Keys of consenting accounts with an event of `channel` dated within the longest window."""
    consent = {}
    for line in landing_lines(settings.landing_dir, "consent", str(DAY)):
        row = json.loads(line)
        consent.setdefault(row["account_id"], row["consent_given"])
    active = set()
    for line in landing_lines(settings.landing_dir, channel, str(DAY)):
        row = json.loads(line)
        happened = datetime.fromisoformat(row["event_ts"]).date()
        if consent.get(row["account_id"]) and DAY - timedelta(days=180) < happened <= DAY:
            active.add(hmac_key(row["account_id"], TEST_KEY))
    return active


def test_the_quiet_family_has_zero_rows_and_its_full_schema(world):
    for channel in QUIET_CHANNELS:
        assert landing_lines(world.landing_dir, channel, str(DAY)) == []
    table = pq.read_table(snapshot_path(EMPTY, DAY, world))
    assert table.num_rows == 0
    wanted = [("user_key", pa.string()), ("event_timestamp", pa.timestamp("us", tz="UTC"))] + [
        (f.name, ARROW_TYPE[f.dtype]) for f in family(EMPTY).features]
    assert sorted((f.name, f.type) for f in table.schema) == sorted(wanted, key=lambda p: p[0])


def test_the_active_families_hold_exactly_their_active_users(world):
    assert {f.name for f in families()} == {EMPTY, *SOURCE}
    for name, channel in SOURCE.items():
        table = pq.read_table(snapshot_path(name, DAY, world))
        wanted = active_users(world, channel)
        assert wanted, name  # the world really has activity there
        keys = table.column("user_key").to_pylist()
        assert sorted(keys) == sorted(wanted), name  # no NULL key, no duplicate, no one missing
        stamps = set(table.column("event_timestamp").to_pylist())
        assert {s.isoformat() for s in stamps} == {f"{DAY + timedelta(days=1)}T00:00:00+00:00"}, name


def test_the_drift_gate_passes_the_quiet_day_measured_against_itself(world):
    """The day against itself: every feature of every active family has a PSI of exactly 0 and no null-rate
    change; the empty family has nothing to measure (no rows on either side) and is not failed for it."""
    summary = check_features(DAY, world.model_copy(update={"drift_baseline_date": DAY}))
    assert all(s["success"] and not s["warnings"] for s in summary.values()), summary
    drift = pq.read_table(drift_path(DAY, world)).to_pylist()
    assert {r["family"] for r in drift} == set(SOURCE) | {EMPTY}
    for row in drift:
        if row["family"] == EMPTY:
            assert (row["rows"], row["psi"], row["null_rate_change"]) == (0, None, None), row
        else:
            assert (row["psi"], row["null_rate_change"]) == (0.0, 0.0), row


def test_rebuilding_the_quiet_day_gives_identical_snapshots(world):
    before = {f.name: snapshot_path(f.name, DAY, world).read_bytes() for f in families()}
    build_features(DAY, world)
    assert {f.name: snapshot_path(f.name, DAY, world).read_bytes() for f in families()} == before
