"""Label rows for the models, from the simulator's truth joined to bronze by loan, never by person.

The truth knows each disbursed loan's outcome and the borrower's true PD but names the borrower by raw
account id; bronze knows the loan's application under its pseudonymous user_key. Joining on `loan_id`
gives label rows that carry user_key only: no raw identifier reaches a training set.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pandas as pd

from millet.settings import Settings
from millet.sqltext import literal

# As the simulator defines it (millet/simulate/loans.py): 90+ days past due within 6 months.
DEFAULT_LABEL = "defaulted"
ORACLE = "oracle_pd"  # the simulator's true PD: the score no model should beat


class NoLabels(RuntimeError):
    pass


def loan_outcomes(settings: Settings) -> pd.DataFrame:
    """One row per disbursed loan: user_key, event_timestamp (its application), loan_id, the label
    `defaulted` (0/1) and `oracle_pd`; in application order."""
    truth = settings.truth_dir / "loans"
    bronze = settings.bronze_dir / "loans"
    for folder, what in ((truth, "the simulator's loan truth"), (bronze, "bronze loans")):
        if not any(folder.glob("dt=*/*.parquet")):
            raise NoLabels(f"no {what} under {folder}: simulate and ingest a world first "
                           "(`millet world`)")
    with duckdb.connect(config=settings.duckdb_config()) as con:
        return con.sql(f"""
            with applications as (
                select loan_id, any_value(user_key) as user_key, min(event_ts) as applied_at
                from read_parquet({literal(_files(bronze))})
                where event_type = 'application'
                group by loan_id
            )
            select a.user_key, a.applied_at as event_timestamp, t.loan_id,
                   t.defaulted::int as {DEFAULT_LABEL}, t.pd as {ORACLE}
            from read_parquet({literal(_files(truth))}) as t
            join applications as a using (loan_id)
            order by event_timestamp, t.loan_id
        """).df()


def _files(folder: Path) -> str:
    return str(folder / "dt=*" / "*.parquet")
