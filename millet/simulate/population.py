"""Users and their hidden traits. Same seed → same people, whatever the dates simulated.

The traits are never written to the landing zone; they drive behaviour on every channel, so
behaviour carries a real but noisy signal about risk. `truth/users.parquet` keeps them for scoring.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

MARKETS = np.array(["CN", "IN", "ID"])
MARKET_SHARE = [0.62, 0.33, 0.05]
# Typical loan size in local currency (DOMAIN.md: "a few thousand yuan"; ~US$1,000 in India).
MARKET_LOAN_SIZE = np.array([3_000.0, 70_000.0, 12_000_000.0])
# Purchasing power relative to CN, to scale every amount into local currency.
MARKET_CURRENCY = np.array([1.0, 11.5, 2_200.0])
AGE_BANDS = np.array(["18-24", "25-34", "35-44", "45+"])


@dataclass(frozen=True)
class Population:
    account_id: pa.Array  # raw ids, as real logs carry them
    device_id: pa.Array
    phone: pa.Array
    market: np.ndarray  # index into MARKETS
    age_band: np.ndarray  # index into AGE_BANDS
    city_tier: np.ndarray  # 1 (largest cities) .. 4
    income: np.ndarray  # monthly, CN-yuan equivalent
    device_tier: np.ndarray  # 1 budget .. 3 flagship
    tenure_days: np.ndarray  # days in the ecosystem at the simulation start
    consent: np.ndarray  # False: declined the use of ecosystem data
    risk: np.ndarray  # latent credit risk, standard normal; higher is riskier
    pd: np.ndarray  # true probability that a loan defaults (90+ DPD within 6 months)
    borrow_rate: np.ndarray  # expected loan applications per day

    def __len__(self) -> int:
        return len(self.account_id)

    def to_table(self) -> pa.Table:
        columns = {f.name: getattr(self, f.name) for f in fields(self)}
        columns["market"] = MARKETS[self.market]
        columns["age_band"] = AGE_BANDS[self.age_band]
        return pa.table(columns)


def make_population(users: int, seed: int) -> Population:
    rng = np.random.default_rng([seed, 0])
    market = rng.choice(3, size=users, p=MARKET_SHARE)
    age_band = rng.choice(4, size=users, p=[0.3, 0.38, 0.2, 0.12])
    city_tier = 1 + rng.choice(4, size=users, p=[0.2, 0.3, 0.3, 0.2])
    income = np.exp(rng.normal(8.6 - 0.15 * city_tier + 0.1 * np.minimum(age_band, 2), 0.55))
    device_tier = 1 + np.clip(np.round((np.log(income) - 8.2) * 1.6 + rng.normal(0, 0.7, users)), 0, 2)
    # Risk: partly explained by observable circumstances, mostly idiosyncratic (character, shocks).
    risk = _standardise(
        -0.45 * _standardise(np.log(income))
        - 0.25 * (age_band == 0)
        - 0.2 * (device_tier - 2)
        + rng.normal(0, 1, users)
    )
    # Calibrated so that about 3% of loans default; the riskiest decile defaults several times as often.
    pd = 1 / (1 + np.exp(-(-3.9 + 1.1 * risk)))
    borrower = rng.random(users) < 0.12 + 0.08 * (risk > 0.5)
    return Population(
        account_id=_ids("A", np.arange(users), width=9),
        device_id=_ids("86", rng.integers(10**12, 10**13, size=users)),
        phone=_ids("+861", rng.integers(10**9, 10**10, size=users)),
        market=market,
        age_band=age_band,
        city_tier=city_tier,
        income=income,
        device_tier=device_tier.astype(np.int8),
        tenure_days=rng.gamma(2.0, 400.0, size=users).astype(np.int32),
        consent=rng.random(users) >= 0.03,
        risk=risk,
        pd=pd,
        borrow_rate=np.where(borrower, 1 / 45 * np.exp(0.3 * risk), 0.0),
    )


def _ids(prefix: str, numbers: np.ndarray, width: int = 0) -> pa.Array:
    digits = pc.cast(pa.array(numbers), pa.string())
    if width:
        digits = pc.utf8_lpad(digits, width=width, padding="0")
    return pc.binary_join_element_wise(prefix, digits, "")


def _standardise(x: np.ndarray) -> np.ndarray:
    return (x - x.mean()) / (x.std() or 1.0)
