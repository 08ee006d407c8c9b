"""Apply the Feast registry, materialize a snapshot online, and read features back."""

from __future__ import annotations

import contextlib
import os
import sys
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

from millet.settings import Settings, get_settings

DEFAULT_SERVICE = "credit_risk_v1"
OFFLINE_STORE = "millet.serving.offline.asof.AsofDuckDBOfflineStore"  # as in features/feature_store*.yaml


def store_yaml(settings: Settings) -> Path:
    suffix = "" if settings.online_store == "sqlite" else f".{settings.online_store}"
    return settings.feature_repo_dir / f"feature_store{suffix}.yaml"


def open_store(settings: Settings | None = None):
    from feast import FeatureStore

    settings = settings or get_settings()
    settings.export()
    settings.feast_dir.mkdir(parents=True, exist_ok=True)
    return FeatureStore(repo_path=str(settings.feature_repo_dir), fs_yaml_file=store_yaml(settings))


def apply_registry(settings: Settings | None = None) -> None:
    """What `feast apply` does, on the repository in features/ (adds, updates and removes objects)."""
    from feast.repo_config import load_repo_config
    from feast.repo_operations import apply_total

    settings = settings or get_settings()
    settings.export()
    settings.feast_dir.mkdir(parents=True, exist_ok=True)
    repo = settings.feature_repo_dir
    config = load_repo_config(repo, store_yaml(settings))
    if str(repo) not in sys.path:
        sys.path.append(str(repo))  # as `feast apply` does: the repo's files import as top-level modules
    with _restore_cwd():
        apply_total(config, repo, skip_source_validation=False)


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


@contextlib.contextmanager
def _restore_cwd():
    # Feast's apply chdirs into the repo and imports its files by path relative to the cwd.
    cwd = os.getcwd()
    try:
        yield
    finally:
        os.chdir(cwd)
