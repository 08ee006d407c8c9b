"""Erasure and consent withdrawal end to end: a world run night by night through the real DAG (`millet
run`), people forgotten through the deletions feed and `millet forget`, one withdrawing consent, and the
night after read zone by zone with a scanner that knows nothing of Millet's code."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import date, timedelta

import pyarrow.parquet as pq
import pytest
import redis

from millet.feature_spec import families
from millet.privacy.zones import behaviour_channels, behaviour_families
from millet.settings import Settings
from millet.simulate import simulate
from millet.simulate.faults import Faults
from millet.simulate.run import write_drop
from tests.conftest import TEST_KEY
from tests.e2e.processes import MILLET, REDIS_DB
from tests.helpers import hmac_key, landing_lines, parsed_rows, shown_quarantine
from tests.pii import scan_for

START, DAYS, USERS = date(2026, 5, 1), 3, 1500
NIGHTS = [START + timedelta(days=n) for n in range(DAYS)]
LAST = NIGHTS[-1]
# Where a forgotten person may still be, by law or because it is the record of the erasure itself (the
# warehouse's views over those files included).
WAREHOUSE = "warehouse/millet.duckdb:"
KEPT = ("bronze/loans/", "bronze/bank_repayments/", "bronze/deletions/", "erasure/tombstones.parquet",
        "state/state_credit__", "quality/reconciliation/",
        *(f"{WAREHOUSE}{model}" for model in ("stg_loans__", "stg_bank_repayments__", "int_loans__",
                                              "int_bank_repayments__", "state_credit__")))
NOT_MILLETS = ("landing", "truth")


def _run(day: date, settings: Settings, *args: str) -> subprocess.CompletedProcess:
    done = subprocess.run([MILLET, *args] if args else [MILLET, "run", "--date", str(day)],
                          env={**os.environ, **settings.millet_environ()}, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done


def _rows(settings: Settings, channel: str, days=NIGHTS) -> list[dict]:
    return [r for day in days for r in parsed_rows(landing_lines(settings.landing_dir, channel, str(day)))[0]]


def _pick(settings: Settings) -> dict[str, str]:
    """People with loans and with behaviour in the first two days, who agreed to its use."""
    latest = {}
    for r in sorted(_rows(settings, "consent", NIGHTS[:2]), key=lambda r: (r["event_ts"], r["event_id"])):
        latest[r["account_id"]] = r["consent_given"]
    consenting = {account for account, given in latest.items() if given}
    borrowers = {r["account_id"] for r in _rows(settings, "loans", NIGHTS[:2])}
    active = {r["account_id"] for r in _rows(settings, "device", NIGHTS[:1])}
    chosen = sorted(consenting & borrowers & active)
    assert len(chosen) >= 4, "the world needs more borrowers whose phones report"
    return {"via_feed": chosen[0], "via_cli": chosen[1], "withdraws": chosen[2], "bystander": chosen[3]}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("erasure")
    # The service path's online store: Redis (the tests' own database and a project of its own).
    settings = Settings(data_root=root / "data", pseudonym_key=TEST_KEY.decode(), online_store="redis",
                        redis_url=f"127.0.0.1:6379,db={REDIS_DB}", project=f"millet_erasure_{os.getpid()}")
    try:
        yield _forget_on_the_last_night(settings)
    finally:
        client = redis.Redis(db=REDIS_DB)
        for key in client.scan_iter(match=f"millet:{settings.project}:*", count=1000):
            client.unlink(key)


def _forget_on_the_last_night(settings: Settings):
    simulate(settings.landing_dir, users=USERS, days=DAYS, start=START, seed=9, faults=Faults(malformed=0.02))
    people = _pick(settings)
    # In quarantine on the first night: a refused line (masked) and a line cut short (sealed) of each of
    # the forgotten person and a bystander, whom the erasure must not touch.
    order = _rows(settings, "commerce", NIGHTS[:1])[0]
    planted = []
    for who in ("via_feed", "bystander"):
        rest = {k: v for k, v in order.items() if k != "account_id"}  # the account id first: cut, it stays
        line = json.dumps({"account_id": people[who], **rest, "event_id": f"q-{who}", "payment_type": "??"})
        planted += [line, line[: len(line) // 2]]
    write_drop(settings.landing_dir / "commerce" / f"dt={NIGHTS[0]}" / "part-9000.jsonl.gz", planted)
    for day in NIGHTS[:2]:
        _run(day, settings)
    # The third day: a request in the deletions feed, one by `millet forget`, a consent withdrawal, and
    # the forgotten person's first phone event of day one delivered again (a re-sent event).
    write_drop(settings.landing_dir / "deletions" / f"dt={LAST}" / "part-0000.jsonl.gz", [json.dumps(
        {"event_id": "del-1", "event_ts": f"{LAST}T09:00:00Z", "account_id": people["via_feed"],
         "request": "erasure"})])
    write_drop(settings.landing_dir / "consent" / f"dt={LAST}" / "part-9000.jsonl.gz", [json.dumps(
        {"event_id": "withdrawal-1", "event_ts": f"{LAST}T08:00:00Z", "account_id": people["withdraws"],
         "consent_given": False, "source": "settings"})])
    sent = next(r for r in _rows(settings, "device", NIGHTS[:1]) if r["account_id"] == people["via_feed"])
    write_drop(settings.landing_dir / "device" / f"dt={LAST}" / "part-9000.jsonl.gz", [json.dumps(sent)])
    before = {who: _bronze_rows(settings, "loans", hmac_key(acct, TEST_KEY), NIGHTS[:2])
              for who, acct in people.items()}
    printed = _run(LAST, settings, "forget", "--account-id", people["via_cli"]).stdout.split()
    assert printed == [hmac_key(people["via_cli"], TEST_KEY)]  # only the pseudonymous key was kept
    _run(LAST, settings)
    keys = {who: hmac_key(account, TEST_KEY) for who, account in people.items()}
    return settings, people, keys, before


def _bronze_rows(settings: Settings, channel: str, key: str, days=NIGHTS) -> int:
    files = [settings.bronze_dir / channel / f"dt={day}" / "part-0.parquet" for day in days]
    return sum(pq.read_table(f, columns=["user_key"]).column(0).to_pylist().count(key) for f in files)


def _snapshot_users(settings: Settings, family: str, day: date) -> set[str]:
    path = settings.snapshots_dir / family / f"dt={day}" / "part-0.parquet"
    return set(pq.read_table(path, columns=["user_key"]).column(0).to_pylist())


def _redis_keys_of(settings: Settings, user_key: str) -> set[str]:
    """The feature views whose online record of `user_key` is in Redis."""
    client, prefix = redis.Redis(db=REDIS_DB), f"millet:{settings.project}:"
    return {key[len(prefix):].split(b":")[0].decode()
            for key in client.scan_iter(match=f"{prefix}*", count=1000) if user_key.encode() in key}


def test_the_forgotten_are_gone_from_every_zone_but_the_records_the_law_keeps(world):
    """Mutations that fail it: an erasure skipping quarantine (masked or sealed lines), the warehouse, the
    state, old snapshots or the online store."""
    settings, people, keys, before = world
    forgotten = {keys["via_feed"], keys["via_cli"]}
    found = scan_for(settings.root, forgotten, skip=NOT_MILLETS)
    assert not {where for where in found if not where.startswith(KEPT)}, found
    assert [_redis_keys_of(settings, key) for key in forgotten] == [set(), set()]
    sealed = [q["shown"] for q in shown_quarantine(settings, "commerce", str(NIGHTS[0]))
              if isinstance(q["shown"], str)]
    assert not [s for s in sealed if people["via_feed"] in s]
    assert [s for s in sealed if people["bystander"] in s]
    # What the law keeps stays, pseudonymous: every loan row as before, and never an account id there.
    for who in ("via_feed", "via_cli"):
        assert _bronze_rows(settings, "loans", keys[who], NIGHTS[:2]) == before[who] > 0
    loans = next((settings.bronze_dir / "loans").glob("dt=*/*.parquet"))
    assert "account_id" not in pq.read_schema(loans).names
    # The bystander is untouched, quarantine included.
    bystander = scan_for(settings.root, {keys["bystander"]}, skip=NOT_MILLETS)
    assert any(w.startswith("quarantine/commerce/") for w in bystander)
    assert any(w.startswith(f"snapshots/{fam}/") for w in bystander for fam in behaviour_families())
    tombstones = pq.read_table(settings.tombstones_path).to_pylist()
    assert {(t["user_key"], t["source"]) for t in tombstones} == {
        (keys["via_feed"], "deletions feed"), (keys["via_cli"], "millet forget")}
    assert not list((settings.erasure_dir / "requests").glob("*.parquet"))  # applied, then removed


def test_a_re_sent_event_does_not_bring_them_back(world):
    """Mutation that fails it: ingestion ignoring the tombstones."""
    settings, _, keys, _ = world
    manifest = json.loads((settings.manifests_dir / "ingest" / "device" / f"dt={LAST}.json").read_text())
    assert manifest["excluded_erased"] >= 1 and manifest["balanced"]
    assert _bronze_rows(settings, "device", keys["via_feed"]) == 0
    assert keys["via_feed"] not in _snapshot_users(settings, "credit", LAST)  # loans feed the state only


def test_consent_withdrawal_clears_behaviour_and_keeps_the_rest(world):
    """Mutations that fail it: a withdrawal that only stops new events (yesterday's windows would still
    serve their behaviour), or one that erases their loan book too."""
    settings, _, keys, _ = world
    key = keys["withdraws"]
    found = scan_for(settings.root, {key}, skip=NOT_MILLETS)
    behaviour = ([f"bronze/{c}/" for c in behaviour_channels()]
                 + [f"warehouse/millet.duckdb:int_{c}__" for c in behaviour_channels()]
                 + [f"snapshots/{f}/" for f in behaviour_families()]
                 + [f"state/state_{f}__" for f in behaviour_families()])
    assert not [w for w in found if w.startswith(tuple(behaviour))], found
    assert _redis_keys_of(settings, key) == {"credit"}
    assert any(w.startswith("bronze/consent/") for w in found)  # the withdrawal itself is a record
    assert [d for d in NIGHTS if key in _snapshot_users(settings, "credit", d)] == NIGHTS  # still served
    assert {fam.name for fam in families()} - set(behaviour_families()) == {"credit"}
