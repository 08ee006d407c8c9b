"""The feature space, recomputed in plain Python from the simulator's landing lines, equals dbt's.

A 40-day world (so 1-, 7- and 30-day windows and the 7d/30d trend really bind), with late and
re-sent events but no record faults (every line is valid, so the reference needs no validator).
The reference reads only what had ARRIVED by the as-of day (the landing folder's date), keeps each
event's first delivery, and drops behaviour of users whose consent had not arrived as a yes.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import subprocess
import sys
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from unittest import mock

import pyarrow.parquet as pq
import pytest
from pydantic import SecretStr

from millet.contracts import contracts
from millet.feature_spec import all_features
from millet.ingest import ingest_channel_day
from millet.quality.checkpoint import check_features
from millet.quality.feeds import check_feeds
from millet.quality.reconcile import ReconciliationFailed, reconcile_repayments
from millet.quality.report import TOP_DRIFT, write_report
from millet.serving import open_store
from millet.settings import Settings
from millet.simulate import simulate
from millet.simulate.faults import Faults
from millet.simulate.run import write_drop
from millet.transform import build_features, snapshot_path
from tests.chromium import render
from tests.conftest import TEST_KEY
from tests.e2e.processes import assert_nothing_left, backfill_process
from tests.helpers import hmac_key, ingest_days, landing_lines

START = date(2026, 1, 1)
DAYS = 40
AS_OF = START + timedelta(days=DAYS - 1)
WINDOWS = (1, 7, 30, 90, 180)
TRENDS = ((7, 30), (30, 180))
SYNC_FAILURE = AS_OF - timedelta(days=6)  # the bank's feed misses that day's repayments
BEHAVIOUR = {"device", "appstore", "commerce", "forum", "payments"}


# ---- the reference: aggregations over rows, written from the spec's definitions ----------------
Row = dict
Pred = Callable[[Row], bool]
ALL: Pred = lambda r: True  # noqa: E731


@dataclass(frozen=True)
class Agg:
    kind: str
    when: Pred = ALL
    value: Callable[[Row], float] | None = None  # for sums, means, maxima
    of: Pred | None = None  # the denominator's rows, for shares and means
    of_value: Callable[[Row], float] | None = None  # a share of sums rather than of counts

    def over(self, rows: list[Row], as_of: date):
        hit = [r for r in rows if self.when(r)]
        if self.kind == "count":
            return len(hit)
        if self.kind == "sum":
            return sum(self.value(r) for r in hit)
        if self.kind == "max":
            return max((self.value(r) for r in hit), default=None)
        if self.kind == "days_since_last":
            return (as_of - max(r["_day"] for r in hit)).days if hit else None
        if self.kind == "days_active":
            return len({r["_day"] for r in hit})
        if self.kind == "distinct":
            return len({self.value(r) for r in hit})
        # mean and share: a ratio of two totals over the same window
        top = sum(self.value(r) for r in hit) if self.value else len(hit)
        base_rows = [r for r in rows if self.of(r)]
        base = sum(self.of_value(r) for r in base_rows) if self.of_value else len(base_rows)
        return top / base if base else None


def amount(r):
    return r["amount"]


def is_(**wanted) -> Pred:
    return lambda r: all(r[k] == v for k, v in wanted.items())


# A sample of the spec: every family, every aggregation kind; each checked at every window (and trend).
CHECKS: dict[str, tuple[str, dict[str, Agg]]] = {
    "device__sessions": ("device", {"count": Agg("count"), "days_active": Agg("days_active"),
                                    "days_since_last": Agg("days_since_last")}),
    "device__screen_seconds": ("device", {
        "sum": Agg("sum", value=lambda r: r["screen_seconds"]),
        "mean": Agg("mean", value=lambda r: r["screen_seconds"], of=ALL),
        "max": Agg("max", value=lambda r: r["screen_seconds"])}),
    "device__night_sessions": ("device", {"share": Agg("share", when=lambda r: r["_hour"] < 5, of=ALL)}),
    "device__sessions_games": ("device", {"count": Agg("count", when=is_(top_app_category="games")),
                                          "share": Agg("share", when=is_(top_app_category="games"), of=ALL)}),
    "appstore__installs_loan": ("appstore", {
        "count": Agg("count", when=is_(action="install", category="loan")),
        "share": Agg("share", when=is_(action="install", category="loan"), of=is_(action="install")),
        "days_since_last": Agg("days_since_last", when=is_(action="install", category="loan"))}),
    "appstore__apps_installed": ("appstore", {
        "distinct": Agg("distinct", when=is_(action="install"), value=lambda r: r["app_id"])}),
    "commerce__order_amount": ("commerce", {
        "sum": Agg("sum", when=is_(status="placed"), value=amount),
        "mean": Agg("mean", when=is_(status="placed"), value=amount, of=is_(status="placed"))}),
    "forum__actions_reported": ("forum", {"count": Agg("count", when=is_(action="reported"))}),
    "forum__boards": ("forum", {
        "distinct": Agg("distinct", when=lambda r: r["action"] != "reported", value=lambda r: r["board"])}),
    "forum__account_age_days": ("forum", {"max": Agg("max", value=lambda r: r["account_age_days"])}),
    "payments__amount_paid_grocery": ("payments", {
        "sum": Agg("sum", when=is_(status="approved", merchant_category="grocery"), value=amount),
        "share": Agg("share", when=is_(status="approved", merchant_category="grocery"), value=amount,
                     of=is_(status="approved"), of_value=amount)}),
    "payments__insufficient_funds_declines": ("payments", {
        "share": Agg("share", when=is_(status="declined_insufficient_funds"), of=ALL)}),
    "credit__approvals": ("loans", {
        "share": Agg("share", when=is_(event_type="decision", approved=True),
                     of=is_(event_type="decision"))}),
    "credit__on_time_repayments": ("loans", {
        "count": Agg("count", when=is_(event_type="repayment", days_past_due=0))}),
    "credit__amount_bank_repaid": ("bank_repayments", {"sum": Agg("sum", value=amount)}),
}


def expected(rows: list[Row], as_of: date) -> dict[str, object]:
    """Every sampled feature of one user (rows: that user's known rows of one channel each)."""
    out = {}
    for stem, (channel, aggs) in CHECKS.items():
        mine = [r for r in rows if r["_channel"] == channel]
        for kind, agg in aggs.items():
            for w in WINDOWS:
                out[f"{stem}_{kind}_{w}d"] = agg.over(_in_window(mine, as_of, w), as_of)
            if kind in ("count", "sum"):
                for short, long in TRENDS:
                    recent = agg.over(_in_window(mine, as_of, short), as_of)
                    longer = agg.over(_in_window(mine, as_of, long), as_of)
                    out[f"{stem}_{kind}_trend_{short}d_{long}d"] = (
                        (recent / short) / (longer / long) if longer else None)
    return out


def _in_window(rows: list[Row], as_of: date, window: int) -> list[Row]:
    return [r for r in rows if as_of - timedelta(days=window) < r["_day"] <= as_of]


def expected_loan_book(rows: list[Row], as_of: date) -> dict[str, object]:
    """The loan-book state features, from one user's known loan and bank rows."""
    rows = [r for r in rows if r["_day"] <= as_of]
    loans = [r for r in rows if r["_channel"] == "loans"]
    disbursed = {r["loan_id"]: r for r in loans if r["event_type"] == "disbursement"}
    repaid = defaultdict(set)
    for r in loans:
        if r["event_type"] == "repayment":
            repaid[r["loan_id"]].add(r["instalment_no"])
    active = {i: d for i, d in disbursed.items() if len(repaid[i]) < d["term_months"]}
    open_notices = [r for r in loans if r["event_type"] == "overdue"
                    and r["instalment_no"] not in repaid[r["loan_id"]]]
    late_now = max(((as_of - (r["_day"] - timedelta(days=r["days_past_due"]))).days for r in open_notices),
                   default=0)
    booked = {(r["loan_id"], r["instalment_no"]) for r in rows if r["_channel"] == "bank_repayments"}
    settled = as_of - timedelta(days=2)  # the bank's booking lag
    unconfirmed = [r for r in loans if r["event_type"] == "repayment" and r["_day"] < settled
                   and (r["loan_id"], r["instalment_no"]) not in booked]
    first = min((d["_day"] for d in disbursed.values()), default=None)
    return {
        "credit__loans_active_now": len(active),
        "credit__outstanding_instalments_now": sum(d["term_months"] - len(repaid[i])
                                                   for i, d in active.items()),
        "credit__days_past_due_now": late_now,
        "credit__repayments_unconfirmed_by_bank_now": len(unconfirmed),
        "credit__loans_paid_off_total": len(disbursed) - len(active),
        "credit__months_on_book_now": None if first is None else _whole_months(first, as_of),
    }


def _whole_months(first: date, last: date) -> int:
    months = (last.year - first.year) * 12 + last.month - first.month
    return months - (last.day < first.day)  # a month not yet complete does not count


# ---- the world -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("features")
    settings = Settings(data_root=root / "data", pseudonym_key=TEST_KEY.decode())
    faults = Faults(duplicate=0.03, late=0.03, bank_sync_failure_day=SYNC_FAILURE, bank_sync_loss=1.0)
    simulate(settings.landing_dir, users=1_000, days=DAYS, start=START, seed=11, faults=faults,
             truth_dir=settings.truth_dir)
    ingest_days(settings, START, DAYS)
    build_features(AS_OF, settings)
    return settings


def known_rows(settings: Settings, as_of: date) -> dict[str, list[Row]]:
    """account id → every event that had arrived by the end of `as_of`, first delivery only."""
    seen, consent, by_account = set(), {}, defaultdict(list)
    for offset in range((as_of - START).days + 1):
        arrival = START + timedelta(days=offset)
        for channel in ["consent", *sorted(set(contracts()) - {"consent"})]:
            for line in landing_lines(settings.landing_dir, channel, str(arrival)):
                row = json.loads(line)
                if row["event_id"] in seen:
                    continue
                seen.add(row["event_id"])
                if channel == "consent":
                    consent[row["account_id"]] = row["consent_given"]
                    continue
                if channel in BEHAVIOUR and not consent.get(row["account_id"], False):
                    continue  # consent as known on the day the event arrived
                stamp = datetime.fromisoformat(row["event_ts"])
                by_account[row["account_id"]].append(
                    row | {"_channel": channel, "_day": stamp.date(), "_hour": stamp.hour})
    return by_account


def snapshot_rows(settings: Settings, as_of: date, user_key: str) -> dict[str, object]:
    values = {}
    for family in {f.family for f in all_features()}:
        table = pq.read_table(snapshot_path(family, as_of, settings)).to_pylist()
        values |= next((r for r in table if r["user_key"] == user_key), {})
    return values


def _same(actual, wanted) -> bool:
    if wanted is None or actual is None:
        return actual is wanted
    if not isinstance(wanted, float):
        return actual == wanted
    return math.isclose(actual, wanted, rel_tol=2e-6)  # stored as float32


def sample_accounts(rows: dict[str, list[Row]]) -> list[str]:
    """The busiest user of each channel, a user with loans, and a few at random."""
    picks = set()
    for channel in ("device", "appstore", "forum", "payments", "commerce", "loans", "bank_repayments"):
        picks.add(max(rows, key=lambda a: sum(r["_channel"] == channel for r in rows[a])))
    picks |= set(random.Random(4).sample(sorted(rows), 4))
    return sorted(picks)


# ---- the tests -----------------------------------------------------------------------------------
def test_sampled_features_equal_a_plain_python_recomputation(world):
    rows = known_rows(world, AS_OF)
    sampled = {f for f in expected(rows[next(iter(rows))], AS_OF)}
    assert sampled <= {f.name for f in all_features()}, sampled - {f.name for f in all_features()}
    kinds = {f.agg for f in all_features() if f.name in sampled}
    assert kinds == {"count", "sum", "mean", "share", "max", "days_since_last", "days_active", "distinct",
                     "trend"}
    compared = 0
    for account in sample_accounts(rows):
        actual = snapshot_rows(world, AS_OF, hmac_key(account, TEST_KEY))
        wanted = expected(rows[account], AS_OF) | expected_loan_book(rows[account], AS_OF)
        present = {k: v for k, v in wanted.items() if k in actual}
        # A family's snapshot holds only users active in it within the longest window: for the others,
        # the reference must find nothing either.
        absent = {k: v for k, v in wanted.items() if k not in actual}
        assert all(v in (0, None) for v in absent.values()), (account, absent)
        mismatched = {k: (actual[k], v) for k, v in present.items() if not _same(actual[k], v)}
        assert not mismatched, (account, mismatched)
        compared += len(present)
    assert compared > 1_000, compared


def test_the_loan_book_really_moves_and_a_lost_bank_sync_shows(world):
    """Not trivially zero in this world: loans active, late and repaid; and every repayment the bank's
    feed lost on the sync-failure day shows up as unconfirmed, as the simulator's truth counts them."""
    table = pq.read_table(snapshot_path("credit", AS_OF, world))
    totals = {name: sum(v or 0 for v in table.column(name).to_pylist()) for name in (
        "credit__loans_active_now", "credit__days_past_due_now", "credit__on_time_repayments_count_30d",
        "credit__repayments_unconfirmed_by_bank_now")}
    assert all(totals.values()), totals
    truth = json.loads((world.truth_dir / "faults" / f"dt={SYNC_FAILURE}.json").read_text())
    assert totals["credit__repayments_unconfirmed_by_bank_now"] == truth["bank_sync"]["repayments_lost"]


def test_the_reconciliation_alerts_on_the_lost_sync_and_no_payer_shows_overdue(world, webhook):
    """The bank's feed lost the sync-failure day's repayments: once the booking lag has passed, each is a
    row of the reconciliation table and the critical alert counts them, with their amount and borrowers.
    Their borrowers paid: the credit family, which follows the lender's own ledger, shows each of them
    exactly as late as the ledger says (zero for those with no open overdue notice), not overdue."""
    rows = known_rows(world, AS_OF)
    lost = _lost_repayments(rows, AS_OF)
    truth = json.loads((world.truth_dir / "faults" / f"dt={SYNC_FAILURE}.json").read_text())
    assert len(lost) == truth["bank_sync"]["repayments_lost"] > 0
    assert {r["_day"] for r in lost} == {SYNC_FAILURE}
    affected = {r["_user_key"]: r["_account"] for r in lost}

    with pytest.raises(ReconciliationFailed):
        reconcile_repayments(AS_OF, world.model_copy(update={"alert_webhook_url": SecretStr(webhook.url)}))

    alert = webhook.next()["millet"]
    assert (alert["severity"], alert["check"], alert["logical_date"]) == (
        "critical", "repayment_reconciliation", str(AS_OF))
    assert alert["counts"]["unconfirmed"] == len(lost) and alert["counts"]["users"] == len(affected)
    assert alert["counts"]["amount"] == pytest.approx(sum(r["amount"] for r in lost))
    assert set(alert["sample_keys"]) <= set(affected) and alert["sample_keys"]
    credit = {r["user_key"]: r for r in pq.read_table(snapshot_path("credit", AS_OF, world)).to_pylist()}
    ledger = {key: expected_loan_book(rows[account], AS_OF)["credit__days_past_due_now"]
              for key, account in affected.items()}
    assert {key: credit[key]["credit__days_past_due_now"] for key in affected} == ledger
    assert 0 in ledger.values()  # borrowers with nothing overdue at all are among them


def test_the_nightly_report_shows_its_plots_in_chromium(world, tmp_path):
    """The day's page after the real checks, rendered by headless Chromium: seven volume charts, the 20
    most drifting features, the unbooked repayments; a screenshot that is not blank; no console error."""
    baseline = AS_OF - timedelta(days=7)
    build_features(baseline, world)
    pinned = world.model_copy(update={"drift_baseline_date": baseline})
    check_feeds(AS_OF, pinned)
    check_features(AS_OF, pinned)  # 40 days of history: still warming up, so drift only warns
    blank = tmp_path / "blank.html"
    blank.write_text("<!doctype html><html><body></body></html>")

    screenshot, dom, logged = render(write_report(AS_OF, pinned), tmp_path)

    assert dom.count('aria-label="psi"') == 1 and dom.count("<rect") >= TOP_DRIFT + len(contracts())
    for channel in contracts():
        assert f'aria-label="{channel}"' in dom, channel
    assert "repayments" in dom and "not booked by the bank" in dom  # the lost sync day, 6 days back
    assert "CONSOLE" not in logged and "Uncaught" not in logged, logged[-2000:]
    docs = re.findall(r'<a href="file://([^"]+)">GX validation</a>', dom)  # each check's Data Docs page
    assert len(docs) == len(contracts()) + len({f.family for f in all_features()})
    assert all(Path(page).is_file() and "Validation Result" in Path(page).read_text() for page in docs)
    blank_shot, _, _ = render(blank, tmp_path)
    assert screenshot.stat().st_size > 5 * blank_shot.stat().st_size  # plots, not an empty page


def _snapshot_bytes(settings: Settings, day: date) -> dict[str, bytes]:
    return {f: snapshot_path(f, day, settings).read_bytes() for f in {f.family for f in all_features()}}


def test_rebuilding_a_date_gives_identical_snapshots(world):
    before = _snapshot_bytes(world, AS_OF)
    build_features(AS_OF, world)
    assert _snapshot_bytes(world, AS_OF) == before


def test_a_late_event_changes_no_snapshot_before_its_arrival(world):
    earlier, arrival = AS_OF - timedelta(days=3), AS_OF + timedelta(days=1)
    build_features(earlier, world)
    before = {day: _snapshot_bytes(world, day) for day in (earlier, AS_OF)}
    rows = known_rows(world, AS_OF)
    account = max(rows, key=lambda a: sum(r["_channel"] == "device" for r in rows[a]))
    # A session from the day before `earlier`, delivered only after AS_OF.
    late = {"event_id": "dev-late-planted", "event_ts": f"{earlier - timedelta(days=1)}T12:00:00.000000Z",
            "account_id": account, "device_id": None, "phone": None, "screen_seconds": 600,
            "app_launches": 4, "top_app_category": "games", "is_charging": False, "sim_changed": False,
            "city_changed": False, "os_version": "14", "device_model": "pro"}
    write_drop(world.landing_dir / "device" / f"dt={arrival}" / "part-0000.jsonl.gz", [json.dumps(late)])
    for channel in ("consent", "device"):
        ingest_channel_day(channel, arrival, world)

    for day in (earlier, AS_OF):  # what was known then has not changed
        build_features(day, world)
        assert _snapshot_bytes(world, day) == before[day], day
    build_features(arrival, world)  # the day it arrived, it counts, at its own event date
    key = hmac_key(account, TEST_KEY)
    after = snapshot_rows(world, arrival, key)
    wanted = expected(known_rows(world, arrival)[account], arrival)
    assert after["device__sessions_count_7d"] == wanted["device__sessions_count_7d"]
    assert after["device__sessions_count_7d"] == 1 + sum(
        1 for r in known_rows(world, AS_OF)[account]
        if r["_channel"] == "device" and arrival - timedelta(days=7) < r["_day"] <= arrival)


@pytest.mark.e2e
def test_the_first_night_past_the_lag_alerts_through_the_dag_and_publishes_nothing(world, webhook, mailbox):
    """The real DAG (`millet backfill`, a scheduler) on the first night the lost sync is past the bank's
    booking lag, after a clean night: the reconciliation task fails with a critical alert at a real webhook
    and mailbox, the publication never starts, the online store still serves what the clean night
    published, and no borrower who always paid on time shows days past due."""
    clean, night = SYNC_FAILURE + timedelta(days=2), SYNC_FAILURE + timedelta(days=3)
    settings = world.model_copy(update={
        "alert_webhook_url": SecretStr(webhook.url), "alert_smtp_host": "127.0.0.1",
        "alert_smtp_port": mailbox.port, "alert_email_to": "oncall@lender.example"})
    build_features(clean, settings)
    assert reconcile_repayments(clean, settings)["unconfirmed"] == 0
    _publish_in_own_process(clean, settings)
    rows = known_rows(world, night)
    payers, lost = _punctual_payers(rows), _lost_repayments(rows, night)
    assert payers & {r["_user_key"] for r in lost}, "no punctual borrower lost a repayment: nothing to see"

    with backfill_process(settings, str(night), str(night)) as process:
        out, err = process.communicate(timeout=1200)  # a safety net: the stall limit ends it sooner
    assert_nothing_left(settings)

    assert process.returncode == 1, out[-3000:] + err[-3000:]
    assert re.search(rf"^{night}: failed.*reconcile_repayments", out, re.MULTILINE), out
    posted = [p["millet"] for p in webhook.all()]
    critical = [a for a in posted if a["check"] == "repayment_reconciliation"]
    assert [(a["severity"], a["logical_date"]) for a in critical] == [("critical", str(night))]
    assert critical[0]["counts"]["unconfirmed"] == len(lost) > 0
    failed_tasks = [a["dataset"] for a in posted if a["check"] == "task_failed"]
    assert failed_tasks == ["millet_nightly.reconcile_repayments"]
    mailed = [m["Subject"] for m in mailbox.all()]
    assert any(s.startswith("[CRITICAL] Millet repayment_reconciliation") for s in mailed), mailed

    served = {r["user_key"]: r for r in pq.read_table(snapshot_path("credit", clean, settings)).to_pylist()}
    tonight = {r["user_key"]: r for r in pq.read_table(snapshot_path("credit", night, settings)).to_pylist()}
    moved = sorted(k for k in served.keys() & tonight.keys() if served[k] != tonight[k])
    assert moved, "the night's snapshot equals the night before's: a publication could not be seen"
    keys = [*moved[:20], *sorted(payers)[:20]]
    with mock.patch.dict(os.environ):  # Feast reads its paths from the environment: keep the session's
        store = open_store(settings)
        online = store.get_online_features(features=store.get_feature_service("credit_risk_v1"),
                                           entity_rows=[{"user_key": k} for k in keys]).to_dict()
    for i, key in enumerate(keys):  # still the night before's values
        mismatched = {name: (values[i], served[key][name]) for name, values in online.items()
                      if name in served[key] and not _same(values[i], served[key][name])}
        assert not mismatched, (key, mismatched)
    overdue = {key: tonight[key]["credit__days_past_due_now"] for key in payers & tonight.keys()}
    assert overdue and not any(overdue.values()), overdue  # the lender's ledger decides, not the bank


def _lost_repayments(rows: dict[str, list[Row]], as_of: date) -> list[Row]:
    """Repayments the lender recorded that the bank had not booked once its two-day lag had passed."""
    booked = {(r["loan_id"], r["instalment_no"]) for rs in rows.values() for r in rs
              if r["_channel"] == "bank_repayments"}
    return [r | {"_account": account, "_user_key": hmac_key(account, TEST_KEY)}
            for account, rs in rows.items() for r in rs
            if r["_channel"] == "loans" and r["event_type"] == "repayment"
            and r["_day"] < as_of - timedelta(days=2) and (r["loan_id"], r["instalment_no"]) not in booked]


def _publish_in_own_process(day: date, settings: Settings) -> None:
    """Feast imports its repository once per process, for the session's data root: another data root is
    published from a process of its own, as an Airflow task would."""
    code = f"from millet.serving import publish_features; publish_features({str(day)!r})"
    subprocess.run([sys.executable, "-c", code], env={**os.environ, **settings.millet_environ()},
                   check=True, capture_output=True, timeout=600)


def _punctual_payers(rows: dict[str, list[Row]]) -> set[str]:
    """Borrowers who repaid and never had an overdue notice nor a late repayment (from the landing zone)."""
    loans = {account: [r for r in rs if r["_channel"] == "loans"] for account, rs in rows.items()}
    return {hmac_key(account, TEST_KEY) for account, rs in loans.items()
            if any(r["event_type"] == "repayment" for r in rs)
            and not any(r["event_type"] == "overdue" or r["days_past_due"] for r in rs)}
