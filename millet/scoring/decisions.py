"""The lender's decisions from a user's features: access (with reasons), price and credit line.

One function, `decide`, is the decision wherever it is made (`millet score`, `POST /score`, a batch): it
takes the features as a mapping, so online and offline features give the same decision.
- PD: the served credit-risk model (LightGBM) on credit_risk_v1's features.
- Reasons: the features that pushed the PD up most, by the model's exact per-prediction contributions.
- Price (../shared/DOMAIN.md): cost of funds + operating cost + margin + expected loss, where the expected
  loss a year is PD × LGD scaled from the label's 6-month horizon; rounded up to the band grid. An applicant
  whose price would exceed the product's cap is declined.
- Credit line: repayment ability's rules (millet/scoring/repayment.py) over repayment_ability_v1.
- A user with no features at all (new to the ecosystem) is declined with that reason: nothing to score.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from millet.scoring import registry, repayment
from millet.scoring.credit_risk import MODEL, SERVICE
from millet.settings import Settings

SERVICES = (SERVICE, repayment.SERVICE)  # the features a decision reads: the PD's and the credit line's

PD_HORIZON_MONTHS = 6  # the label's: 90+ days past due within 6 months
TOP_REASONS = 3


@dataclass
class Decision:
    user_key: str
    access: str  # "approve" | "decline"
    reasons: list[str]
    pd: float | None
    annual_rate: float | None  # the price band, when approved
    credit_line: float | None  # the most the user may borrow, when approved
    model_version: str
    feature_services: tuple[str, ...] = SERVICES
    contributions: dict[str, float] = field(default_factory=dict)  # log-odds, the largest first

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ServedModel:
    """The served version of a model (the credit-risk model unless named), loaded once."""
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
        return f"{self.version.parent.name}/{self.version.name}"

    def scores(self, matrix: np.ndarray) -> np.ndarray:
        """The model's probability for each row of `matrix` (columns in `features` order)."""
        return self.booster.predict(matrix)

    def raised_by(self, matrix: np.ndarray) -> list[dict[str, float]]:
        """For each row, the TOP_REASONS features that pushed its score up most, by their exact
        contributions (log-odds), the largest first."""
        contributions = self.booster.predict(matrix, pred_contrib=True)[:, :-1]  # the last is the bias
        return [{self.features[i]: round(float(row[i]), 4)
                 for i in np.argsort(-row)[:TOP_REASONS] if row[i] > 0} for row in contributions]


def served_model(settings: Settings, model: str = MODEL) -> ServedModel:
    return ServedModel(registry.served(model, settings))


def decide(user_key: str, features: Mapping[str, float | None], model: ServedModel,
           settings: Settings) -> Decision:
    row = np.array([[_number(features.get(name)) for name in model.features]], dtype=np.float64)
    if np.isnan(row).all():
        return Decision(user_key, "decline", ["no behaviour or credit history in the ecosystem yet: nothing "
                                              "to score; a new user can apply after using it for a while"],
                        None, None, None, model.name)
    pd = float(model.scores(row)[0])
    pushed_up = model.raised_by(row)[0]
    rate, line = annual_rate(pd, settings), offered_line(pd, features, settings)
    risk = [f"{name} raised the risk" for name in pushed_up]
    if not priced_within_cap(pd, settings):
        reasons = [f"risk-based price {rate:.0%} a year exceeds the product's cap "
                   f"{settings.pricing_rate_cap:.0%} (PD {pd:.1%})", *risk]
        return Decision(user_key, "decline", reasons, pd, None, None, model.name, contributions=pushed_up)
    if not line:
        reasons = [f"no repayment capacity seen: {settings.line_debt_service_ratio:.0%} of the monthly "
                   "wallet spending does not exceed the instalments of the loans open", *risk]
        return Decision(user_key, "decline", reasons, pd, None, None, model.name, contributions=pushed_up)
    reasons = [f"PD {pd:.1%} within the product's risk appetite",
               f"credit line {line:,.0f}: an affordable instalment of "
               f"{repayment.affordable_instalment(features, settings):,.0f} a month over "
               f"{settings.line_term_months} months", *risk]
    return Decision(user_key, "approve", reasons, pd, rate, line, model.name, contributions=pushed_up)


def offered_line(pd: float, features: Mapping[str, float | None], settings: Settings) -> float | None:
    """The credit line the product may be offered with at this PD, or None when it may not: a price above
    the cap, or no line."""
    if math.isnan(pd) or not priced_within_cap(pd, settings):
        return None
    return repayment.credit_line(features, pd, annual_rate(pd, settings), settings) or None


def annual_rate(pd: float, settings: Settings) -> float:
    """The price band for a PD: costs + margin + expected loss a year, rounded up to the band grid."""
    expected_loss = pd * settings.pricing_lgd * 12 / PD_HORIZON_MONTHS
    price = (settings.pricing_cost_of_funds + settings.pricing_operating_cost + settings.pricing_margin
             + expected_loss)
    step = settings.pricing_band_step
    return round(math.ceil(round(price / step, 9)) * step, 6)


def priced_within_cap(pd: float, settings: Settings) -> bool:
    """Whether the product may be offered at this PD: its risk-based price is within the cap."""
    return annual_rate(pd, settings) <= settings.pricing_rate_cap


def _number(value) -> float:
    if value is None or isinstance(value, str):  # Feast's JSON spells NaN and the infinities as strings
        return float(value) if isinstance(value, str) else math.nan
    return float(value)
