"""The repayment reconciliation check: dbt's rec_bank_repayments__unconfirmed holds, per as-of day, every
repayment the lender recorded that the bank has not booked once its lag passed; any row is a critical
alert (counts, amounts, the affected pseudonymous user keys) and stops publication."""

from __future__ import annotations

from datetime import date

import pyarrow.compute as pc
import pyarrow.parquet as pq

from millet.alerts import SAMPLE_KEYS, Alert, raise_alerts, report_path
from millet.settings import Settings, get_settings
from millet.transform import reconciliation_path


class ReconciliationFailed(RuntimeError):
    pass


def reconcile_repayments(day: str | date, settings: Settings | None = None) -> dict:
    """Alert on the day's unconfirmed repayments; raise ReconciliationFailed if there are any."""
    settings = settings or get_settings()
    path = reconciliation_path(day, settings)
    table = pq.read_table(path)
    users = sorted(set(table.column("user_key").to_pylist()))
    summary = {
        "unconfirmed": table.num_rows,
        "amount": float(pc.sum(table.column("amount")).as_py() or 0.0),
        "users": len(users),
        "oldest_days": int(pc.max(table.column("days_unconfirmed")).as_py() or 0),
        "table": str(path),
    }
    if table.num_rows:
        raise_alerts([Alert(
            severity="critical", check="repayment_reconciliation", dataset="bank_repayments",
            logical_date=str(day), counts=summary, sample_keys=users[:SAMPLE_KEYS],
            report=str(report_path(str(day), settings)),
            summary=(f"{summary['unconfirmed']} repayments ({summary['amount']:,.2f}) of {len(users)} "
                     f"borrowers recorded by the lender are not booked by the bank after "
                     f"{settings.bank_booking_lag_days} days; publication stopped"),
        )], settings)
        raise ReconciliationFailed(f"{summary['unconfirmed']} repayments unconfirmed by the bank for {day} "
                                   f"(details: {path})")
    return summary
