"""Feast objects derived from the feature spec; features/*.py exposes them to `feast apply`."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from functools import cache
from pathlib import Path

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.data_format import ParquetFormat
from feast.types import Float32, Int32

from millet.feature_spec import Family, Feature, all_features, families
from millet.ingest.partition import PART_FILE
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
    return sources_under(get_settings().snapshots_dir)


def sources_under(snapshots_dir: Path) -> tuple[FileSource, ...]:
    return tuple(_snapshot_source(fam, snapshots_dir) for fam in families())


def _snapshot_source(fam: Family, snapshots_dir: Path) -> FileSource:
    return FileSource(
        name=fam.name,
        path=str(snapshots_dir / fam.name),
        file_format=ParquetFormat(),
        timestamp_field="event_timestamp",
        description=f"Daily snapshots of dbt model {fam.model}, Hive-partitioned by as-of date.",
        tags={"dbt_model": fam.model},
        owner=OWNER,
    )


def source_files(path: str) -> str:
    """The files of a Parquet source at `path`, as a glob. In the snapshots' layout (dt=<day> folders),
    each day's part-0.parquet only: not the copy DuckDB leaves beside it when a build writing it is killed
    (dbt_project.yml's use_tmp_file), which is cut short. Any other folder: every Parquet file in it."""
    if path.endswith(".parquet"):
        return path
    return f"{path}/dt=*/{PART_FILE}" if any(Path(path).glob(f"dt=*/{PART_FILE}")) else f"{path}/**/*.parquet"


@cache
def feature_views() -> tuple[FeatureView, ...]:
    return views_over(snapshot_sources())


def views_over(sources: tuple[FileSource, ...]) -> tuple[FeatureView, ...]:
    return tuple(_feature_view(fam, src) for fam, src in zip(families(), sources, strict=True))


def _feature_view(fam: Family, source: FileSource) -> FeatureView:
    return FeatureView(
        name=fam.name,
        entities=[user_entity()],
        ttl=SNAPSHOT_TTL,
        schema=[
            Field(name=f.name, dtype=FEAST_DTYPE[f.dtype], description=f.description, tags=_tags(f))
            for f in fam.features
        ],
        source=source,
        online=True,
        description=fam.description,
        owner=OWNER,
        tags={"family": fam.name, "dbt_model": fam.model, "owner": OWNER,
              "stages": ",".join(sorted({f.stage for f in fam.features})),
              "consent_bound": str(any(f.consent_bound for f in fam.features)).lower()},
    )


def _tags(f: Feature) -> dict[str, str]:
    return {"family": f.family, "stage": f.stage, "owner": OWNER, "agg": f.agg,
            "window_days": str(f.window_days or ""), "breakdown": f.breakdown or "",
            "consent_bound": str(f.consent_bound).lower()}


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    description: str
    decisions: str
    wants: Callable[[Feature], bool]
    readers: tuple[str, ...]  # the roles (of the lender's identity provider) that may read it online


# Roles, as the lender's identity provider issues them (`permissions()` below turns them into Feast
# permissions): credit decisions read what their models need, marketing only what says who wants credit,
# model teams everything (also feature by feature), operators apply and load the store.
CREDIT_DECISIONS, MARKETING, MODEL_TEAMS, OPERATORS = ("credit-decisions", "marketing", "model-teams",
                                                       "millet-operators")

# One service per decision model, versioned: a model pins the version it was trained on.
SERVICES = (
    ServiceSpec(
        "credit_risk_v1", "Pre-loan access and pricing: the headline behaviour of every family (no "
        "per-category breakdowns) and the whole credit history.", "access,pricing",
        lambda f: f.family == "credit" or f.breakdown is None, readers=(CREDIT_DECISIONS, MODEL_TEAMS)),
    ServiceSpec(
        "repayment_ability_v1", "Credit line and in-loan tracking: the loan book now and after, and "
        "wallet cash flow by merchant category.", "credit_line,tracking",
        lambda f: f.family == "payments" or (f.family == "credit" and f.stage != "pre_loan"),
        readers=(CREDIT_DECISIONS, MODEL_TEAMS)),
    ServiceSpec(
        "financial_demand_v1", "Which users to pre-approve or make an offer: shopping, instalment use, "
        "apps installed and loan applications.", "pre_approval,offers",
        lambda f: f.family in ("commerce", "appstore") or (f.family == "credit" and f.stage == "pre_loan"),
        readers=(CREDIT_DECISIONS, MARKETING, MODEL_TEAMS)),
)


@cache
def feature_services() -> tuple[FeatureService, ...]:
    return services_over(feature_views())


def services_over(views: tuple[FeatureView, ...]) -> tuple[FeatureService, ...]:
    return tuple(_feature_service(spec, views) for spec in SERVICES)


def service_features(name: str) -> list[Feature]:
    """The features the service `name` serves, in the spec's order."""
    spec = next((s for s in SERVICES if s.name == name), None)
    if spec is None:
        raise KeyError(f"unknown feature service {name!r}; known: {', '.join(s.name for s in SERVICES)}")
    return [f for f in all_features() if spec.wants(f)]


def _feature_service(spec: ServiceSpec, views: tuple[FeatureView, ...]) -> FeatureService:
    wanted = {f.name for f in service_features(spec.name)}
    projections = [view[[f.name for f in view.features if f.name in wanted]] for view in views
                   if any(f.name in wanted for f in view.features)]
    return FeatureService(
        name=spec.name,
        features=projections,
        description=spec.description,
        owner=OWNER,
        tags={"decisions": spec.decisions, "readers": ",".join(spec.readers),
              "stages": ",".join(sorted({f.stage for f in all_features() if f.name in wanted}))},
    )


@cache
def permissions() -> tuple:
    """Who may do what, as Feast permissions: each role reads online the services that name it as a
    reader; model teams also read feature views (a list of features) online and offline; every role may
    describe the repository's objects; operators may do everything. Anything else is refused."""
    from feast.feast_object import ALL_RESOURCE_TYPES
    from feast.feature_view import FeatureView as View
    from feast.permissions.action import ALL_ACTIONS, AuthzedAction
    from feast.permissions.permission import Permission
    from feast.permissions.policy import RoleBasedPolicy

    roles = sorted({role for spec in SERVICES for role in spec.readers})
    readers = [Permission(name=f"{role}-read-online", types=[FeatureService],
                          name_patterns=[re.escape(s.name) for s in SERVICES if role in s.readers],
                          actions=[AuthzedAction.READ_ONLINE], policy=RoleBasedPolicy(roles=[role]))
               for role in roles]
    return (*readers,
            Permission(name=f"{MODEL_TEAMS}-read-views", types=[View],
                       actions=[AuthzedAction.READ_ONLINE, AuthzedAction.READ_OFFLINE],
                       policy=RoleBasedPolicy(roles=[MODEL_TEAMS])),
            Permission(name="everyone-describe", types=ALL_RESOURCE_TYPES, actions=[AuthzedAction.DESCRIBE],
                       policy=RoleBasedPolicy(roles=[*roles, OPERATORS])),
            Permission(name=f"{OPERATORS}-all", types=ALL_RESOURCE_TYPES, actions=ALL_ACTIONS,
                       policy=RoleBasedPolicy(roles=[OPERATORS])))


def feast_objects(snapshots_dir: Path, keep: Callable[[Feature], bool] | None = None) -> list:
    """Every object of the repository over snapshots kept elsewhere, optionally only the features
    `keep` accepts (for tests and benchmarks)."""
    kept = [replace(fam, features=tuple(f for f in fam.features if keep is None or keep(f)))
            for fam in families()]
    kept = [fam for fam in kept if fam.features]
    sources = tuple(_snapshot_source(fam, snapshots_dir) for fam in kept)
    views = tuple(_feature_view(fam, src) for fam, src in zip(kept, sources, strict=True))
    services = [svc for svc in services_over(views) if svc.feature_view_projections]
    return [user_entity(), *sources, *views, *services, *permissions()]
