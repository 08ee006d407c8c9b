"""Every fault the simulator injects is accounted for by ingestion, exactly, channel by channel."""

import json
import shutil
from collections import Counter
from datetime import date, timedelta

import pyarrow.parquet as pq

from millet.contracts import consent_feed, contract_for, event_channels, ingestion_order
from millet.ingest import ingest_channel_day, retention
from millet.ingest.history import ingest_range
from millet.ingest.retention import purge_expired
from millet.privacy.erasure import apply_erasures, forget
from millet.settings import Settings
from millet.simulate import simulate
from millet.simulate.faults import RECORD_FAULTS, Faults
from millet.simulate.run import write_drop
from tests.conftest import TEST_KEY
from tests.helpers import land_consent, order_line

START = date(2026, 4, 1)
DAYS = 3
# Simulator fault → the quarantine reason ingestion must give it (schema drift is loaded, and reported).
REASON = {
    "malformed": "malformed_json", "bad_type": "bad_type", "missing_field": "missing_field",
    "unknown_enum": "unknown_enum", "bad_amount": "out_of_range", "future_timestamp": "future_timestamp",
}


FAULTS = Faults(duplicate=0.02, late=0.02, **dict.fromkeys(RECORD_FAULTS, 0.01), truncated_gzip=0.2,
                empty_file=0.3)


def test_ingestion_accounts_for_every_injected_fault(tmp_path):
    settings = Settings(data_root=tmp_path / "data", pseudonym_key=TEST_KEY.decode())
    simulate(settings.landing_dir, users=2_000, days=DAYS, start=START, seed=9, faults=FAULTS,
             truth_dir=settings.truth_dir)
    order = [contract_for(channel) for channel in ingestion_order()]
    lost_files = Counter()
    checked = late_delivered = 0
    for offset in range(DAYS):
        day = START + timedelta(days=offset)
        injected = json.loads((settings.truth_dir / "faults" / f"dt={day}.json").read_text())
        for contract in order:
            m = ingest_channel_day(contract.channel, day, settings)
            assert m["balanced"], m
            log = injected[contract.channel]
            whole_files = Counter(m["files_quarantined"].values())
            assert whole_files["truncated_or_corrupt_gzip"] == log["files_truncated"], (contract.channel, day)
            assert whole_files["empty_file"] == log["files_empty"], (contract.channel, day)
            lost_files += whole_files
            late_delivered += log["delivered_late_today"]
            # Nothing else is refused: not a clean line, nor an event delivered days late (stale is far).
            assert set(m["reasons"]) <= set(REASON.values()), (contract.channel, day, m["reasons"])
            if log["files_truncated"]:
                continue  # a lost part file takes its share of every fault with it
            checked += 1
            for fault, reason in REASON.items():
                assert m["reasons"].get(reason, 0) == log[fault], (contract.channel, day, fault)
            assert m["duplicates"] == log["duplicate"], (contract.channel, day)
            assert bool(m["unknown_fields"]) == (log["schema_drift"] > 0), (contract.channel, day)
    exercised = lost_files["truncated_or_corrupt_gzip"] and lost_files["empty_file"] and checked >= 10
    assert exercised and late_delivered, (lost_files, checked, late_delivered)


def test_a_range_ingested_at_once_equals_the_nights_erasures_and_withdrawals_included(tmp_path):
    """ingest_range reuses one DuckDB for a channel's days, each day in a fresh catalog, and puts each
    night's erasures where the nights do: the same bronze, quarantine, manifests and tombstones as night
    by night (each day's consent, then its erasures, then its behaviour: the DAG's order), with a
    `millet forget` before the first night, an erasure request on the second day, and on the third a
    consent withdrawal and a consent record of the erased person. Mutations that fail it: a day's tables
    or quarantined file reaching the next day; the erasures left out, or all applied before any
    behaviour; the range's consent ingested before its erasures."""
    each = Settings(data_root=tmp_path / "each", pseudonym_key=TEST_KEY.decode())
    simulate(each.landing_dir, users=300, days=DAYS, start=START, seed=9, faults=FAULTS,
             truth_dir=each.truth_dir)
    forgotten, deleted, withdrawn = _consenting_accounts(each, 3)
    second, third = START + timedelta(days=1), START + timedelta(days=2)
    write_drop(each.landing_dir / "deletions" / f"dt={second}" / "part-9000.jsonl.gz", [json.dumps(
        {"event_id": "del-1", "event_ts": f"{second}T09:00:00Z", "account_id": deleted,
         "request": "erasure"})])
    write_drop(each.landing_dir / "consent" / f"dt={third}" / "part-9000.jsonl.gz", [json.dumps(
        {"event_id": f"cns-{n}", "event_ts": f"{third}T09:00:00Z", "account_id": account,
         "consent_given": given, "source": "settings"})
        for n, (account, given) in enumerate([(withdrawn, False), (deleted, True)])])  # the second: erased
    keys = dict(zip(("forgotten", "deleted", "withdrawn"),
                    each.pseudonym_chain.user_keys([forgotten, deleted, withdrawn]), strict=True))
    forget([forgotten], each)
    shared = each.model_copy(update={"data_root": tmp_path / "shared"})
    shutil.copytree(each.landing_dir, shared.landing_dir)  # with the files' times: when each drop landed
    shutil.copytree(each.erasure_dir, shared.erasure_dir)

    for offset in range(DAYS):
        day = START + timedelta(days=offset)
        ingest_channel_day(consent_feed(), day, each)
        apply_erasures(day, each)
        for channel in event_channels():
            ingest_channel_day(channel, day, each)
    ingest_range(START, START + timedelta(days=DAYS - 1), shared)

    for zone in ("bronze_dir", "quarantine_dir", "manifests_dir", "erasure_dir"):
        theirs, ours = getattr(each, zone), getattr(shared, zone)
        files = sorted(p.relative_to(theirs) for p in theirs.rglob("*") if p.is_file())
        assert files == sorted(p.relative_to(ours) for p in ours.rglob("*") if p.is_file()), zone
        assert files and all((theirs / f).read_bytes() == (ours / f).read_bytes() for f in files), zone
    # What the nights did, and so the range: the two forgotten are gone, and the withdrawn's behaviour
    # from before the withdrawal, which the first two days had ingested.
    behaviour = {channel: set(pq.read_table(shared.bronze_dir / channel, columns=["user_key"])
                              .column(0).to_pylist()) for channel in event_channels()}
    everyone = set().union(*behaviour.values())
    assert keys["forgotten"] not in everyone and keys["deleted"] not in everyone
    assert keys["withdrawn"] not in everyone
    assert len(everyone) > 250
    tombstones = pq.read_table(shared.tombstones_path).to_pylist()
    assert {(t["user_key"], str(t["requested_on"])) for t in tombstones} == {
        (keys["forgotten"], str(START)), (keys["deleted"], str(second))}


def test_a_day_whose_landing_is_past_its_retention_keeps_its_bronze_when_ingested_again(tmp_path):
    """A re-run of an old day, or of a one-pass history, after the nights removed its landing drop.
    Mutations that fail it: ingesting the missing drop (the day's bronze replaced by an empty one, and
    every later day's behaviour then refused for want of the consent it held); keeping the bronze of a
    drop a person removed."""
    settings = Settings(data_root=tmp_path / "data", pseudonym_key=TEST_KEY.decode(),
                        landing_retention_days=1)
    simulate(settings.landing_dir, users=100, days=DAYS, start=START, seed=9, truth_dir=settings.truth_dir)
    last = START + timedelta(days=DAYS - 1)
    ingest_range(START, last, settings)
    bronze = {p: p.read_bytes() for p in settings.bronze_dir.rglob("*.parquet")}
    assert purge_expired(last, settings)["landing"] > 0
    assert not (settings.landing_dir / consent_feed() / f"dt={START}").exists()

    ingest_range(START, last, settings)

    assert {p: p.read_bytes() for p in settings.bronze_dir.rglob("*.parquet")} == bronze
    first_day = [p for p in bronze if f"dt={START}" in str(p)]
    assert sum(pq.read_metadata(p).num_rows for p in first_day) > 100  # what the first run kept, kept

    # A purge killed inside a drop's folder (marked, then part of it removed): its bronze is kept too.
    kept = settings.bronze_dir / "payments" / f"dt={last}" / "part-0.parquet"
    before = kept.read_bytes()
    retention._mark_landing_removed("payments", str(last), settings)
    min((settings.landing_dir / "payments" / f"dt={last}").iterdir()).unlink()
    ingest_channel_day("payments", last, settings)
    assert kept.read_bytes() == before

    # A drop a person removed (not retention) is ingested as missing: its feed check alerts.
    shutil.rmtree(settings.landing_dir / "forum" / f"dt={last}")
    assert ingest_channel_day("forum", last, settings)["files"] == []
    assert pq.read_metadata(settings.bronze_dir / "forum" / f"dt={last}" / "part-0.parquet").num_rows == 0


def _consenting_accounts(settings: Settings, n: int) -> list[str]:
    """`n` account ids that gave consent when onboarded (the simulator's truth), and so have behaviour."""
    users = pq.read_table(settings.truth_dir / "users.parquet", columns=["account_id", "consent"]).to_pylist()
    return sorted(u["account_id"] for u in users if u["consent"])[:n]


def test_a_late_event_lands_in_its_arrival_partition_with_its_own_timestamp(tmp_path):
    settings = Settings(data_root=tmp_path / "data", pseudonym_key=TEST_KEY.decode())
    arrival = "2026-02-05"
    land_consent(settings, {"A000000042": True}, day="2026-02-01")
    write_drop(settings.landing_dir / "commerce" / f"dt={arrival}" / "part-0000.jsonl.gz",
               [order_line(event_id="late-1", event_ts="2026-02-02T08:00:00Z")])
    ingest_channel_day("commerce", arrival, settings)

    bronze = pq.read_table(settings.bronze_dir / "commerce").to_pylist()
    assert [(r["event_id"], str(r["dt"]), r["event_ts"].isoformat()) for r in bronze] == [
        ("late-1", arrival, "2026-02-02T08:00:00+00:00")
    ]


def test_a_rerun_of_a_night_before_a_withdrawal_does_not_bring_the_behaviour_back(tmp_path):
    """Someone consents, their day's behaviour is ingested, they withdraw later: a re-run of that earlier
    night (an operator's, within landing retention) must not load them again, though consent as of that
    night said yes; and someone who consents again is loaded again. Mutation that fails it: consent read
    as of the re-run day alone."""
    settings = Settings(data_root=tmp_path / "data", pseudonym_key=TEST_KEY.decode())
    land_consent(settings, {"A000000042": True}, day="2026-02-01")
    night = "2026-02-03"
    write_drop(settings.landing_dir / "commerce" / f"dt={night}" / "part-0000.jsonl.gz",
               [order_line(event_id="o-1", event_ts=f"{night}T08:00:00Z")])
    assert ingest_channel_day("commerce", night, settings)["rows_out"] == 1
    land_consent(settings, {"A000000042": False}, day="2026-02-05")  # withdrawn, and that night applied:
    assert apply_erasures("2026-02-05", settings)["consent_withdrawn"] == 1  # their behaviour purged
    again = ingest_channel_day("commerce", night, settings)
    assert (again["rows_out"], again["excluded_no_consent"]) == (0, 1)
    assert pq.read_metadata(settings.bronze_dir / "commerce" / f"dt={night}" / "part-0.parquet").num_rows == 0
    land_consent(settings, {"A000000042": True}, day="2026-02-08")  # given again
    later = "2026-02-09"
    write_drop(settings.landing_dir / "commerce" / f"dt={later}" / "part-0000.jsonl.gz",
               [order_line(event_id="o-2", event_ts=f"{later}T08:00:00Z")])
    assert ingest_channel_day("commerce", later, settings)["rows_out"] == 1
