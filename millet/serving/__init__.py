"""Feast glue: build definitions from the spec, apply the registry, materialize, look up online."""

from millet.serving.store import online_features, open_store, publish_features

__all__ = ["online_features", "open_store", "publish_features"]
