"""Snapshot pruning: relative to the latest successful build, never to a date someone typed; and the
rolling state's, relative to the night just built."""

from datetime import UTC, date, datetime, timedelta

import pytest
from pydantic import ValidationError

from millet.feature_spec import families
from millet.settings import Settings
from millet.transform import AsOfInFuture, build_features
from millet.transform.dbt import prune_snapshots, prune_state, record_build, state_models, state_path

RETENTION = 10


@pytest.fixture
def settings(tmp_path):
    return Settings(data_root=tmp_path, pseudonym_key="k", snapshot_retention_days=RETENTION)


def _plant(settings: Settings, days: list[date]) -> None:
    for fam in families():
        for day in days:
            (settings.snapshots_dir / fam.name / f"dt={day}").mkdir(parents=True)


def _kept(settings: Settings) -> dict[str, list[str]]:
    return {fam.name: sorted(p.name for p in (settings.snapshots_dir / fam.name).iterdir())
            for fam in families()}


def _expected(days: list[date], latest_build: date) -> dict[str, list[str]]:
    """Kept: every day no more than RETENTION days before the latest build (a later day stays too)."""
    kept = sorted(f"dt={d}" for d in days if (latest_build - d).days <= RETENTION)
    return {fam.name: kept for fam in families()}


def _built(settings: Settings, *days: date) -> None:
    for day in days:
        record_build(day, {}, settings)


def test_snapshots_older_than_the_retention_before_the_latest_build_are_deleted_and_the_rest_kept(settings):
    as_of = date(2026, 3, 31)
    days = [as_of - timedelta(days=n) for n in (0, 9, 10, 11, 40)]
    _plant(settings, days)
    _built(settings, as_of - timedelta(days=1), as_of)

    removed = prune_snapshots(as_of, settings)

    assert _kept(settings) == _expected(days, as_of)
    assert _kept(settings)[families()[0].name] == [f"dt={d}" for d in sorted(days[:3])]  # 10 days back kept
    assert len(removed) == 2 * len(families())


def test_a_date_typed_far_ahead_of_the_latest_build_prunes_only_what_that_build_would(settings):
    latest = date(2026, 3, 31)
    days = [latest - timedelta(days=n) for n in range(0, 60, 3)]
    typed = date(2026, 9, 30)  # a typo: six months past the last real day (still before today)
    _plant(settings, [*days, typed])  # as if the build for the typed day had just written its snapshot
    _built(settings, latest - timedelta(days=1), latest)

    prune_snapshots(typed, settings)

    assert _kept(settings) == _expected([*days, typed], latest)
    assert len(_kept(settings)[families()[0].name]) == 5  # 0, 3, 6, 9 days back and the typed day


def test_a_recorded_build_after_the_as_of_day_does_not_move_the_cutoff(settings):
    latest_real, typo = date(2026, 3, 31), date(2026, 9, 30)
    days = [latest_real - timedelta(days=n) for n in range(0, 30)]
    _plant(settings, days)
    _built(settings, latest_real, typo)  # a mistyped run that did succeed

    prune_snapshots(latest_real + timedelta(days=1), settings)  # the next real night

    assert _kept(settings) == _expected(days, latest_real)


def test_without_a_successful_build_nothing_is_pruned(settings):
    days = [date(2020, 1, 1), date(2026, 3, 31)]
    _plant(settings, days)
    assert prune_snapshots(date(2026, 3, 31), settings) == []
    assert _kept(settings) == {fam.name: [f"dt={d}" for d in days] for fam in families()}


def test_a_retention_of_zero_keeps_everything(tmp_path):
    settings = Settings(data_root=tmp_path, pseudonym_key="k", snapshot_retention_days=0)
    old = settings.snapshots_dir / families()[0].name / "dt=2000-01-01"
    old.mkdir(parents=True)
    _built(settings, date(2026, 3, 31))
    assert prune_snapshots(date(2026, 3, 31), settings) == [] and old.exists()


@pytest.mark.parametrize("typed", [date(2062, 3, 31), "tomorrow"])
def test_an_as_of_date_in_the_future_is_refused_before_dbt_runs_and_deletes_nothing(settings, typed):
    if typed == "tomorrow":  # taken when the test runs, not when it is collected: a run may cross midnight
        typed = datetime.now(UTC).date() + timedelta(days=1)
    days = [date(2026, 3, 31) - timedelta(days=n) for n in (0, 11, 40)]
    _plant(settings, days)
    _built(settings, *days)
    before = _kept(settings)

    with pytest.raises(AsOfInFuture, match=str(typed)):
        build_features(typed, settings)

    assert _kept(settings) == before
    assert not settings.warehouse_path.parent.exists()  # nothing was set up for dbt, let alone run
    assert not (settings.snapshots_dir / families()[0].name / f"dt={typed}").exists()


def test_state_past_its_retention_is_deleted_and_the_night_just_built_kept(tmp_path):
    """Each state model keeps the as-of day (the next night reads it) and the `state_retention_days` days
    before it, to re-run a recent night without a re-base. Mutations that fail it: no pruning; a retention
    counted one day off either way; a negative retention accepted (it would delete the night just built)."""
    settings = Settings(data_root=tmp_path, pseudonym_key="k", state_retention_days=2)
    night = date(2026, 3, 10)
    for model in state_models(settings):
        for before in range(6):
            state_path(model, night - timedelta(days=before), settings).parent.mkdir(parents=True)

    prune_state(night, settings)

    kept = {f"dt={night - timedelta(days=before)}" for before in range(3)}  # the night and the 2 before it
    models = state_models(settings)
    assert len(models) > 1
    assert {model: {p.name for p in (settings.state_dir / model).iterdir()} for model in models} == \
        dict.fromkeys(models, kept)
    with pytest.raises(ValidationError, match="state_retention_days"):
        Settings(data_root=tmp_path, pseudonym_key="k", state_retention_days=-1)
