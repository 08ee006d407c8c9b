"""Loans and the bank's view of their repayments: the channels with memory across days.

A loan's whole life is decided when it is disbursed (schedule, whether and when the borrower stops
paying); each day then emits the events that fall on it. Rates, documented once:
- applications: borrowers (≈12-20% of users, riskier ones more often) apply about every 45 days;
- the lender's current policy approves when a noisy view of risk is below a cut-off (≈85% approved);
- terms 3/6/12 months, monthly instalments 30 days apart, 1.8% a month;
- a loan defaults with the user's true PD (≈3% overall): the borrower stops paying at one of the
  first three instalments, so it reaches 90 days past due within 6 months of disbursement;
- others pay each instalment on time (≈85%, fewer for riskier borrowers) or 1-20 days late (cured);
- the bank books each repayment the same day (60%), a day later (30%) or two days later (10%).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

import numpy as np
import pyarrow as pa

from millet.simulate.events import DAY_US, daytime_us, envelope, midnight_us
from millet.simulate.population import MARKET_LOAN_SIZE, Population

TERMS = np.array([3, 6, 12])
MONTHLY_RATE = 0.018
INSTALMENT_DAYS = 30
OVERDUE_MILESTONES = np.array([1, 30, 60, 90])
BANK_LAG_DAYS = ([0, 1, 2], [0.6, 0.3, 0.1])


@dataclass
class LoanBook:
    pop: Population
    # One row per instalment of every disbursed loan.
    user: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    loan_id: np.ndarray = field(default_factory=lambda: np.empty(0, object))
    product: np.ndarray = field(default_factory=lambda: np.empty(0, object))
    term: np.ndarray = field(default_factory=lambda: np.empty(0, np.int32))
    number: np.ndarray = field(default_factory=lambda: np.empty(0, np.int32))
    amount: np.ndarray = field(default_factory=lambda: np.empty(0))
    due: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))  # day ordinal
    paid: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))  # day ordinal, -1: never

    def day(self, day: date, rng: np.random.Generator, bank_loss: float = 0.0) -> tuple[dict, dict, pa.Table]:
        """(loans events, bank records, truth about today's new loans) for `day`."""
        apps, truth = self._originate(day, rng)
        repaid, overdue = self._servicing(day, rng)
        bank = self._bank_view(repaid, rng, bank_loss)
        loans = _concat([apps, repaid, overdue])
        return loans, bank, truth

    def _originate(self, day: date, rng: np.random.Generator) -> tuple[dict, pa.Table]:
        pop = self.pop
        who = np.flatnonzero(rng.random(len(pop)) < pop.borrow_rate)
        n = len(who)
        ts = np.sort(daytime_us(rng, day, n))
        ids = np.array([f"L{day:%Y%m%d}{i:06d}" for i in range(n)], dtype=object)
        product = np.where(rng.random(n) < 0.6, "cash_loan", "instalment").astype(object)
        asked = np.round(MARKET_LOAN_SIZE[pop.market[who]] * rng.lognormal(0, 0.5, n), -1)
        approved = pop.risk[who] + rng.normal(0, 0.8, n) < 1.3
        term = rng.choice(TERMS, n)
        defaulted = approved & (rng.random(n) < pop.pd[who])
        stops_at = np.where(defaulted, rng.integers(1, np.minimum(term, 3) + 1), term + 1)
        self._schedule(
            day,
            rng,
            who[approved],
            ids[approved],
            product[approved],
            asked[approved],
            term[approved],
            stops_at[approved],
        )
        a = approved
        events = _concat(
            [
                _loan_events(who, ids, ts, "application", product, asked, term=term),
                _loan_events(
                    who, ids, ts + 60_000_000, "decision", product, asked, term=term, approved=approved
                ),
                _loan_events(
                    who[a], ids[a], ts[a] + 120_000_000, "disbursement", product[a], asked[a], term=term[a]
                ),
            ]
        )
        truth = pa.table(
            {
                "loan_id": ids[a].astype(str),
                "account_id": pop.account_id.take(who[a]),
                "disbursed_on": [day] * a.sum(),
                "product": product[a].astype(str),
                "amount": asked[a],
                "term_months": term[a],
                "pd": pop.pd[who[a]],
                "defaulted": defaulted[a],
            }
        )
        return events, truth

    def _schedule(self, day, rng, who, ids, product, principal, term, stops_at) -> None:
        k = np.concatenate([np.arange(1, t + 1) for t in term]) if len(term) else np.empty(0, np.int64)
        owner = np.repeat(np.arange(len(term)), term)
        due = day.toordinal() + INSTALMENT_DAYS * k
        late_share = np.minimum(0.1 * np.exp(1.0 * self.pop.risk[who[owner]]), 0.9)
        late = np.where(rng.random(len(k)) >= late_share, 0, rng.integers(1, 21, len(k)))
        paid = np.where(k < stops_at[owner], due + late, -1)
        instalment = principal * (1 + MONTHLY_RATE * term) / term
        self.user = np.concatenate([self.user, who[owner]])
        self.loan_id = np.concatenate([self.loan_id, ids[owner]])
        self.product = np.concatenate([self.product, product[owner]])
        self.term = np.concatenate([self.term, term[owner]])
        self.number = np.concatenate([self.number, k])
        self.amount = np.concatenate([self.amount, np.round(instalment[owner], 2)])
        self.due = np.concatenate([self.due, due])
        self.paid = np.concatenate([self.paid, paid])

    def _servicing(self, day: date, rng: np.random.Generator) -> tuple[dict, dict]:
        today = day.toordinal()
        r = np.flatnonzero(self.paid == today)
        outstanding = (self.paid == -1) | (self.paid > today)
        o = np.flatnonzero(outstanding & np.isin(today - self.due, OVERDUE_MILESTONES))
        repaid = _loan_events(
            self.user[r],
            self.loan_id[r],
            daytime_us(rng, day, len(r)),
            "repayment",
            self.product[r],
            self.amount[r],
            term=self.term[r],
            number=self.number[r],
            dpd=today - self.due[r],
        )
        overdue = _loan_events(
            self.user[o],
            self.loan_id[o],
            midnight_us(day) + 3_600_000_000 + 0 * o,
            "overdue",
            self.product[o],
            self.amount[o],
            term=self.term[o],
            number=self.number[o],
            dpd=today - self.due[o],
        )
        return repaid, overdue

    def _bank_view(self, repaid: dict, rng: np.random.Generator, loss: float) -> dict:
        n = len(repaid["_who"])
        kept = rng.random(n) >= loss  # a bank-sync failure silently loses a slice of the day
        lag = rng.choice(BANK_LAG_DAYS[0], n, p=BANK_LAG_DAYS[1])
        booked = repaid["_ts"] + lag * DAY_US + rng.integers(0, 3_600_000_000, n)
        return {
            "_who": repaid["_who"][kept],
            "_ts": booked[kept],
            "event_id": np.char.add(
                "bnk-",
                np.char.add(
                    np.char.add(repaid["loan_id"][kept].astype(str), "-"),
                    repaid["instalment_no"][kept].astype(str),
                ),
            ),
            "loan_id": repaid["loan_id"][kept],
            "instalment_no": repaid["instalment_no"][kept],
            "amount": repaid["amount"][kept],
            "_lost": int((~kept).sum()),
        }


def _loan_events(who, ids, ts, kind, product, amount, *, term=None, approved=None, number=None, dpd=None):
    n = len(who)
    return {
        "_who": np.asarray(who, np.int64),
        "_ts": np.asarray(ts, np.int64),
        "loan_id": np.asarray(ids, object),
        "event_type": np.full(n, kind, object),
        "product": np.asarray(product, object),
        "amount": np.asarray(amount, float),
        "term_months": _or_none(term, n),
        "approved": _or_none(approved, n),
        "instalment_no": _or_none(number, n),
        "days_past_due": _or_none(dpd, n),
    }


def _or_none(values, n: int) -> np.ndarray:
    return np.full(n, None, object) if values is None else np.asarray(values, object)


def _concat(parts: list[dict]) -> dict:
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def with_envelope(pop: Population, records: dict, prefix: str, day: date, phone: bool = True) -> dict:
    """Sort by time and add ids and raw identifiers, the same way every channel does."""
    order = np.argsort(records["_ts"], kind="stable")
    body = {k: v[order] for k, v in records.items() if not k.startswith("_") and k != "event_id"}
    ev = envelope(pop, records["_who"][order], records["_ts"][order], prefix, day, 0, phone=phone)
    ev.pop("_who")
    if "event_id" in records:
        ev["event_id"] = records["event_id"][order]
    return ev | body
