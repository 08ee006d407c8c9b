"""State carried from night to night: rolled windows equal a from-scratch rebuild, every feature and every
window, on a world longer than the longest window (events leave every window, users drop out of it, late
events arrive); a history built in one pass equals the same 30 nights built one by one; a re-base
compares the two and alerts on any difference; and the loan book of a borrower whose last event left the
longest window long ago is still served."""

from __future__ import annotations

import json
import shutil
from datetime import date, timedelta

import duckdb
import pyarrow.parquet as pq
import pytest

from millet.alerts import alert_log
from millet.feature_spec import all_features, families
from millet.settings import Settings
from millet.simulate import simulate
from millet.simulate.faults import Faults
from millet.simulate.run import write_drop
from millet.transform import build_features, snapshot_path
from millet.transform.dbt import (
    build_history,
    dbt_target_dir,
    read_build,
    reconciliation_path,
    state_differences,
    state_models,
    state_path,
    user_slices_dir,
)
from tests.conftest import TEST_KEY
from tests.helpers import hmac_key, ingest_days

START = date(2025, 5, 1)
DAYS = 200
LONGEST = max(max(f.window_days for f in all_features() if f.window_days), 1)
LAST = START + timedelta(days=DAYS - 1)
FIRST_ROLLED = LAST - timedelta(days=29)  # rolled nights: events leave every window, the longest included
NIGHTS = [FIRST_ROLLED - timedelta(days=1) + timedelta(days=n) for n in range((LAST - FIRST_ROLLED).days + 2)]


@pytest.fixture(scope="module")
def rolled(tmp_path_factory):
    """A 200-day world; built from scratch the night before FIRST_ROLLED, then rolled night by night."""
    root = tmp_path_factory.mktemp("rolling")
    settings = Settings(data_root=root / "data", pseudonym_key=TEST_KEY.decode(), rebase_every_days=0,
                        state_retention_days=len(NIGHTS))  # the first night's state is looked at below
    simulate(settings.landing_dir, users=60, days=DAYS, start=START, seed=21,
             faults=Faults(duplicate=0.02, late=0.05), truth_dir=settings.truth_dir)
    for (channel, day), lines in _old_loans().items():
        write_drop(settings.landing_dir / channel / f"dt={day}" / "part-9000.jsonl.gz", lines)
    ingest_days(settings, START, DAYS)
    shutil.copytree(settings.data_root, root / "before-the-nights")  # for the history built in one pass
    for night in NIGHTS:
        build_features(night, settings)
        PARSED.setdefault("after the first night", _parsed_at(settings))
    PARSED["after the last night"] = _parsed_at(settings)
    return settings


PARSED = {}  # when dbt last wrote its parse of the project (partial_parse.msgpack)


def _parsed_at(settings: Settings) -> int:
    return (dbt_target_dir(settings) / "partial_parse.msgpack").stat().st_mtime_ns


@pytest.fixture(scope="module")
def one_pass(rolled):
    """The same world's nights built by one history build, from the same bronze, each state model in 2
    slices of users (the nights ran each as one query)."""
    settings = rolled.model_copy(update={"data_root": rolled.data_root.parent / "before-the-nights",
                                         "state_user_slices": 2})
    build_history(NIGHTS[0], NIGHTS[-1], settings)
    return settings


# Two borrowers whose every loan event is older than the longest window on the last night.
PAID_OFF, DEFAULTED = "A900000000001", "A900000000002"
DUE = START + timedelta(days=14)  # the defaulted loan's first instalment, never paid


def _loan_event(account: str, day: date, n: int, **fields) -> str:
    return json.dumps({
        "event_id": f"lon-planted-{account}-{n}", "event_ts": f"{day}T09:00:00.000000Z",
        "account_id": account, "device_id": None, "phone": None, "loan_id": f"L-{account}",
        "product": "cash_loan", "amount": None, "term_months": None, "approved": None,
        "instalment_no": None, "days_past_due": None, **fields})


def _old_loans() -> dict[tuple[str, date], list[str]]:
    """(channel, arrival day) → lines: one loan paid off (and booked by the bank a day later), one whose
    first instalment fell overdue and whose notices then stopped."""
    paid_on, booked_on, notice_on = (START + timedelta(days=n) for n in (10, 11, 15))
    booking = {"event_id": "bank-planted-1", "event_ts": f"{booked_on}T08:00:00.000000Z",
               "account_id": PAID_OFF, "loan_id": f"L-{PAID_OFF}", "instalment_no": 1, "amount": 1000.0}
    return {
        ("loans", START): [
            _loan_event(PAID_OFF, START, 0, event_type="disbursement", amount=1000.0, term_months=1),
            _loan_event(DEFAULTED, START, 0, event_type="disbursement", amount=3000.0, term_months=3)],
        ("loans", paid_on): [_loan_event(PAID_OFF, paid_on, 1, event_type="repayment", amount=1000.0,
                                         instalment_no=1, days_past_due=0)],
        ("bank_repayments", booked_on): [json.dumps(booking)],
        ("loans", notice_on): [_loan_event(DEFAULTED, notice_on, 1, event_type="overdue", amount=1000.0,
                                           instalment_no=1, days_past_due=(notice_on - DUE).days)],
    }


def _snapshots(settings: Settings, day: date) -> dict[str, bytes]:
    return {fam.name: snapshot_path(fam.name, day, settings).read_bytes() for fam in families()}


def _window_users(settings: Settings, day: date) -> set[str]:
    return set(_window_users_of(settings, "state_credit__windows", day))


def _window_users_of(settings: Settings, model: str, day: date) -> list[str]:
    return pq.read_table(state_path(model, day, settings), columns=["user_key"]).column(0).to_pylist()


def _sliced_models(settings: Settings) -> set[str]:
    """The state models the last dbt run compiled to read one slice of users at a time. (Run with the
    slice variables unset, or for fewer than every slice, such a model would lose rows: the tests
    compare every row.)"""
    compiled = dbt_target_dir(settings) / "compiled" / "millet" / "models" / "state"
    condition = "getvariable('user_slice_from')"
    return {path.stem for path in compiled.rglob("*.sql") if condition in path.read_text()}


def _daily(settings: Settings, sql: str) -> list[tuple]:
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        return con.sql(sql).fetchall()


def test_rolled_nights_equal_a_rebuild_of_every_feature_and_window(rolled):
    records = {d: read_build(d, rolled) for d in (FIRST_ROLLED - timedelta(days=1), FIRST_ROLLED, LAST)}
    assert [r["state"] for r in records.values()] == ["rebuilt", "rolled", "rolled"]
    # The rolled nights saw what a rolling bug would get wrong: late events, and the longest window's
    # oldest day leaving it every night (some users with it).
    late = _daily(rolled, f"select count(*) from int_device__user_daily where arrived_on > event_date "
                          f"and arrived_on between date '{FIRST_ROLLED}' and date '{LAST}'")[0][0]
    assert late > 0
    rolled_snapshots = _snapshots(rolled, LAST)
    # A borrower's last event (an overdue notice) left the longest window on a rolled night.
    defaulted = hmac_key(DEFAULTED, TEST_KEY)
    assert defaulted in _window_users(rolled, FIRST_ROLLED - timedelta(days=1))
    assert defaulted not in _window_users(rolled, LAST)

    # The re-base runs each state model in 3 slices of users (the rolled nights ran each as one query).
    build_features(LAST, rolled.model_copy(update={"state_user_slices": 3}), rebase=True)

    record = read_build(LAST, rolled)
    assert record["state"] == "rebuilt"
    assert _sliced_models(rolled) == set(state_models(rolled))
    assert not user_slices_dir(rolled).exists()  # the slices' files are removed after the build
    assert set(record["rolled_vs_rebuilt"].values()) == {0}  # every state model, every column
    assert _snapshots(rolled, LAST) == rolled_snapshots  # every feature, every window, byte for byte
    table = pq.read_table(snapshot_path("payments", LAST, rolled))
    for window in (1, 7, 30, 90, LONGEST):  # the windows really hold values
        assert sum(table.column(f"payments__attempts_count_{window}d").to_pylist()) > 0


def test_no_night_after_the_first_re_parses_the_dbt_project(rolled):
    """Each run's as-of day and re-base flag reach dbt outside --vars (run_var), so the first night's parse
    (a rebuild) serves the rolled nights after it: dbt rewrites its parse only when it parses again.
    Mutation, checked on a 500-user world: the day in --vars rewrites the file every night."""
    assert PARSED["after the first night"] == PARSED["after the last night"]


def test_a_history_built_in_one_pass_equals_the_nights_built_one_by_one(rolled, one_pass):
    records = [read_build(night, one_pass) for night in NIGHTS]
    assert _sliced_models(one_pass) == set(state_models(one_pass))
    assert [r["state"] for r in records] == ["rebuilt"] + ["rolled"] * (len(NIGHTS) - 1)
    for night in NIGHTS:  # every family's snapshot and the reconciliation, byte for byte
        assert _snapshots(one_pass, night) == _snapshots(rolled, night), night
        assert (reconciliation_path(night, one_pass).read_bytes()
                == reconciliation_path(night, rolled).read_bytes()), night
    # It leaves the state the nights left (every row; the nights' last one was since re-based), from
    # which the next night rolls alike.
    models = sorted(p.parent.parent.name for p in rolled.state_dir.glob(f"*/dt={LAST}/*.parquet"))
    assert len(models) == len(state_models(rolled))
    assert {m: state_differences(state_path(m, LAST, one_pass), state_path(m, LAST, rolled), rolled)
            for m in models} == dict.fromkeys(models, 0)


def test_the_loan_book_of_borrowers_inactive_for_longer_than_any_window_is_served(rolled):
    last_event = max(day for _, day in _old_loans())
    assert (LAST - last_event).days > LONGEST  # their last event left every window long ago
    credit = {r["user_key"]: r for r in pq.read_table(snapshot_path("credit", LAST, rolled)).to_pylist()}
    paid_off, defaulted = (credit[hmac_key(a, TEST_KEY)] for a in (PAID_OFF, DEFAULTED))
    keys = {hmac_key(account, TEST_KEY) for account in (PAID_OFF, DEFAULTED)}
    assert not keys & _window_users(rolled, LAST)

    loan_book = {k.removeprefix("credit__"): v for k, v in paid_off.items()
                 if k.endswith(("_now", "_total", "_ever"))}
    assert loan_book == {
        "loans_active_now": 0, "outstanding_instalments_now": 0, "days_past_due_now": 0,
        "days_past_due_max_ever": 0, "repayments_unconfirmed_by_bank_now": 0,
        "amount_disbursed_total": 1000.0, "amount_repaid_total": 1000.0, "loans_paid_off_total": 1,
        "loans_cured_total": 0, "months_on_book_now": 6}  # 2025-05-01 to 2025-11-16: six whole months
    assert defaulted["credit__loans_active_now"] == 1
    assert defaulted["credit__outstanding_instalments_now"] == 3
    assert defaulted["credit__days_past_due_now"] == (LAST - DUE).days
    assert defaulted["credit__days_past_due_max_ever"] == (LAST - DUE).days
    assert defaulted["credit__loans_paid_off_total"] == 0
    assert paid_off["credit__disbursements_count_180d"] == 0  # their windows are empty, not missing
    assert paid_off["credit__applications_days_since_last_180d"] is None


def test_a_wrong_rolled_value_is_found_by_the_re_base_and_alerted(rolled):
    yesterday = state_path("state_forum__windows", LAST - timedelta(days=1), rolled)
    state = pq.read_table(yesterday)
    counts = state.column("rows_in_window").to_pylist()
    busy = next(i for i, n in enumerate(counts) if n > 3)  # still in the window tonight
    counts[busy] += 1  # one user's state off by one
    pq.write_table(state.set_column(state.column_names.index("rows_in_window"), "rows_in_window", [counts]),
                   yesterday)
    try:
        build_features(LAST, rolled)  # rolled from the planted state: the bug reaches tonight's state
        assert read_build(LAST, rolled)["state"] == "rolled"
        build_features(LAST, rolled, rebase=True)
    finally:
        pq.write_table(state, yesterday)

    record = read_build(LAST, rolled)
    # That user's row, as rolled and as rebuilt.
    assert {m: n for m, n in record["rolled_vs_rebuilt"].items() if n} == {"state_forum__windows": 2}
    alerts = [json.loads(line) for line in alert_log(rolled).read_text().splitlines()]
    assert [(a["check"], a["dataset"], a["severity"], a["counts"], a["report"]) for a in alerts] == [
        ("rolled_state_matches_rebuild", "state_forum__windows", "warning", {"rows_differing": 2},
         str(rolled.root / "reports" / f"dt={LAST}.html"))]  # the night's report, as every alert links to
