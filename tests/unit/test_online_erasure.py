"""Deleting a person's online records leaves none of their bytes in the SQLite file."""

from feast import RepoConfig

from millet.serving.definitions import feature_views
from millet.serving.online.stores import PackedSqliteOnlineStore, string_entity_keys

GONE, KEPT = "erase-me-5f1c2a9e0d7b4c3a", "keep-me-8a7b6c5d4e3f2a1b"


def test_deleted_records_leave_no_bytes_behind(tmp_path):
    """Mutation that fails it: leaving the write-ahead log with its old pages. (Deleting without
    secure_delete would keep the bytes in the freed cell, but Debian's SQLite has it on by default, so that
    mutation passes here.)"""
    config = RepoConfig(project="p", provider="local", registry=str(tmp_path / "registry.db"),
                        online_store={"type": "millet.serving.online.stores.PackedSqliteOnlineStore",
                                      "path": str(tmp_path / "online.db")},
                        entity_key_serialization_version=3, repo_path=str(tmp_path))
    store, view = PackedSqliteOnlineStore(), feature_views()[0]
    store.update(config, [], [view], [], [], partial=False)
    others = [f"{KEPT}-{n:03d}" for n in range(200)]  # pages full of others, as in a real store
    keys = string_entity_keys([GONE, *others], "user_key", config)
    store._put(config, view, [(key, key * 40) for key in keys])  # records of a kilobyte or so

    store.delete_records(config, view, keys[:1])

    on_disk = b"".join(p.read_bytes() for p in tmp_path.glob("online.db*"))
    assert GONE.encode() not in on_disk and others[-1].encode() in on_disk
    assert set(store.read_records(config, view, keys)) == set(keys[1:])
