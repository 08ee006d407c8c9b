"""The scorecard baseline: each characteristic cut into quantile bins (missing is a bin of its own),
replaced by its weight of evidence, the strongest by information value into a logistic regression.
Readable bin by bin, the regulator's favourite: the report sets the gradient-boosted model beside it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import LogisticRegression

BINS = 10
MAX_CHARACTERISTICS = 20
MIN_INFORMATION_VALUE = 0.02  # below it a characteristic is, by convention, not predictive
SMOOTHING = 0.5  # added to each bin's counts, so an empty side gives a finite weight of evidence


@dataclass
class Characteristic:
    name: str
    cuts: list[float]  # bin i holds cuts[i-1] < x <= cuts[i]; the last bin is open above
    woe: list[float]  # one per bin, then one for missing
    information_value: float

    def transform(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.woe)[_bins(x, self.cuts)]


@dataclass
class Scorecard:
    characteristics: list[Characteristic]
    coefficients: list[float]
    intercept: float

    def predict(self, matrix: np.ndarray, names: list[str]) -> np.ndarray:
        """PD for each row of `matrix`, whose columns are the features `names`."""
        woe = self._woe(matrix, names)
        return 1 / (1 + np.exp(-(self.intercept + woe @ np.asarray(self.coefficients))))

    def _woe(self, matrix: np.ndarray, names: list[str]) -> np.ndarray:
        column = {name: i for i, name in enumerate(names)}
        return np.column_stack([c.transform(matrix[:, column[c.name]]) for c in self.characteristics])

    def to_dict(self) -> dict:
        return {"intercept": self.intercept,
                "characteristics": [{**vars(c), "coefficient": w}
                                    for c, w in zip(self.characteristics, self.coefficients, strict=True)]}


def fit_scorecard(matrix: np.ndarray, outcome: np.ndarray, names: list[str], seed: int) -> Scorecard:
    binned = [_characteristic(name, matrix[:, i], outcome) for i, name in enumerate(names)]
    strongest = sorted((c for c in binned if c.information_value >= MIN_INFORMATION_VALUE),
                       key=lambda c: -c.information_value)[:MAX_CHARACTERISTICS]
    if not strongest:
        strongest = sorted(binned, key=lambda c: -c.information_value)[:1]
    card = Scorecard(strongest, [], 0.0)
    regression = LogisticRegression(C=1.0, max_iter=2000, random_state=seed)
    regression.fit(card._woe(matrix, names), outcome)
    card.coefficients = [float(w) for w in regression.coef_[0]]
    card.intercept = float(regression.intercept_[0])
    return card


def _characteristic(name: str, x: np.ndarray, outcome: np.ndarray) -> Characteristic:
    present = x[~np.isnan(x)]
    cuts = sorted(set(np.quantile(present, np.linspace(0, 1, BINS + 1)[1:-1]))) if len(present) else []
    bins = _bins(x, cuts)
    bad = np.bincount(bins, weights=outcome, minlength=len(cuts) + 2) + SMOOTHING
    good = np.bincount(bins, weights=1 - outcome, minlength=len(cuts) + 2) + SMOOTHING
    bad_share, good_share = bad / bad.sum(), good / good.sum()
    # A bin no training row fell in (the open top bin, missing when nothing was) carries no evidence.
    empty = np.bincount(bins, minlength=len(cuts) + 2) == 0
    woe = np.where(empty, 0.0, np.log(bad_share / good_share))
    return Characteristic(name, [float(c) for c in cuts], [float(w) for w in woe],
                          float(np.sum((bad_share - good_share) * woe)))


def _bins(x: np.ndarray, cuts: list[float]) -> np.ndarray:
    """Bin i holds cuts[i-1] < x <= cuts[i]; missing values go to the bin after the last."""
    return np.where(np.isnan(x), len(cuts) + 1, np.searchsorted(cuts, x, side="left"))
