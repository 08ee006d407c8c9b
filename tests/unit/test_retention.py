"""Landing and quarantine are deleted after their retention, counted back from the night's date."""

import json
import shutil
from datetime import date, timedelta

import pytest

from millet.ingest import retention
from millet.ingest.retention import purge_expired
from millet.settings import Settings

NIGHT = date(2026, 3, 31)


def _partitions(settings: Settings) -> dict[str, set[date]]:
    zones = {"landing": settings.landing_dir / "commerce", "quarantine": settings.quarantine_dir / "commerce",
             "sealed files": settings.quarantine_dir / "commerce" / "files"}
    return {zone: {date.fromisoformat(p.name.removeprefix("dt=")) for p in folder.glob("dt=*")}
            for zone, folder in zones.items()}


def _make_days(settings: Settings, days: list[date]) -> None:
    for day in days:
        for folder in (settings.landing_dir / "commerce", settings.quarantine_dir / "commerce",
                       settings.quarantine_dir / "commerce" / "files"):
            (folder / f"dt={day}").mkdir(parents=True)
            (folder / f"dt={day}" / "part-0").write_bytes(b"x")


def test_each_zone_keeps_exactly_its_retention(tmp_path):
    """Mutations that fail it: quarantine's sealed files left behind, an off-by-one in either limit, or
    the landing limit applied to quarantine."""
    settings = Settings(data_root=tmp_path, landing_retention_days=3, quarantine_retention_days=10)
    days = [NIGHT - timedelta(days=n) for n in range(15)]
    _make_days(settings, days)

    assert purge_expired(NIGHT, settings) == {"landing": 11, "quarantine": 2 * 4}

    kept = _partitions(settings)
    assert kept["landing"] == {d for d in days if (NIGHT - d).days <= 3}
    assert kept["quarantine"] == kept["sealed files"] == {d for d in days if (NIGHT - d).days <= 10}


def test_zero_keeps_everything(tmp_path):
    settings = Settings(data_root=tmp_path, landing_retention_days=0, quarantine_retention_days=0)
    days = [NIGHT - timedelta(days=n) for n in range(400, 0, -50)]
    _make_days(settings, days)
    assert purge_expired(NIGHT, settings) == {"landing": 0, "quarantine": 0}
    assert all(kept == set(days) for kept in _partitions(settings).values())


def test_a_purge_cut_short_leaves_no_removed_drop_unmarked_and_stray_folders_alone(tmp_path, monkeypatch):
    """A day whose landing drop is gone must say so in its manifest, or ingesting it again replaces its
    bronze with nothing: the purge stops (killed, a disk error) after removing one drop. A folder that is
    not a day is no reason to stop. Mutation that fails it: every drop removed first, then the marks."""
    settings = Settings(data_root=tmp_path, landing_retention_days=3, quarantine_retention_days=0)
    days = [NIGHT - timedelta(days=n) for n in (5, 6)]
    _make_days(settings, days)
    (settings.landing_dir / "commerce" / f"dt={days[0]}.bak").mkdir()
    for day in days:
        manifest = settings.ingest_manifest_path("commerce", str(day))
        manifest.parent.mkdir(parents=True, exist_ok=True)
        manifest.write_text(json.dumps({"channel": "commerce", "dt": str(day)}))
    removals, rmtree = [], shutil.rmtree

    def remove_one_then_fail(path, *args, **kwargs):
        if removals:
            raise OSError("cut short")
        removals.append(path)
        rmtree(path)

    monkeypatch.setattr(retention.shutil, "rmtree", remove_one_then_fail)
    with pytest.raises(OSError, match="cut short"):
        purge_expired(NIGHT, settings)
    assert len(removals) == 1
    gone = days[1]  # the oldest goes first
    assert sorted(p.name for p in (settings.landing_dir / "commerce").iterdir()) == [
        f"dt={days[0]}", f"dt={days[0]}.bak"]
    assert json.loads(settings.ingest_manifest_path("commerce", str(gone)).read_text())["landing_removed"]
