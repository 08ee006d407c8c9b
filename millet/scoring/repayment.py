"""Repayment ability: the credit line a user can carry, a rule set over `repayment_ability_v1`
(../shared/DOMAIN.md: lines follow repayment capacity, income proxy minus existing instalments, and are capped
by product rules; "dollars at risk", line × PD, is kept level across risk bands).
- Income proxy: the wallet's monthly spending (payments, last 90 days ÷ 3).
- Existing instalments: one a month per open loan, of the size the user has been repaying (app repayments,
  last 180 days, mean); with no repayment seen yet, the mean loan of their book spread over the line's
  term.
- Affordable instalment = `line_debt_service_ratio` × income proxy − existing instalments.
- Line = the principal that `line_term_months` such instalments repay at the user's price, times
  min(1, `line_reference_pd` ÷ PD) (dollars at risk), times `line_first_loan_share` until a loan is paid off,
  rounded down to 10. A line of 0 (no spending seen, or instalments already take the share) declines.
A rule set, not a fitted model: nothing in the simulated world ties repaying to the size of the instalment,
so a model could learn no capacity from outcomes. `check_repayment_ability` measures the rules against what
borrowers actually repaid (bronze repayment events) and `millet train` writes that check as a version.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import duckdb
import numpy as np
import pandas as pd

from millet.scoring import registry
from millet.scoring.credit_risk import loan_rows
from millet.scoring.fitting import rows_with_features
from millet.scoring.labels import DEFAULT_LABEL
from millet.settings import Settings
from millet.sqltext import literal

MODEL = registry.REPAYMENT_ABILITY
SERVICE = "repayment_ability_v1"
SPENDING_90D = "payments__amount_paid_sum_90d"
REPAID_SUM_180D = "credit__amount_app_repaid_sum_180d"
REPAID_COUNT_180D = "credit__app_repayments_count_180d"
OPEN_LOANS = "credit__loans_active_now"
PAID_OFF = "credit__loans_paid_off_total"
DISBURSED_TOTAL = "credit__amount_disbursed_total"
INPUTS = (SPENDING_90D, REPAID_SUM_180D, REPAID_COUNT_180D, OPEN_LOANS, PAID_OFF, DISBURSED_TOTAL)
LINE_STEP = 10


def affordable_instalment(features: Mapping[str, float | None], settings: Settings) -> float:
    """What the user can pay a month on a new loan: the share of their monthly spending that instalments may
    take, less the instalments of the loans they have open."""
    income = _value(features, SPENDING_90D) / 3
    open_instalments = _value(features, OPEN_LOANS) * _instalment_size(features, settings)
    return max(0.0, settings.line_debt_service_ratio * income - open_instalments)


def _instalment_size(features: Mapping[str, float | None], settings: Settings) -> float:
    """The monthly instalment of one of the user's loans: what they have been repaying, or, before their
    first repayment, their mean loan over the line's term (loans not paid off count as open: cautious)."""
    repaid = _value(features, REPAID_COUNT_180D)
    if repaid:
        return _value(features, REPAID_SUM_180D) / repaid
    loans = _value(features, OPEN_LOANS) + _value(features, PAID_OFF)
    return _value(features, DISBURSED_TOTAL) / loans / settings.line_term_months if loans else 0.0


def credit_line(features: Mapping[str, float | None], pd: float, annual_rate: float,
                settings: Settings) -> float:
    """The most the user may borrow: the principal the affordable instalment repays over the line's term at
    `annual_rate`, shrunk above the reference PD (dollars at risk) and for a first loan."""
    monthly, months = annual_rate / 12, settings.line_term_months
    principal = affordable_instalment(features, settings) * (1 - (1 + monthly) ** -months) / monthly
    at_risk = min(1.0, settings.line_reference_pd / pd) if pd > 0 else 1.0
    first_loan = 1.0 if _value(features, PAID_OFF) > 0 else settings.line_first_loan_share
    return math.floor(principal * at_risk * first_loan / LINE_STEP) * LINE_STEP


def _value(features: Mapping[str, float | None], name: str) -> float:
    value = features.get(name)
    return 0.0 if value is None or value != value else float(value)  # no activity: nothing to count on


def check_repayment_ability(settings: Settings) -> dict:
    """The rules against what borrowers repaid: for each loan of the credit-risk label rows that has had a
    repayment, the affordable instalment as of its application against the instalment the borrower
    then paid; and the default rate of loans within the user's capacity and beyond it. Writes the check, with
    the `line_*` settings it was made with, as a version of `repayment_ability`, and returns its meta. (The
    decisions read the rules' parameters from the settings; the version records what was checked.)"""
    paid = _first_instalments(settings)
    labels = loan_rows(settings)
    labels = labels[labels["loan_id"].isin(paid.index)]
    rows = rows_with_features(labels, SERVICE, settings)
    features = pd.DataFrame(rows.matrix[:, [rows.features.index(n) for n in INPUTS]], columns=list(INPUTS))
    affordable = np.array([affordable_instalment(row, settings) for row in features.to_dict("records")])
    instalment = paid.loc[rows.labels["loan_id"]].to_numpy()
    within = instalment <= affordable
    defaulted = rows.labels[DEFAULT_LABEL].to_numpy()
    meta = {"model": MODEL, "feature_service": SERVICE, "kind": "rules",
            "parameters": {name: getattr(settings, name) for name in type(settings).model_fields
                           if name.startswith("line_")},
            "check": {"loans": len(instalment), "within_capacity_share": float(within.mean()),
                      "default_rate_within": _rate(defaulted[within]),
                      "default_rate_beyond": _rate(defaulted[~within]),
                      "median_instalment_over_affordable":
                          float(np.median(instalment / np.maximum(affordable, 1)))},
            }
    version = registry.new_version(MODEL, settings)
    registry.write_meta(version, meta | {"version": version.name})
    return meta | {"version": version.name, "path": str(version)}


def _rate(outcomes: np.ndarray) -> float | None:
    return float(outcomes.mean()) if len(outcomes) else None


def _first_instalments(settings: Settings) -> pd.Series:
    """Each loan's first instalment as the borrower paid it (bronze repayment events), by loan_id."""
    loans = settings.bronze_dir / "loans" / "dt=*" / "*.parquet"
    with duckdb.connect(config=settings.duckdb_config()) as con:
        frame = con.execute(f"""
            select loan_id, arg_min(amount, event_ts) as instalment from read_parquet({literal(str(loans))})
            where event_type = 'repayment' group by loan_id
        """).df()
    return frame.set_index("loan_id")["instalment"]
