"""Build GX 1.x expectation suites from the feature spec and expectations/features.yml."""

from __future__ import annotations

from pathlib import Path

import yaml

from millet.feature_spec import Family


def load_thresholds(expectations_dir: Path) -> dict:
    return yaml.safe_load((expectations_dir / "features.yml").read_text())


def feature_suite(family: Family, config: dict):
    import great_expectations as gx
    import great_expectations.expectations as gxe

    limits = config["thresholds"]
    suite = gx.ExpectationSuite(name=f"{config['suite']}__{family.name}")
    keys = {"check": "keys"}
    for expectation in [
        gxe.ExpectTableRowCountToBeBetween(min_value=limits["min_rows"], meta=keys),
        gxe.ExpectColumnValuesToNotBeNull(column="user_key", meta=keys),
        gxe.ExpectColumnValuesToBeUnique(column="user_key", meta=keys),
        gxe.ExpectColumnValuesToNotBeNull(column="event_timestamp", meta=keys),
        *(_range_expectation(f, limits) for f in family.features),
    ]:
        suite.add_expectation(expectation)
    return suite


def _range_expectation(feature, limits: dict):
    import great_expectations.expectations as gxe

    bounds = {
        "count": (0, None),
        "sum": (0, None),
        "max": (0, None),
        "distinct": (0, None),
        "trend": (0, None),
        "state": (0, None),  # balances, days late, months on book: never negative
        "mean": (0, limits["max_mean"]),
        "share": (0, 1),
        "days_since_last": (0, limits["max_days_since_last"]),
        "days_active": (0, feature.window_days),
    }[feature.agg]
    return gxe.ExpectColumnValuesToBeBetween(
        column=feature.name, min_value=bounds[0], max_value=bounds[1], meta={"check": "ranges"}
    )
