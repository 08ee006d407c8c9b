"""How well a score ranks and how stable it is: the lender's conventions (../shared/DOMAIN.md)."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from millet.quality.drift import psi

PSI_BINS = 10
BOOTSTRAP_SAMPLES = 300


def ranking(outcome: np.ndarray, score: np.ndarray) -> dict[str, float]:
    """AUC, Gini = 2·AUC − 1, and KS = the largest gap between the cumulative score distributions of
    defaulters and non-defaulters (max TPR − FPR over thresholds)."""
    auc = float(roc_auc_score(outcome, score))
    fpr, tpr, _ = roc_curve(outcome, score)
    return {"auc": auc, "gini": 2 * auc - 1, "ks": float(np.max(tpr - fpr))}


def score_psi(expected: np.ndarray, actual: np.ndarray, bins: int = PSI_BINS) -> float:
    """PSI of `actual` scores against `expected` (the baseline), over the baseline's deciles."""
    cuts = np.unique(np.quantile(expected, np.linspace(0, 1, bins + 1)[1:-1]))
    shares = [np.bincount(np.searchsorted(cuts, s, side="right"), minlength=len(cuts) + 1) / len(s)
              for s in (actual, expected)]
    return psi(list(shares[0]), list(shares[1]))


def calibration(outcome: np.ndarray, score: np.ndarray, bins: int = PSI_BINS) -> list[dict]:
    """Mean predicted and observed default rate per score decile."""
    order = np.argsort(score, kind="stable")
    return [{"predicted": float(score[part].mean()), "observed": float(outcome[part].mean()),
             "rows": int(len(part))} for part in np.array_split(order, bins) if len(part)]


def auc_gap(outcome: np.ndarray, score: np.ndarray, reference: np.ndarray, seed: int) -> dict[str, float]:
    """AUC(score) − AUC(reference) on the same rows, and its standard error by a paired bootstrap (the
    rows resampled together, so what the two scores share cancels out)."""
    rng = np.random.default_rng(seed)
    gaps = []
    for _ in range(BOOTSTRAP_SAMPLES):
        rows = rng.integers(0, len(outcome), len(outcome))
        y = outcome[rows]
        if y.min() != y.max():
            gaps.append(roc_auc_score(y, score[rows]) - roc_auc_score(y, reference[rows]))
    gap = float(roc_auc_score(outcome, score) - roc_auc_score(outcome, reference))
    spread = float(np.std(gaps)) if len(gaps) > 1 else float("inf")
    return {"gap": gap, "standard_error": max(spread, 1e-9)}
