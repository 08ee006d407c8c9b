"""One Parquet source per feature family: the dbt mart's daily snapshots (tagged with the dbt model)."""

from millet.serving.definitions import snapshot_sources

# Generated from the feature spec; Feast collects module-level objects, so each is exported by name.
globals().update({f"{source.name}_source": source for source in snapshot_sources()})
