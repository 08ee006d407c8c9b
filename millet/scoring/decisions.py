"""The lender's decisions from a user's features: access (with reasons) and price.

One function, `decide`, is the decision wherever it is made (`millet score`, `POST /score`, a batch): it
takes the features as a mapping, so online and offline features give the same decision.
- PD: the served credit-risk model (LightGBM) on credit_risk_v1's features.
- Reasons: the features that pushed the PD up most, by the model's exact per-prediction contributions.
- Price (../shared/DOMAIN.md): cost of funds + operating cost + margin + expected loss, where the expected
  loss a year is PD × LGD scaled from the label's 6-month horizon; rounded up to the band grid. An applicant
  whose price would exceed the product's cap is declined.
- A user with no features at all (new to the ecosystem) is declined with that reason: nothing to score.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from millet.scoring import registry
from millet.scoring.credit_risk import MODEL, SERVICE
from millet.settings import Settings

PD_HORIZON_MONTHS = 6  # the label's: 90+ days past due within 6 months
TOP_REASONS = 3


class NoModel(RuntimeError):
    pass


@dataclass
class Decision:
    user_key: str
    access: str  # "approve" | "decline"
    reasons: list[str]
    pd: float | None
    annual_rate: float | None  # the price band, when approved
    model_version: str
    feature_service: str = SERVICE
    contributions: dict[str, float] = field(default_factory=dict)  # log-odds, the largest first

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ServedModel:
    """The served version of the credit-risk model, loaded once."""
    version: Path

    @cached_property
    def booster(self):
        import lightgbm as lgb

        return lgb.Booster(model_file=str(self.version / "model.txt"))

    @cached_property
    def features(self) -> list[str]:
        return self.booster.feature_name()

    @property
    def name(self) -> str:
        return f"{MODEL}/{self.version.name}"


def served_model(settings: Settings) -> ServedModel:
    version = registry.served_version(MODEL, settings)
    if version is None:
        raise NoModel(f"no {MODEL} model is served under {settings.models_dir}: run `millet train`")
    return ServedModel(version)


def decide(user_key: str, features: Mapping[str, float | None], model: ServedModel,
           settings: Settings) -> Decision:
    row = np.array([[_number(features.get(name)) for name in model.features]], dtype=np.float64)
    if np.isnan(row).all():
        return Decision(user_key, "decline", ["no behaviour or credit history in the ecosystem yet: nothing "
                                              "to score; a new user can apply after using it for a while"],
                        None, None, model.name)
    pd = float(model.booster.predict(row)[0])
    contributions = model.booster.predict(row, pred_contrib=True)[0][:-1]  # the last is the bias
    top = np.argsort(-contributions)[:TOP_REASONS]
    pushed_up = {model.features[i]: round(float(contributions[i]), 4) for i in top if contributions[i] > 0}
    rate = annual_rate(pd, settings)
    if rate > settings.pricing_rate_cap:
        reasons = [f"risk-based price {rate:.0%} a year exceeds the product's cap "
                   f"{settings.pricing_rate_cap:.0%} (PD {pd:.1%})",
                   *(f"{name} raised the risk" for name in pushed_up)]
        return Decision(user_key, "decline", reasons, pd, None, model.name, contributions=pushed_up)
    reasons = [f"PD {pd:.1%} within the product's risk appetite",
               *(f"{name} raised the risk" for name in pushed_up)]
    return Decision(user_key, "approve", reasons, pd, rate, model.name, contributions=pushed_up)


def annual_rate(pd: float, settings: Settings) -> float:
    """The price band for a PD: costs + margin + expected loss a year, rounded up to the band grid."""
    expected_loss = pd * settings.pricing_lgd * 12 / PD_HORIZON_MONTHS
    price = (settings.pricing_cost_of_funds + settings.pricing_operating_cost + settings.pricing_margin
             + expected_loss)
    step = settings.pricing_band_step
    return round(math.ceil(round(price / step, 9)) * step, 6)


def _number(value) -> float:
    if value is None or isinstance(value, str):  # Feast's JSON spells NaN and the infinities as strings
        return float(value) if isinstance(value, str) else math.nan
    return float(value)
