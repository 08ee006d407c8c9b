"""Apply the Feast registry, materialize a snapshot online, and read features back."""

from __future__ import annotations

import bisect
import contextlib
import os
import sys
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

from millet.settings import Settings, get_settings

DEFAULT_SERVICE = "credit_risk_v1"
REGISTRY_STORE = "millet.serving.registry_store.AtomicFileRegistryStore"
ONLINE_STORES = {"sqlite": "millet.serving.online.stores.PackedSqliteOnlineStore",
                 "redis": "millet.serving.online.stores.PackedRedisOnlineStore"}
BATCH_ENGINE = "millet.serving.online.engine.SnapshotMaterializationEngine"
OFFLINE_STORE = "millet.serving.offline.asof.AsofDuckDBOfflineStore"
YAML_HEADER = """\
# Generated from Millet's settings at their defaults (millet.serving.store.feast_config): edit those, not
# this file. It is here for Feast's own CLI in this folder (`feast feature-views list`, `feast apply`, ...),
# which then reads the default data root (../.millet). For other settings (another data root, Redis), run
# `millet feast <command>`, which hands Feast this configuration for the settings in force.
"""


def feast_config(settings: Settings, relative_to: Path | None = None) -> dict:
    """Millet's Feast configuration: the one source of every FeatureStore Millet opens and of
    features/feature_store.yaml. Paths are absolute, or relative to `relative_to` (Feast takes a relative
    path from the repository folder)."""
    def where(path: Path) -> str:
        return os.path.relpath(path, relative_to) if relative_to else str(path)

    online: dict = {"type": ONLINE_STORES[settings.online_store]}
    if settings.online_store == "sqlite":
        online["path"] = where(settings.feast_dir / "online.db")
    else:
        online["connection_string"] = settings.redis_url
    return {
        "project": settings.project,
        "provider": "local",
        "registry": registry_config(settings, where),
        # One packed record per user per feature view, written by Millet's batch engine.
        "online_store": online,
        "batch_engine": {"type": BATCH_ENGINE, "duckdb": settings.duckdb_config()},
        # point-in-time joins as DuckDB ASOF joins
        "offline_store": {"type": OFFLINE_STORE, "duckdb": settings.duckdb_config()},
        "entity_key_serialization_version": 3,
    }


def registry_config(settings: Settings, where=str) -> dict:
    if settings.feast_registry_url:  # Feast's SQL registry: one for every host, in a transaction per write
        return {"registry_type": "sql", "path": settings.feast_registry_url, "cache_ttl_seconds": 60}
    # Replaced whole on each write: a killed publish never leaves half a registry.
    return {"path": where(settings.feast_dir / "registry.db"), "registry_store_type": REGISTRY_STORE}


def has_published(settings: Settings) -> bool:
    """Whether anything was ever applied to the registry (a file registry starts as no file)."""
    if not settings.feast_registry_url:
        return (settings.feast_dir / "registry.db").exists()
    return bool(open_store(settings).list_feature_views())


def repo_config(settings: Settings):
    from feast import RepoConfig

    return RepoConfig(repo_path=settings.feature_repo_dir, **feast_config(settings))


def feature_store_yaml(settings: Settings, relative: bool = True) -> str:
    """feature_store.yaml for these settings (paths relative to features/, or absolute)."""
    import yaml

    config = feast_config(settings, settings.feature_repo_dir if relative else None)
    return YAML_HEADER + yaml.safe_dump(config, sort_keys=False)


def open_store(settings: Settings | None = None):
    from feast import FeatureStore

    settings = settings or get_settings()
    settings.export()
    settings.feast_dir.mkdir(parents=True, exist_ok=True)
    return FeatureStore(repo_path=str(settings.feature_repo_dir), config=repo_config(settings))


def apply_registry(settings: Settings | None = None) -> None:
    """What `feast apply` does, on the repository in features/ (adds, updates and removes objects)."""
    from feast.repo_operations import apply_total

    settings = settings or get_settings()
    settings.export()
    settings.feast_dir.mkdir(parents=True, exist_ok=True)
    repo = settings.feature_repo_dir
    if str(repo) not in sys.path:
        sys.path.append(str(repo))  # as `feast apply` does: the repo's files import as top-level modules
    with _restore_cwd():
        apply_total(repo_config(settings), repo, skip_source_validation=False)


def publish_features(day: str | date, settings: Settings | None = None) -> dict:
    """Apply the registry and load the as-of `day` snapshot into the online store."""
    settings = settings or get_settings()
    apply_registry(settings)
    materialize_day(open_store(settings), day)
    return {"as_of": str(day), "snapshot_timestamp": snapshot_timestamp(day).isoformat(),
            "online_store": settings.online_store}


def store_over(snapshots_dir: Path, work_dir: Path, online_store: dict, batch_engine: dict | str = "local",
               project: str = "millet", keep=None, offline_store: str = OFFLINE_STORE):
    """A FeatureStore with Millet's objects (those features `keep` accepts) over snapshots in
    `snapshots_dir`, and the stores named: to compare online stores and engines on the same data."""
    from feast import FeatureStore, RepoConfig

    from millet.serving.definitions import feast_objects

    work_dir.mkdir(parents=True, exist_ok=True)
    config = RepoConfig(project=project, provider="local", registry=str(work_dir / "registry.db"),
                        online_store=online_store, batch_engine=batch_engine,
                        offline_store={"type": offline_store}, entity_key_serialization_version=3,
                        repo_path=str(work_dir))
    store = FeatureStore(config=config)
    store.apply(feast_objects(snapshots_dir, keep))
    return store


def materialize_day(store, day: str | date) -> None:
    """Load the as-of `day` snapshot: snapshots carry exactly one timestamp, the day's close."""
    stamp = snapshot_timestamp(day)
    store.materialize(start_date=stamp, end_date=stamp + timedelta(seconds=1))


def online_features(user_key: str, service: str = DEFAULT_SERVICE, settings: Settings | None = None) -> dict:
    store = open_store(settings)
    response = store.get_online_features(
        features=store.get_feature_service(service), entity_rows=[{"user_key": user_key}]
    ).to_dict()
    return {name: values[0] for name, values in response.items()}


def snapshot_timestamp(day: str | date) -> datetime:
    """The instant the as-of day closes: midnight UTC after it (dbt stamps snapshots the same way)."""
    day = date.fromisoformat(str(day))
    return datetime.combine(day + timedelta(days=1), time(), tzinfo=UTC)


def published_day(store, settings: Settings) -> date | None:
    """The latest as-of day loaded into the online store, from the intervals Feast's registry records as
    materialized; None when nothing was."""
    intervals = [i for view in store.list_feature_views() for i in view.materialization_intervals]
    return latest_day_loaded(intervals, settings)


def latest_day_loaded(intervals: list[tuple[datetime, datetime]], settings: Settings) -> date | None:
    """Of the days built, the latest whose snapshot timestamp lies inside one of the materialized
    `intervals`, [start, end) as the engine reads them: a night's (materialize_day: one second from the
    timestamp), or a person's own `feast materialize START END`, which loads the newest snapshot inside
    its range (not the day before START). Naive times are UTC. A range reaching past the last build (an
    end in the future) also covers the days built after it, as if they had been loaded."""
    from millet.transform.dbt import built_days

    days, loaded = built_days(settings), []
    for start, end in set(intervals):  # a night adds one per view
        start, end = (t.astimezone(UTC) if t.tzinfo else t.replace(tzinfo=UTC) for t in (start, end))
        before = bisect.bisect_right(days, (end - timedelta(days=1, microseconds=1)).date())  # stamped < end
        if before and snapshot_timestamp(days[before - 1]) >= start:
            loaded.append(days[before - 1])
    return max(loaded, default=None)


@contextlib.contextmanager
def _restore_cwd():
    # Feast's apply chdirs into the repo and imports its files by path relative to the cwd.
    cwd = os.getcwd()
    try:
        yield
    finally:
        os.chdir(cwd)

