"""What every simulated event shares: ids, timestamps and the raw identifiers real logs carry."""

from __future__ import annotations

from datetime import UTC, date, datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from millet.simulate.population import Population

DAY_US = 86_400 * 10**6


def midnight_us(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()) * 10**6


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def envelope(
    pop: Population,
    who: np.ndarray,
    ts_us: np.ndarray,
    prefix: str,
    day: date,
    chunk: int,
    phone: bool = True,
) -> dict:
    """The shared columns for events of users `who` at times `ts_us`, sorted by time."""
    order = np.argsort(ts_us, kind="stable")
    who, ts_us = who[order], ts_us[order]
    columns = {
        "event_id": pc.binary_join_element_wise(
            f"{prefix}-{day:%Y%m%d}-{chunk:03d}-", pc.cast(pa.array(np.arange(len(who))), pa.string()), ""
        ),
        "event_ts": pa.array(ts_us, pa.timestamp("us", tz="UTC")),
        "account_id": pop.account_id.take(who),
        "device_id": pop.device_id.take(who),
    }
    if phone:
        columns["phone"] = pop.phone.take(who)
    return columns | {"_who": who}


def repeat_users(rng: np.random.Generator, rate: np.ndarray) -> np.ndarray:
    """Each user i appears Poisson(rate[i]) times."""
    return np.repeat(np.arange(len(rate)), rng.poisson(rate))


def daytime_us(rng: np.random.Generator, day: date, n: int, night_share: np.ndarray | float = 0.08):
    """Event times within `day`; a `night_share` of them between 00:00 and 05:00."""
    night = rng.random(n) < night_share
    offset = np.where(night, rng.integers(0, 5 * 3600 * 10**6, n), rng.integers(7 * 3600 * 10**6, DAY_US, n))
    return midnight_us(day) + offset


def pick(rng: np.random.Generator, options: tuple[str, ...], weights: np.ndarray) -> np.ndarray:
    """One option per row, row-wise weights (n × len(options))."""
    cumulative = np.cumsum(weights / weights.sum(axis=1, keepdims=True), axis=1)
    index = (rng.random((len(weights), 1)) > cumulative).sum(axis=1)
    return np.asarray(options)[np.minimum(index, len(options) - 1)]
