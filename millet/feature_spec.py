"""The feature spec, read from the one place it is declared: the marts' `meta.features` in dbt.

dbt's `windowed_features` macro expands the same declaration into SQL; this module expands it into
typed, described features for Feast's fields, the drift checks and the docs.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import yaml

from millet.settings import REPO_ROOT

SPEC_FILE = REPO_ROOT / "dbt_project" / "models" / "marts" / "features" / "_features__models.yml"

# The aggregation kinds, declared once in dbt's project vars (`aggregations`): type, phrase, trends.
DBT_PROJECT_FILE = REPO_ROOT / "dbt_project" / "dbt_project.yml"
AGGREGATIONS = yaml.safe_load(DBT_PROJECT_FILE.read_text())["vars"]["aggregations"]
AGG_DTYPE = {agg: kind["dtype"] for agg, kind in AGGREGATIONS.items()}
AGG_PHRASE = {agg: kind["phrase"] for agg, kind in AGGREGATIONS.items() if "phrase" in kind}
TRENDED = tuple(agg for agg, kind in AGGREGATIONS.items() if kind.get("trended"))


@dataclass(frozen=True)
class Feature:
    name: str
    family: str
    metric: str
    agg: str  # for a trend, "trend"; for a state feature, "state"
    window_days: int | None  # None for a state feature; for a trend, the short window
    dtype: str
    stage: str
    consent_bound: bool
    description: str
    breakdown: str | None = None  # the category, for a metric expanded `by` a bronze column


@dataclass(frozen=True)
class Family:
    name: str
    model: str  # the dbt mart that computes it
    description: str
    features: tuple[Feature, ...]


def feature_name(family: str, metric: str, agg: str, window: int) -> str:
    """The one place Python spells a feature's name; dbt's `feature_column` macro spells it for SQL."""
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
    family, windows = spec["family"], spec["windows"]
    features = []
    for metric in _expand_metrics(spec["metrics"]):
        stage = metric.get("stage", spec["stage"])
        for agg in metric["aggs"]:
            common = {"family": family, "metric": metric["name"], "stage": stage,
                      "consent_bound": spec["consent_bound"], "breakdown": metric.get("category")}
            features += [
                Feature(name=feature_name(family, metric["name"], agg, w), agg=agg, window_days=w,
                        dtype=AGG_DTYPE[agg], **common,
                        description=f"{metric['description']}: {AGG_PHRASE[agg]} over the last {w} days.")
                for w in windows
            ]
            if agg in TRENDED:
                features += [
                    Feature(name=feature_name(family, metric["name"], f"{agg}_trend_{short}d", long),
                            agg="trend", window_days=short, dtype=AGG_DTYPE["trend"], **common,
                            description=f"{metric['description']}: daily pace over the last {short} days "
                                        f"against the last {long} days (1 = steady).")
                    for short, long in spec.get("trends", [])
                ]
    features += [
        Feature(name=f"{family}__{state['name']}", family=family, metric=state["name"], agg="state",
                window_days=None, dtype=state["dtype"], stage=state["stage"],
                consent_bound=spec["consent_bound"], description=state["description"] + ".")
        for state in spec.get("state", [])
    ]
    return Family(family, model["name"], model.get("description", "").strip(), tuple(features))


def _expand_metrics(metrics: list[dict]) -> list[dict]:
    """A metric with `by` becomes one per category of its bronze column, as its contract lists them."""
    from millet.contracts import contract_for

    expanded = []
    for metric in metrics:
        if "by" not in metric:
            expanded.append(metric)
            continue
        by = metric["by"]
        for category in contract_for(by["channel"]).rules[by["column"]].enum:
            expanded.append({**metric, "category": category,
                             "name": metric["name"].replace("{category}", category),
                             "description": metric["description"].replace("{category}", category)})
    return expanded
