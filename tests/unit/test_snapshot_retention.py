from datetime import date, timedelta

from millet.feature_spec import families
from millet.settings import Settings
from millet.transform.dbt import prune_snapshots


def test_snapshots_older_than_the_retention_are_deleted_and_the_rest_kept(tmp_path):
    settings = Settings(data_root=tmp_path, pseudonym_key="k", snapshot_retention_days=10)
    as_of = date(2026, 3, 31)
    days = [as_of - timedelta(days=n) for n in (0, 9, 10, 11, 40)]
    for fam in families():
        for day in days:
            (settings.snapshots_dir / fam.name / f"dt={day}").mkdir(parents=True)

    prune_snapshots(as_of, settings)

    for fam in families():
        kept = sorted(p.name for p in (settings.snapshots_dir / fam.name).iterdir())
        assert kept == [f"dt={d}" for d in sorted(days[:3])]  # 10 days back is still kept


def test_a_retention_of_zero_keeps_everything(tmp_path):
    settings = Settings(data_root=tmp_path, pseudonym_key="k", snapshot_retention_days=0)
    old = settings.snapshots_dir / families()[0].name / "dt=2000-01-01"
    old.mkdir(parents=True)
    assert prune_snapshots(date(2026, 3, 31), settings) == [] and old.exists()
