"""Build GX 1.x expectation suites from expectations/features.yml: the thresholds live there, once."""

from __future__ import annotations

from pathlib import Path

import yaml


def load_thresholds(expectations_dir: Path) -> dict:
    return yaml.safe_load((expectations_dir / "features.yml").read_text())


def drift_limits(family: str, config: dict) -> dict:
    """The drift thresholds for `family`: the defaults, with the family's own overrides."""
    drift = config["drift"]
    defaults = {k: v for k, v in drift.items() if k not in ("families", "warm_up_days")}
    return {**defaults, **(drift.get("families") or {}).get(family, {})}


def drift_suite(family: str, config: dict):
    """Expectations over a family's drift table (one row per feature, millet.quality.drift)."""
    import great_expectations as gx
    import great_expectations.expectations as gxe

    limits = drift_limits(family, config)
    suite = gx.ExpectationSuite(name=f"{config['suite']}__{family}")
    for expectation in [
        gxe.ExpectColumnValuesToBeBetween(column="population_ratio", min_value=limits["min_population_ratio"],
                                          meta={"check": "population"}),
        gxe.ExpectColumnValuesToBeBetween(column="psi", max_value=limits["psi_critical"],
                                          meta={"check": "drift_severe"}),
        gxe.ExpectColumnValuesToBeBetween(column="psi", max_value=limits["psi_warning"],
                                          meta={"check": "drift"}),
        gxe.ExpectColumnValuesToBeBetween(column="null_rate_change",
                                          min_value=-limits["max_null_rate_change"],
                                          max_value=limits["max_null_rate_change"],
                                          meta={"check": "null_rate"}),
    ]:
        suite.add_expectation(expectation)
    return suite


WARMED_UP_CHECKS = ("drift_severe", "drift", "null_rate")  # downgraded to warnings while warming up


def severities(config: dict, warming_up: bool) -> dict[str, str]:
    """Each check's severity; during the warm-up (see features.yml) drift failures are warnings."""
    return {check: "warning" if warming_up and check in WARMED_UP_CHECKS else level
            for check, level in config["checks"].items()}
