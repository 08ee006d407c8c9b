"""Feast objects derived from the feature spec; features/*.py exposes them to `feast apply`."""

from __future__ import annotations

from datetime import timedelta
from functools import cache

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.data_format import ParquetFormat
from feast.types import Float32, Int32

from millet.feature_spec import Family, families
from millet.serving.store import DEFAULT_SERVICE
from millet.settings import get_settings

FEAST_DTYPE = {"int32": Int32, "float32": Float32}
OWNER = "risk-data@millet.example"
# A snapshot is stamped when its day closes; a day or two of grace keeps serving through one missed run,
# after which a point-in-time join returns nulls rather than stale behaviour.
SNAPSHOT_TTL = timedelta(days=2)


@cache
def user_entity() -> Entity:
    return Entity(
        name="user",
        join_keys=["user_key"],
        value_type=ValueType.STRING,
        description="A person in the ecosystem, by pseudonymous key (HMAC of the account id).",
        owner=OWNER,
    )


@cache
def snapshot_sources() -> tuple[FileSource, ...]:
    return tuple(_snapshot_source(fam) for fam in families())


def _snapshot_source(fam: Family) -> FileSource:
    return FileSource(
        name=fam.name,
        path=str(get_settings().snapshots_dir / fam.name),
        file_format=ParquetFormat(),
        timestamp_field="event_timestamp",
        description=f"Daily snapshots of dbt model {fam.model}, Hive-partitioned by as-of date.",
        tags={"dbt_model": fam.model},
        owner=OWNER,
    )


@cache
def feature_views() -> tuple[FeatureView, ...]:
    return tuple(_feature_view(fam, src) for fam, src in zip(families(), snapshot_sources(), strict=True))


def _feature_view(fam: Family, source: FileSource) -> FeatureView:
    return FeatureView(
        name=fam.name,
        entities=[user_entity()],
        ttl=SNAPSHOT_TTL,
        schema=[
            Field(
                name=f.name,
                dtype=FEAST_DTYPE[f.dtype],
                description=f.description,
                tags={"family": f.family, "stage": f.stage, "window_days": str(f.window_days or ""),
                      "agg": f.agg, "consent_bound": str(f.consent_bound).lower()},
            )
            for f in fam.features
        ],
        source=source,
        online=True,
        description=fam.description,
        owner=OWNER,
        tags={"family": fam.name, "dbt_model": fam.model,
              "consent_bound": str(any(f.consent_bound for f in fam.features)).lower()},
    )


@cache
def feature_services() -> tuple[FeatureService, ...]:
    # The spine serves every family to the pre-loan credit-risk model; the issue on Feast serving
    # splits services by decision (credit_risk, repayment_ability, financial_demand).
    return (
        FeatureService(
            name=DEFAULT_SERVICE,
            features=list(feature_views()),
            description="Pre-loan access and pricing.",
            owner=OWNER,
            tags={"decision": "access,pricing", "stage": "pre_loan"},
        ),
    )
