"""How long raw drops and quarantined lines are kept: the zones that hold (or held) raw identifiers.

Landing holds every raw identifier as it arrived; it is kept only long enough to re-run a recent night
(`MILLET_LANDING_RETENTION_DAYS`). Quarantine holds refused lines, masked or sealed (quarantine.py),
long enough for the on-call engineer to look at a bad night (`MILLET_QUARANTINE_RETENTION_DAYS`). Both
are counted back from the night's own date, which is never in the future (the run refuses such dates).
"""

from __future__ import annotations

import json
import shutil
from datetime import date, timedelta

from millet.contracts import all_contracts
from millet.files import write_text
from millet.ingest.partition import partitions_before, remove_partitions_before
from millet.settings import Settings, get_settings


def purge_expired(day: str | date, settings: Settings | None = None) -> dict[str, int]:
    """Delete landing and quarantine partitions older than their retention before `day`; 0 keeps all."""
    settings = settings or get_settings()
    day = date.fromisoformat(str(day))
    removed = {"landing": [], "quarantine": []}
    if settings.landing_retention_days > 0:
        oldest = day - timedelta(days=settings.landing_retention_days)
        removed["landing"] = partitions_before(
            oldest, [settings.landing_dir / channel for channel in all_contracts()])
        for folder in removed["landing"]:  # marked before it goes: a purge cut short leaves none unmarked
            _mark_landing_removed(folder.parent.name, folder.name.removeprefix("dt="), settings)
            shutil.rmtree(folder)
    if settings.quarantine_retention_days > 0:
        oldest = day - timedelta(days=settings.quarantine_retention_days)
        folders = [settings.quarantine_dir / channel / sub
                   for channel in all_contracts() for sub in ("", "files")]
        removed["quarantine"] = remove_partitions_before(oldest, folders)
    return {zone: len(paths) for zone, paths in removed.items()}


def _mark_landing_removed(channel: str, day: str, settings: Settings) -> None:
    """The day's ingest manifest says its drop is gone: ingesting the day again keeps its bronze rather
    than replace it with nothing (millet.ingest.bronze). A drop a person removed is not so marked."""
    path = settings.ingest_manifest_path(channel, day)
    if path.exists():
        marked = json.loads(path.read_text()) | {"landing_removed": True}
        write_text(path, json.dumps(marked, indent=2) + "\n")
