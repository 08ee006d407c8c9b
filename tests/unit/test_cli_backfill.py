"""`millet backfill` exits with a failure when a day of the range was not run, and refuses a range that
ends on a day not yet over."""

from datetime import UTC, datetime

import pytest
from typer.testing import CliRunner

from millet import cli, orchestrate
from millet.settings import Settings


def _invoke(monkeypatch, outcome: dict[str, str]):
    monkeypatch.setattr(orchestrate, "backfill", lambda start, end, reprocess: outcome)
    return CliRunner().invoke(cli.app, ["backfill", "--start", min(outcome), "--end", max(outcome)])


def test_a_day_not_run_fails_the_command(monkeypatch):
    """A day Airflow skipped because an earlier run of it is still marked running (an interrupted `millet
    run`): nothing was built that day. Mutation that fails it: only "failed" days fail the command."""
    result = _invoke(monkeypatch, {"2026-03-01": "already exists",
                                   "2026-03-02": "not run: its earlier run is still marked running",
                                   "2026-03-03": "success"})
    assert result.exit_code == 1
    assert "2026-03-02: not run" in result.output and "some days were not run" in result.output


def test_days_that_succeeded_now_or_before_end_it_well(monkeypatch):
    result = _invoke(monkeypatch, {"2026-03-01": "already exists", "2026-03-02": "success"})
    assert result.exit_code == 0, result.output


def test_a_range_that_ends_today_is_refused_before_anything_runs(tmp_path):
    """Airflow creates a backfill run only once its day is over, and would leave today out without a word.
    Mutation that fails it: the check removed (the backfill then starts Airflow on the empty root)."""
    today = datetime.now(UTC).date()
    with pytest.raises(orchestrate.BackfillFailed, match=f"{today} is not over yet"):
        orchestrate.backfill(today, today, Settings(data_root=tmp_path / "data"))
    assert not (tmp_path / "data").exists()  # nothing ran: not even Airflow's metadata database
