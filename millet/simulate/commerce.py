"""Web-store orders for one day, vectorised over the population."""

from __future__ import annotations

from datetime import UTC, date, datetime

import numpy as np
import pyarrow as pa

from millet.simulate.population import Population

_STATUS = np.array(["placed", "cancelled", "returned"])
_PAYMENT = np.array(["full", "instalment"])


def orders_for_day(pop: Population, day: date, rng: np.random.Generator) -> pa.Table:
    per_user = rng.poisson(pop.order_rate)
    who = np.repeat(np.arange(len(pop)), per_user)
    n = len(who)
    midnight_us = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()) * 10**6
    ts_us = np.sort(midnight_us + rng.integers(0, 86_400 * 10**6, size=n))
    instalment = rng.random(n) < pop.instalment_propensity[who]
    status = _STATUS[rng.choice(3, size=n, p=[0.9, 0.07, 0.03])]
    return pa.table(
        {
            "event_id": [f"com-{day:%Y%m%d}-{i:08d}" for i in range(n)],
            "event_ts": pa.array(ts_us, pa.timestamp("us", tz="UTC")),
            "account_id": pop.account_id[who],
            "device_id": pop.device_id[who],
            "phone": pop.phone[who],
            "order_id": [f"O{day:%Y%m%d}{i:07d}" for i in range(n)],
            "amount": np.round(rng.lognormal(5.5, 0.9, size=n), 2),
            "items": pa.array(1 + rng.poisson(0.6, size=n), pa.int32()),
            "payment_type": _PAYMENT[instalment.astype(int)],
            "coupon_used": rng.random(n) < 0.2,
            "status": status,
        }
    )
