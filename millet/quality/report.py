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
from millet.charts import bars, hbars, page, section
from millet.contracts import contracts
from millet.files import write_text
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
        section("Checks", _check_outcomes(day, settings)),
        section(f"Lines per channel, last {HISTORY_DAYS} days", _volume(day, settings)),
        section("Quarantined lines by reason, this day", _quarantine(day, settings)),
        section(f"The {TOP_DRIFT} most drifting features (PSI against the baseline)", _drift(day, settings)),
        section("Repayments: the lender's ledger against the bank's feed", _reconciliation(day, settings)),
    ]
    path = report_path(day, settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, page(f"Millet data quality, {day}", sections))
    return path


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
        lines = [(_json(settings.ingest_manifest_path(channel, d)) or {}).get("lines_in") for d in days]
        charts.append(bars(channel, [str(d)[5:] for d in days], lines, width=420, height=120))
    return "".join(charts)


def _quarantine(day: date, settings: Settings) -> str:
    labels, rates = [], []
    for channel in sorted(contracts()):
        manifest = _json(settings.ingest_manifest_path(channel, day)) or {}
        for reason, count in sorted(manifest.get("reasons", {}).items()):
            labels.append(f"{channel}: {reason}")
            rates.append(count / manifest["lines_in"] if manifest.get("lines_in") else 0.0)
    return hbars("quarantine", labels, rates, fmt="{:.2%}") if labels else "<p>no line quarantined</p>"


def _drift(day: date, settings: Settings) -> str:
    path = drift_path(day, settings)
    if not path.exists():
        return "<p>not measured (the snapshot check did not run)</p>"
    rows = [r for r in pq.read_table(path, columns=["feature", "psi"]).to_pylist() if r["psi"] is not None]
    top = sorted(rows, key=lambda r: r["psi"], reverse=True)[:TOP_DRIFT]
    if not top:
        return "<p>no baseline to compare with yet</p>"
    return hbars("psi", [r["feature"] for r in top], [r["psi"] for r in top], fmt="{:.3f}")


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
