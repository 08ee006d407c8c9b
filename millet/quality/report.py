"""The nightly quality report: one self-contained HTML page per day (inline SVG, no script, nothing fetched)
under reports/, linked from every alert: volume per channel over the last 30 days, quarantine rates by
reason, the 20 most drifting features, the reconciliation with the bank, and each check's outcome."""

from __future__ import annotations

import html
import json
from datetime import date, timedelta
from pathlib import Path

import pyarrow.parquet as pq

from millet.alerts import report_path
from millet.contracts import contracts
from millet.quality.checkpoint import drift_path
from millet.settings import Settings, get_settings
from millet.transform import reconciliation_path

HISTORY_DAYS = 30
TOP_DRIFT = 20


def write_report(day: str | date, settings: Settings | None = None) -> Path:
    """Write the day's page from what the checks kept (whatever ran: a stage that did not run says so)."""
    settings = settings or get_settings()
    day = date.fromisoformat(str(day))
    sections = [
        _section("Checks", _check_outcomes(day, settings)),
        _section(f"Lines per channel, last {HISTORY_DAYS} days", _volume(day, settings)),
        _section("Quarantined lines by reason, this day", _quarantine(day, settings)),
        _section(f"The {TOP_DRIFT} most drifting features (PSI against the baseline)", _drift(day, settings)),
        _section("Repayments: the lender's ledger against the bank's feed", _reconciliation(day, settings)),
    ]
    page = (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>Millet quality {day}</title>"
            f"<style>{_STYLE}</style></head><body><h1>Millet data quality, {day}</h1>{''.join(sections)}"
            "</body></html>")
    path = report_path(day, settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page)
    return path


_STYLE = ("body{font-family:sans-serif;margin:2em;color:#222}section{margin-bottom:2em}"
          "svg{background:#fafafa;border:1px solid #ddd}td,th{padding:2px 8px;text-align:left}"
          ".critical{color:#b00}.warning{color:#a60}.ok{color:#070}")


def _section(title: str, body: str) -> str:
    return f"<section><h2>{html.escape(title)}</h2>{body}</section>"


def _json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def _check_outcomes(day: date, settings: Settings) -> str:
    quality = settings.root / "quality"
    rows = []
    for stage, record in (("raw feeds", _json(quality / "feeds" / f"dt={day}.json")),
                          ("feature snapshot", _json(quality / f"dt={day}.json"))):
        if record is None:
            rows.append(f"<tr><td>{stage}</td><td colspan=3>did not run</td></tr>")
            continue
        for dataset, outcome in record.items():
            failed, warned = outcome["failed"], outcome["warnings"]
            state = "critical" if failed else "warning" if warned else "ok"
            checks = html.escape(", ".join([*failed, *warned]))
            docs = outcome.get("docs")
            link = f"<a href=\"{html.escape(docs)}\">GX validation</a>" if docs else ""
            rows.append(f"<tr><td>{stage}</td><td>{html.escape(dataset)}</td>"
                        f"<td class={state}>{state}</td><td>{checks}</td><td>{link}</td></tr>")
    head = "<tr><th>stage</th><th>dataset</th><th>outcome</th><th>checks</th><th>Data Docs</th></tr>"
    return f"<table>{head}{''.join(rows)}</table>"


def _volume(day: date, settings: Settings) -> str:
    days = [day - timedelta(days=n) for n in range(HISTORY_DAYS - 1, -1, -1)]
    charts = []
    for channel in sorted(contracts()):
        folder = settings.manifests_dir / "ingest" / channel
        lines = [(_json(folder / f"dt={d}.json") or {}).get("lines_in") for d in days]
        charts.append(_bars(channel, [str(d)[5:] for d in days], lines, width=420, height=120))
    return "".join(charts)


def _quarantine(day: date, settings: Settings) -> str:
    labels, rates = [], []
    for channel in sorted(contracts()):
        manifest = _json(settings.manifests_dir / "ingest" / channel / f"dt={day}.json") or {}
        for reason, count in sorted(manifest.get("reasons", {}).items()):
            labels.append(f"{channel}: {reason}")
            rates.append(count / manifest["lines_in"] if manifest.get("lines_in") else 0.0)
    return _hbars("quarantine", labels, rates, fmt="{:.2%}") if labels else "<p>no line quarantined</p>"


def _drift(day: date, settings: Settings) -> str:
    path = drift_path(day, settings)
    if not path.exists():
        return "<p>not measured (the snapshot check did not run)</p>"
    rows = [r for r in pq.read_table(path, columns=["feature", "psi"]).to_pylist() if r["psi"] is not None]
    top = sorted(rows, key=lambda r: r["psi"], reverse=True)[:TOP_DRIFT]
    if not top:
        return "<p>no baseline to compare with yet</p>"
    return _hbars("psi", [r["feature"] for r in top], [r["psi"] for r in top], fmt="{:.3f}")


def _reconciliation(day: date, settings: Settings) -> str:
    path = reconciliation_path(day, settings)
    if not path.exists():
        return "<p>not reconciled (the build did not run)</p>"
    table = pq.read_table(path)
    if not table.num_rows:
        return "<p class=ok>every repayment past the booking lag is booked by the bank</p>"
    amount = sum(table.column("amount").to_pylist())
    users = len(set(table.column("user_key").to_pylist()))
    return (f"<p class=critical>{table.num_rows} repayments ({amount:,.2f}) of {users} borrowers are not "
            f"booked by the bank after {settings.bank_booking_lag_days} days</p>")


def _bars(title: str, labels: list[str], values: list[float | None], width: int, height: int) -> str:
    """Vertical bars, a missing value left as a gap; the title and the largest value on top."""
    top = max((v for v in values if v is not None), default=0) or 1
    step = width / max(len(values), 1)
    span = height - 40
    bars = "".join(
        f'<rect x="{i * step + 1:.1f}" y="{height - 20 - (v / top) * span:.1f}" width="{step - 2:.1f}" '
        f'height="{(v / top) * span:.1f}" fill="#4a7bd0"><title>{html.escape(label)}: {v}</title></rect>'
        for i, (label, v) in enumerate(zip(labels, values, strict=True)) if v is not None)
    return (f'<svg role="img" aria-label="{html.escape(title)}" width="{width}" height="{height}">'
            f'<text x="4" y="14" font-size="12">{html.escape(title)} (max {top:g})</text>{bars}'
            f'<text x="4" y="{height - 4}" font-size="10">{html.escape(labels[0])}</text>'
            f'<text x="{width - 40}" y="{height - 4}" font-size="10">{html.escape(labels[-1])}</text></svg>')


def _hbars(name: str, labels: list[str], values: list[float], fmt: str) -> str:
    """Horizontal bars, one row per label, scaled to the largest value."""
    row, label_width, width = 18, 380, 760
    top = max(values) or 1
    rows = "".join(
        f'<text x="4" y="{i * row + 13}" font-size="11">{html.escape(label)}</text>'
        f'<rect x="{label_width}" y="{i * row + 3}" width="{(v / top) * (width - label_width - 70):.1f}" '
        f'height="{row - 6}" fill="#d0704a"/>'
        f'<text x="{width - 64}" y="{i * row + 13}" font-size="11">{fmt.format(v)}</text>'
        for i, (label, v) in enumerate(zip(labels, values, strict=True)))
    return (f'<svg role="img" aria-label="{name}" width="{width}" height="{len(labels) * row + 4}">'
            f"{rows}</svg>")
