"""The simulator as a component: determinism, faults at their rates, contracts, and real signal."""

from __future__ import annotations

import gzip
import json
import zlib
from collections import Counter, defaultdict
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from millet.contracts import contracts
from millet.ingest.validate import check_lines
from millet.simulate import simulate
from millet.simulate.faults import RECORD_FAULTS, Faults

START = date(2026, 1, 1)
WORLD_DAYS = 60  # first instalments fall due 30 days after disbursement; late ones up to 20 after that
SYNC_FAILURE = START + timedelta(days=34)


def read_drop(folder):
    """(lines, extra empty files, files whose gzip stream is broken, files with data), read independently.

    A day with no events is delivered as one empty file; only an empty file beside others is a fault.
    """
    lines, empty, broken, with_data = [], 0, 0, 0
    paths = sorted(folder.glob("*.jsonl.gz"))
    for path in paths:
        try:
            text = gzip.decompress(path.read_bytes()).decode()
        except (EOFError, OSError, zlib.error):
            broken += 1
            continue
        empty += text == "" and len(paths) > 1
        with_data += text != ""
        lines += [line for line in text.split("\n") if line]
    return lines, empty, broken, with_data


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    simulate(root / "landing", users=8_000, days=WORLD_DAYS, start=START, seed=21,
             faults=Faults(bank_sync_failure_day=SYNC_FAILURE, bank_sync_loss=0.5), truth_dir=root / "truth")
    return root


def _rows(world, channel, days):
    out = []
    for offset in days:
        out += [json.loads(line) for line in read_drop(world / "landing" / channel /
                                                      f"dt={START + timedelta(days=offset)}")[0]]
    return out


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    def run(name, seed):
        files = simulate(tmp_path / name / "landing", users=500, days=2, start=START, seed=seed,
                         faults=Faults.realistic(START))
        return {f.relative_to(tmp_path / name): f.read_bytes() for f in files}

    assert run("a", 11) == run("b", 11)
    assert run("a", 11) != run("c", 12)


def test_every_channel_and_the_truth_are_written(world):
    assert {p.name for p in (world / "landing").iterdir()} == set(contracts())
    users = pq.read_table(world / "truth" / "users.parquet")
    assert users.num_rows == 8_000
    assert {"risk", "pd", "consent", "market", "income"} <= set(users.column_names)
    assert 0.01 < 1 - np.mean(users.column("consent").to_numpy()) < 0.06  # a few percent decline


def test_every_clean_line_validates_against_its_contract(world):
    checked = Counter()
    for channel, contract in contracts().items():
        for offset in (0, 35):
            day = START + timedelta(days=offset)
            closes = datetime.combine(day + timedelta(days=1), time(), tzinfo=UTC)
            lines = read_drop(world / "landing" / channel / f"dt={day}")[0]
            verdicts = check_lines(lines, contract, closes)
            refused = [(line, why) for line, why in zip(lines, verdicts, strict=True) if why]
            assert not refused, (channel, day, refused[:3])
            checked[channel] += len(lines)
    assert all(checked[channel] > 0 for channel in contracts()), checked


def test_default_rate_differs_clearly_between_risk_deciles(world):
    loans = pq.read_table(world / "truth" / "loans").to_pandas()
    users = pq.read_table(world / "truth" / "users.parquet").to_pandas()
    loans = loans.merge(users[["account_id", "risk"]], on="account_id")
    assert 0.01 < loans["defaulted"].mean() < 0.08  # "a few percent"
    decile = np.digitize(loans["risk"], np.quantile(loans["risk"], np.linspace(0.1, 0.9, 9)))
    top, bottom = loans["defaulted"][decile == 9].mean(), loans["defaulted"][decile == 0].mean()
    assert top > bottom + 0.05 and top > 4 * bottom


def _risk_of(world):
    users = pq.read_table(world / "truth" / "users.parquet").to_pandas()
    return dict(zip(users["account_id"], users["risk"], strict=True))


BEHAVIOUR_SIGNALS = {
    # channel: (what the event says, as a number), read straight off the raw event
    "device": lambda r: int(r["event_ts"][11:13]) < 5,  # night-time session
    "appstore": lambda r: r["category"] in ("loan", "gambling"),
    "commerce": lambda r: r["payment_type"] == "instalment",
    "forum": lambda r: r["action"] == "reported",
    "payments": lambda r: r["status"] == "declined_insufficient_funds",
}


@pytest.mark.parametrize("channel", sorted(BEHAVIOUR_SIGNALS))
def test_a_behaviour_on_each_channel_correlates_with_latent_risk(world, channel):
    risk = _risk_of(world)
    rows = _rows(world, channel, range(3))
    signal = np.array([BEHAVIOUR_SIGNALS[channel](r) for r in rows], float)
    r = np.corrcoef(signal, [risk[row["account_id"]] for row in rows])[0, 1]
    assert r > 0.04, f"{channel}: correlation {r:.3f} over {len(rows)} events"


def test_riskier_users_apply_for_loans_more_often(world):
    risk = _risk_of(world)
    applications = Counter(r["account_id"] for r in _rows(world, "loans", range(WORLD_DAYS))
                           if r["event_type"] == "application")
    accounts = list(risk)
    r = np.corrcoef([applications[a] for a in accounts], [risk[a] for a in accounts])[0, 1]
    assert r > 0.05


def test_the_bank_sync_failure_day_loses_repayments_the_app_recorded(world):
    paid_on = defaultdict(set)
    for row in _rows(world, "loans", range(WORLD_DAYS)):
        if row["event_type"] == "repayment":
            paid_on[row["event_ts"][:10]].add((row["loan_id"], row["instalment_no"]))
    at_bank = {(r["loan_id"], r["instalment_no"]) for r in _rows(world, "bank_repayments", range(WORLD_DAYS))}

    failed = paid_on[str(SYNC_FAILURE)]
    missing = failed - at_bank
    assert len(failed) > 10
    assert 0.2 < len(missing) / len(failed) < 0.8  # half lost, on a small sample
    # Every other day with room for the bank's lag (up to 2 days and some hours) reached the bank in full.
    for day, paid in paid_on.items():
        if day != str(SYNC_FAILURE) and day < str(START + timedelta(days=WORLD_DAYS - 3)):
            assert paid <= at_bank, day


RATE = 0.02
FAULTY = Faults(duplicate=RATE, late=RATE, **dict.fromkeys(RECORD_FAULTS, RATE), empty_file=0.5,
                truncated_gzip=0.3)


def _observed_faults(root, days):
    """Count each fault in the landing lines by looking at them, without the simulator's log."""
    seen = Counter()
    for channel, contract in contracts().items():
        numeric = {f.name for f in contract.schema if f.type in (pa.int32(), pa.int64(), pa.float64())}
        for offset in range(days):
            day = str(START + timedelta(days=offset))
            lines, empty, broken, with_data = read_drop(root / channel / f"dt={day}")
            seen.update(empty_file=empty, truncated_gzip=broken, parts=broken + with_data, channel_days=1,
                        lines=len(lines))
            ids = Counter()
            for line in lines:
                try:
                    record = json.loads(line)
                except ValueError:
                    seen["malformed"] += 1
                    continue
                ids[record["event_id"]] += 1
                seen[_fault_of(record, day, numeric, late_possible=channel != "bank_repayments")] += 1
            seen["duplicate"] += sum(n - 1 for n in ids.values())
    return seen


def _fault_of(record: dict, day: str, numeric: set, late_possible: bool) -> str:
    ts = record.get("event_ts")
    numbers = [record.get(n) for n in numeric]
    if ts is None:
        return "missing_field"
    if not isinstance(ts, str) or any(isinstance(v, str) for v in numbers):
        return "bad_type"
    if "unheard_of" in record.values():
        return "unknown_enum"
    if any(isinstance(v, int | float) and not 0 <= v < 10**12 for v in numbers):
        return "bad_amount"
    if ts[:10] > day:
        return "future_timestamp"
    if "promo_channel" in record:
        return "schema_drift"
    if ts[:10] < day and late_possible:
        return "late"
    return "clean"


def test_each_fault_appears_at_its_rate_and_not_when_off(tmp_path):
    days = 4
    simulate(tmp_path / "faulty", users=3_000, days=days, start=START, seed=5, faults=FAULTY)
    seen = _observed_faults(tmp_path / "faulty", days)
    for name in (*RECORD_FAULTS, "duplicate"):
        assert RATE * 0.75 < seen[name] / seen["lines"] < RATE * 1.25, (name, seen[name], seen["lines"])
    # Late lines are counted when they arrive, so the first day has none to show.
    assert RATE * 0.5 < seen["late"] / seen["lines"] < RATE * 1.25, seen["late"]
    # File faults: binomial over channel-days (empty) and part files (truncated); wide bounds.
    assert 0.25 * seen["channel_days"] < seen["empty_file"] < 0.75 * seen["channel_days"]
    assert 0.15 * seen["parts"] < seen["truncated_gzip"] < 0.45 * seen["parts"]

    simulate(tmp_path / "clean", users=3_000, days=days, start=START, seed=5)
    clean = _observed_faults(tmp_path / "clean", days)
    switched_off = (*RECORD_FAULTS, "duplicate", "late", "truncated_gzip", "empty_file")
    assert {name: clean[name] for name in switched_off} == dict.fromkeys(switched_off, 0)


def test_the_bank_sees_riskier_borrowers_repay_later(world):
    risk = _risk_of(world)
    disbursed = {r["loan_id"]: (date.fromisoformat(r["event_ts"][:10]), r["account_id"])
                 for r in _rows(world, "loans", range(WORLD_DAYS)) if r["event_type"] == "disbursement"}
    # Only instalments whose whole payment window (20 days late + 2 days' bank lag) is in the data.
    fully_seen = START + timedelta(days=WORLD_DAYS - 23)
    late, borrower_risk = [], []
    for r in _rows(world, "bank_repayments", range(WORLD_DAYS)):
        on, account = disbursed[r["loan_id"]]
        due = on + timedelta(days=30 * r["instalment_no"])
        if due <= fully_seen:
            late.append((date.fromisoformat(r["event_ts"][:10]) - due).days > 2)  # beyond the bank's lag
            borrower_risk.append(risk[account])
    r = np.corrcoef(late, borrower_risk)[0, 1]
    assert len(late) > 100
    assert r > 0.15, f"correlation {r:.3f} over {len(late)} bank records"


def test_millet_simulate_takes_its_days_start_and_seed_from_the_settings(tmp_path, monkeypatch):
    """`millet simulate` without --days, --start and --seed: the demo's days and start and the seed
    setting, not literals of its own. Mutation that fails it: any of the three hard-coded again."""
    from typer.testing import CliRunner

    from millet import cli

    def landing(root: str, *options: str) -> dict[str, bytes]:
        monkeypatch.setenv("MILLET_DATA_ROOT", str(tmp_path / root))
        done = CliRunner().invoke(cli.app, ["simulate", "--users", "20", "--no-faults", *options])
        assert done.exit_code == 0, done.output
        drops = sorted((tmp_path / root / "landing").rglob("*.gz"))
        return {str(p.relative_to(tmp_path / root)): p.read_bytes() for p in drops}

    settings = {"MILLET_DEMO_DAYS": "3", "MILLET_DEMO_START": "2026-02-10", "MILLET_SEED": "11"}
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    by_settings = landing("settings")
    assert {Path(p).parent.name for p in by_settings} == {"dt=2026-02-10", "dt=2026-02-11", "dt=2026-02-12"}
    assert landing("told", "--days", "3", "--start", "2026-02-10", "--seed", "11") == by_settings
    assert landing("other-seed", "--seed", "12") != by_settings
