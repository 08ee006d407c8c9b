"""A model version's evaluation report: report.html beside its meta.json, one self-contained page.

Ranking on the out-of-time test (AUC, Gini, KS) against the oracle, the verdict and its reasons, ROC and KS
curves, calibration, score distributions by outcome, the top features and the score's stability (PSI)."""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from sklearn.metrics import roc_curve

from millet.charts import hbars, lines, page, section, table
from millet.files import write_text
from millet.scoring import registry
from millet.scoring.labels import DEFAULT_LABEL, ORACLE
from millet.scoring.metrics import PSI_BINS

REPORT = "report.html"
SCORES = {"gbm": "LightGBM, all families", "scorecard": "scorecard (WOE + logistic)",
          "credit_history_only": "LightGBM, credit history alone", ORACLE: "oracle (true PD)"}
CURVE_POINTS = 200


def write_report(version: Path, scores_file: str) -> Path:
    meta = registry.read_meta(version)
    scores = pq.read_table(version / scores_file).to_pandas()
    test = scores[scores["split"] == "test"]
    outcome, score = test[DEFAULT_LABEL].to_numpy(), test["gbm"].to_numpy()
    sections = [
        section("Verdict", _verdict(meta)),
        section("Out-of-time test", _metrics(meta)),
        section("Training set", _definition(meta)),
        section("ROC and KS", _roc(test) + " " + _ks(outcome, score, meta["test"]["gbm"]["ks"])),
        section("Calibration and score distributions",
                _calibration(meta) + " " + _distributions(outcome, score)),
        section(f"Top {len(meta['importance'])} features (LightGBM gain)",
                hbars("importance", [r["feature"] for r in meta["importance"]],
                      [r["gain"] for r in meta["importance"]], fmt="{:,.0f}")),
        section("Stability", f"<p>PSI of the LightGBM score, train → test, over the train deciles: "
                             f"<b>{meta['score_psi']:.3f}</b> "
                             "(&lt; 0.1 stable, 0.1–0.25 watch, &gt; 0.25 act)</p>"),
    ]
    path = version / REPORT
    write_text(path, page(f"Millet {meta['model']} {meta['version']}", sections))
    return path


def _verdict(meta: dict) -> str:
    if meta["passed"]:
        return '<p class="ok">passed: served</p>'
    reasons = "".join(f"<li>{html.escape(r)}</li>" for r in meta["reasons"])
    return f'<p class="critical">failed: not served</p><ul>{reasons}</ul>'


def _metrics(meta: dict) -> str:
    rows = [[label, f"{meta['test'][name]['auc']:.4f}", f"{meta['test'][name]['gini']:.4f}",
             f"{meta['test'][name]['ks']:.4f}", _gap(meta["oracle_gaps"].get(name))]
            for name, label in SCORES.items()]
    return (table(["score", "AUC", "Gini", "KS", "AUC − oracle's (± standard error)"], rows)
            + f"<p>model AUC ÷ oracle AUC: <b>{meta['oracle_ratio']:.3f}</b></p>")


def _gap(gap: dict | None) -> str:
    return "" if gap is None else f"{gap['gap']:+.4f} (± {gap['standard_error']:.4f})"


def _definition(meta: dict) -> str:
    rows = [[part, f"{r['rows']:,}", f"{r['defaults']:,}", r["first_application"], r["last_application"]]
            for part, r in meta["rows"].items()]
    return (f"<p>{html.escape(meta['feature_service'])}: {meta['features']} features; "
            f"label: {html.escape(meta['label'])}; {meta['rounds']} boosting rounds</p>"
            + table(["split", "loans", "defaults", "first application", "last application"], rows))


def _roc(test) -> str:
    series = {}
    for name, label in SCORES.items():
        fpr, tpr, _ = roc_curve(test[DEFAULT_LABEL], test[name])
        keep = np.unique(np.linspace(0, len(fpr) - 1, CURVE_POINTS).astype(int))
        series[label] = (list(fpr[keep]), list(tpr[keep]))
    return lines("ROC, out-of-time test", series, "false positive rate", "true positive rate", diagonal=True)


def _ks(outcome: np.ndarray, score: np.ndarray, ks: float) -> str:
    cuts = np.quantile(score, np.linspace(0, 1, CURVE_POINTS))
    shares = {label: (list(np.linspace(0, 1, CURVE_POINTS)),
                      [float(np.mean(score[outcome == value] <= c)) for c in cuts])
              for value, label in ((1, "defaulters"), (0, "non-defaulters"))}
    return lines(f"KS = {ks:.3f}: cumulative share by score percentile", shares, "score percentile",
                 "cumulative share", diagonal=True)


def _calibration(meta: dict) -> str:
    bins = meta["calibration"]
    top = max(max(b["predicted"], b["observed"]) for b in bins) or 1.0
    series = {"observed default rate": ([b["predicted"] / top for b in bins],
                                        [b["observed"] / top for b in bins])}
    return lines(f"Calibration by decile (both axes ÷ {top:.3f})", series, "predicted PD", "observed rate",
                 diagonal=True)


def _distributions(outcome: np.ndarray, score: np.ndarray) -> str:
    edges = np.quantile(score, np.linspace(0, 1, 2 * PSI_BINS + 1))
    middle = list((np.arange(2 * PSI_BINS) + 0.5) / (2 * PSI_BINS))
    series = {label: (middle, list(np.histogram(score[outcome == value], bins=edges)[0]
                                   / max(int((outcome == value).sum()), 1)))
              for value, label in ((1, "defaulters"), (0, "non-defaulters"))}
    return lines("Score distribution by outcome (share per score ventile)", series, "score ventile",
                 "share of the group")
