"""Users and their hidden traits. Same seed → same people, whatever the dates simulated."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Population:
    account_id: np.ndarray  # raw ecosystem account ids: what real logs carry
    device_id: np.ndarray
    phone: np.ndarray
    order_rate: np.ndarray  # expected web-store orders per day
    instalment_propensity: np.ndarray

    def __len__(self) -> int:
        return len(self.account_id)


def make_population(users: int, seed: int) -> Population:
    rng = np.random.default_rng([seed, 0])
    ids = np.arange(users)
    imei_body = rng.integers(10**12, 10**13, size=users)
    mobile = rng.integers(10**9, 10**10, size=users)
    # Heavy-tailed activity: most users order a few times a year, a few order weekly.
    order_rate = rng.gamma(shape=0.6, scale=0.05, size=users)
    return Population(
        account_id=np.char.add("A", np.char.zfill(ids.astype(str), 9)),
        device_id=np.char.add("86", imei_body.astype(str)),
        phone=np.char.add("+861", mobile.astype(str)),
        order_rate=order_rate,
        instalment_propensity=rng.beta(2, 5, size=users),
    )
