"""An erasure leaves none of the person's bytes in the warehouse file, and the warehouse still works."""

import fcntl
from datetime import date

import duckdb
import pytest

from millet.privacy.erasure import DueErasures, ensure_tombstones
from millet.privacy.zones import compact_warehouse
from millet.settings import Settings
from tests.conftest import TEST_KEY

GONE, KEPT = "erase-me-5f1c2a9e0d7b4c3a", "keep-me-8a7b6c5d4e3f2a1b"


def _warehouse(tmp_path, keys: list[str]) -> Settings:
    """A warehouse as dbt leaves it (a table, a view naming it with the catalog), holding `keys`."""
    settings = Settings(data_root=tmp_path / "data", pseudonym_key=TEST_KEY.decode())
    settings.warehouse_path.parent.mkdir(parents=True)
    with duckdb.connect(str(settings.warehouse_path)) as con:
        con.execute("create table int_device__daily as select unnest($keys) as user_key, 1 as events",
                    {"keys": keys})
        con.execute('create view fct_device as select * from "millet"."main"."int_device__daily"')
    return settings


def test_an_erasure_leaves_no_bytes_of_the_person_in_the_warehouse_file(tmp_path):
    """Mutation that fails it: the warehouse's rows deleted without the file being rewritten (DuckDB keeps
    them in its free blocks). The bystanders' keys are found in the same raw bytes: the search can see a
    key where one is stored."""
    others = [f"{KEPT}-{n:03d}" for n in range(300)]
    settings = _warehouse(tmp_path, [GONE, *others])
    ensure_tombstones(settings)

    summary = DueErasures(date(2026, 1, 2), 1, {GONE: "millet forget"}, frozenset(), ()).apply(settings)

    assert summary["rows_removed"] == {"warehouse": 1}
    on_disk = b"".join(p.read_bytes() for p in settings.warehouse_path.parent.glob("millet.duckdb*"))
    assert GONE.encode() not in on_disk and others[-1].encode() in on_disk
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        assert sorted(k for (k,) in con.execute("select user_key from fct_device").fetchall()) == others
    assert not settings.warehouse_path.with_name(".millet.duckdb.compacting").exists()


def test_a_second_compaction_is_refused_while_one_runs(tmp_path):
    """Mutation that fails it: no lock (two would write the same copy, and one swap in the other's)."""
    settings = _warehouse(tmp_path, [KEPT])
    lock = settings.warehouse_path.with_name(".millet.duckdb.compaction-lock")
    with open(lock, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(RuntimeError, match="another process is compacting"):
            compact_warehouse(settings)
    compact_warehouse(settings)  # once it is let go
