"""`millet forget` while the night's erasure runs: a request that lands while the zones are purged is
applied the next night, not deleted unread."""

from __future__ import annotations

from datetime import date

import pyarrow.parquet as pq

from millet.privacy import erasure
from millet.settings import Settings
from tests.conftest import TEST_KEY

DAY = date(2026, 3, 1)


def _tombstoned(settings: Settings) -> set[str]:
    return set(pq.read_table(settings.tombstones_path, columns=["user_key"]).column(0).to_pylist())


def test_a_request_filed_while_the_zones_are_purged_is_applied_the_next_night(tmp_path, monkeypatch):
    """Mutation that fails it: every request file deleted after the purge, read or not."""
    settings = Settings(data_root=tmp_path / "data", pseudonym_key=TEST_KEY.decode())
    first = erasure.forget(["A100000000001"], settings)
    purge, late = erasure.purge, []

    def purge_while_a_request_lands(keys, scope, settings):
        if not late:  # the operator's `millet forget`, mid-purge
            late.extend(erasure.forget(["A100000000002"], settings))
        return purge(keys, scope, settings)

    monkeypatch.setattr(erasure, "purge", purge_while_a_request_lands)
    assert erasure.apply_erasures(DAY, settings)["forgotten"] == 1
    assert _tombstoned(settings) == set(first)

    monkeypatch.setattr(erasure, "purge", purge)
    assert erasure.apply_erasures(DAY, settings)["forgotten"] == 1  # the next night
    assert _tombstoned(settings) == set(first) | set(late)
    assert list((settings.erasure_dir / "requests").glob("*.parquet")) == []
