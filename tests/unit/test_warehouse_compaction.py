"""An erasure leaves none of the person's bytes in the warehouse file, and the warehouse still works."""

import duckdb

from millet.privacy.zones import Scope, purge
from millet.settings import Settings
from tests.conftest import TEST_KEY

GONE, KEPT = "erase-me-5f1c2a9e0d7b4c3a", "keep-me-8a7b6c5d4e3f2a1b"


def test_an_erasure_leaves_no_bytes_of_the_person_in_the_warehouse_file(tmp_path):
    """Mutation that fails it: the warehouse's rows deleted without the file being rewritten (DuckDB keeps
    them in its free blocks). The bystanders' keys are found in the same raw bytes: the search can see a
    key where one is stored."""
    settings = Settings(data_root=tmp_path / "data", pseudonym_key=TEST_KEY.decode())
    settings.warehouse_path.parent.mkdir(parents=True)
    others = [f"{KEPT}-{n:03d}" for n in range(300)]
    with duckdb.connect(str(settings.warehouse_path)) as con:  # as dbt leaves it: tables, a view
        con.execute("create table int_device__daily as select unnest($keys) as user_key, 1 as events",
                    {"keys": [GONE, *others]})
        con.execute('create view fct_device as select * from "millet"."main"."int_device__daily"')

    removed = purge({GONE}, Scope.EVERYTHING, settings)

    assert removed == {"warehouse": 1}
    on_disk = b"".join(p.read_bytes() for p in settings.warehouse_path.parent.iterdir())
    assert GONE.encode() not in on_disk and others[-1].encode() in on_disk
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        assert sorted(k for (k,) in con.execute("select user_key from fct_device").fetchall()) == others
    assert [p.name for p in settings.warehouse_path.parent.iterdir()] == ["millet.duckdb"]
