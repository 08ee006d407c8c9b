"""The feature spec, read from the one place it is declared: the marts' `meta.features` in dbt.

dbt's `windowed_features` macro expands the same declaration into SQL; this module expands it into
typed, described features for Feast's fields, GX's expectations and the docs.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import yaml

from millet.settings import REPO_ROOT

SPEC_FILE = REPO_ROOT / "dbt_project" / "models" / "marts" / "features" / "_features__models.yml"

AGG_DTYPE = {"count": "int32", "days_since_last": "int32", "sum": "float32", "mean": "float32",
             "max": "float32", "share": "float32"}
AGG_PHRASE = {"count": "count", "sum": "total", "mean": "mean per order", "max": "largest daily value",
              "share": "share", "days_since_last": "days since the last one"}


@dataclass(frozen=True)
class Feature:
    name: str
    family: str
    metric: str
    agg: str
    window_days: int
    dtype: str
    stage: str
    consent_bound: bool
    description: str


@dataclass(frozen=True)
class Family:
    name: str
    model: str  # the dbt mart that computes it
    description: str
    features: tuple[Feature, ...]


def feature_name(family: str, metric: str, agg: str, window: int) -> str:
    return f"{family}__{metric}_{agg}_{window}d"


@cache
def families(spec_file: Path = SPEC_FILE) -> tuple[Family, ...]:
    models = yaml.safe_load(spec_file.read_text())["models"]
    return tuple(_family(m) for m in models if "features" in m.get("config", {}).get("meta", {}))


def family(name: str) -> Family:
    for fam in families():
        if fam.name == name:
            return fam
    raise KeyError(f"unknown feature family {name!r}")


def all_features() -> list[Feature]:
    return [f for fam in families() for f in fam.features]


def _family(model: dict) -> Family:
    spec = model["config"]["meta"]["features"]
    features = tuple(
        Feature(
            name=feature_name(spec["family"], metric["name"], agg, window),
            family=spec["family"],
            metric=metric["name"],
            agg=agg,
            window_days=window,
            dtype=AGG_DTYPE[agg],
            stage=metric.get("stage", spec["stage"]),
            consent_bound=spec["consent_bound"],
            description=f"{metric['description']}: {AGG_PHRASE[agg]} over the last {window} days.",
        )
        for metric in spec["metrics"]
        for agg in metric["aggs"]
        for window in spec["windows"]
    )
    return Family(spec["family"], model["name"], model.get("description", ""), features)
