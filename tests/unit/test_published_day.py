"""Which day the online store serves, read from the intervals Feast records as materialized ([start, end),
as Millet's materialization engine reads snapshots)."""

from datetime import date, datetime, timedelta

import pytest

from millet.serving.store import latest_day_loaded, snapshot_timestamp
from millet.settings import Settings
from millet.transform.dbt import record_build

BUILT = [date(2026, 3, 1) + timedelta(days=n) for n in range(10)]  # 2026-03-01 … 2026-03-10


@pytest.fixture
def settings(tmp_path):
    settings = Settings(data_root=tmp_path, pseudonym_key="k")
    for day in BUILT:
        record_build(day, {}, settings)
    return settings


def _midnight(day: str) -> datetime:
    return datetime.fromisoformat(f"{day}T00:00:00+00:00")


def _loaded(start: str, end: str, settings: Settings) -> date | None:
    return latest_day_loaded([(_midnight(start), _midnight(end))], settings)


def test_a_night_s_one_second_interval_names_its_day(settings):
    stamp = snapshot_timestamp(date(2026, 3, 4))  # materialize_day's interval
    assert latest_day_loaded([(stamp, stamp + timedelta(seconds=1))], settings) == date(2026, 3, 4)


def test_a_person_s_own_range_names_the_newest_snapshot_inside_it(settings):
    # `feast materialize 2026-03-03T00:00:00 2026-03-07T00:00:00` loads the snapshots stamped Mar 3 … Mar 6
    # (the end is excluded): as-of days Mar 2 … Mar 5. The newest is Mar 5, not Mar 2 (the day before START).
    assert _loaded("2026-03-03", "2026-03-07", settings) == date(2026, 3, 5)
    # One microsecond later, Mar 6's snapshot (stamped Mar 7, 00:00) is inside. Naive times are UTC.
    assert latest_day_loaded([(datetime(2026, 3, 3), datetime(2026, 3, 7, 0, 0, 0, 1))], settings) \
        == date(2026, 3, 6)


def test_a_range_past_the_last_build_names_the_last_build_and_one_before_any_build_names_nothing(settings):
    assert _loaded("2026-03-08", "2026-04-30", settings) == date(2026, 3, 10)
    assert _loaded("2026-01-01", "2026-02-01", settings) is None
    assert latest_day_loaded([], settings) is None


def test_the_latest_of_several_intervals_wins_whatever_their_order(settings):
    nights = [(snapshot_timestamp(d), snapshot_timestamp(d) + timedelta(seconds=1)) for d in BUILT[:5]]
    manual = (_midnight("2026-03-02"), _midnight("2026-03-04"))
    assert latest_day_loaded([*reversed(nights), manual], settings) == date(2026, 3, 5)
