"""The five behaviour channels for one day and one slice of users, vectorised.

Rates (documented once, here; per user per day unless said):
- daily active share ≈ 0.80 (flagship owners a little more, long-tenure users more);
- device: ≈ 9 sessions per active user; risky users do more of it at night and change SIM more;
- appstore: ≈ 0.15 events; the share of other lenders' loan apps and gambling apps rises with risk;
- commerce: ≈ 1 order a month, more with income; instalment use and cancellations rise with risk;
- forum: ≈ 0.08 actions; reports against the user rise with risk;
- payments: ≈ 2.5 wallet payments per active user; insufficient-funds declines rise with risk.
"""

from __future__ import annotations

from datetime import date

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from millet.contracts.appstore import APP_CATEGORIES as STORE_CATEGORIES
from millet.contracts.device import APP_CATEGORIES as DEVICE_CATEGORIES
from millet.contracts.payments import MERCHANT_CATEGORIES
from millet.simulate.events import daytime_us, envelope, pick, repeat_users, sigmoid
from millet.simulate.population import MARKET_CURRENCY, Population

OS_VERSIONS = np.array(["12", "13", "14"])
MODELS = np.array(["lite", "standard", "pro"])


def active_today(pop: Population, rng: np.random.Generator) -> np.ndarray:
    return rng.random(len(pop)) < 0.7 + 0.04 * pop.device_tier + 0.02 * (pop.tenure_days > 365)


def device(pop: Population, day: date, rng: np.random.Generator, chunk: int) -> dict:
    who = repeat_users(rng, 9.0 * active_today(pop, rng))
    night_share = 0.06 + 0.06 * sigmoid(2 * pop.risk[who])
    ev = envelope(pop, who, daytime_us(rng, day, len(who), night_share), "dev", day, chunk)
    who = ev.pop("_who")
    n, risk = len(who), pop.risk[who]
    weights = np.ones((n, len(DEVICE_CATEGORIES)))
    weights[:, DEVICE_CATEGORIES.index("games")] += 0.6 * sigmoid(2 * risk)
    weights[:, DEVICE_CATEGORIES.index("finance")] += 0.4 * sigmoid(2 * risk)
    weights[:, DEVICE_CATEGORIES.index("education")] += 0.5 * sigmoid(-2 * risk)
    return ev | {
        "screen_seconds": np.minimum(rng.lognormal(5.5, 1.0, n), 86_400).astype(np.int32),
        "app_launches": pa.array(rng.poisson(6 + 2 * sigmoid(risk)), pa.int32()),
        "top_app_category": pick(rng, DEVICE_CATEGORIES, weights),
        "is_charging": rng.random(n) < 0.2,
        "sim_changed": rng.random(n) < 0.0005 * np.exp(1.2 * risk),
        "city_changed": rng.random(n) < 0.001 * np.exp(0.5 * risk),
        "os_version": OS_VERSIONS[pop.device_tier[who] - 1],
        "device_model": MODELS[pop.device_tier[who] - 1],
    }


def appstore(pop: Population, day: date, rng: np.random.Generator, chunk: int) -> dict:
    who = repeat_users(rng, np.full(len(pop), 0.15))
    ev = envelope(pop, who, daytime_us(rng, day, len(who)), "app", day, chunk, phone=False)
    who = ev.pop("_who")
    n, risk = len(who), pop.risk[who]
    weights = np.ones((n, len(STORE_CATEGORIES)))
    weights[:, STORE_CATEGORIES.index("loan")] = 0.15 * np.exp(1.0 * risk)
    weights[:, STORE_CATEGORIES.index("gambling")] = 0.05 * np.exp(1.0 * risk)
    category = pick(rng, STORE_CATEGORIES, weights)
    action = np.array(["install", "uninstall", "purchase"])[rng.choice(3, n, p=[0.6, 0.3, 0.1])]
    price = np.where(action == "purchase", np.round(rng.lognormal(2.5, 0.8, n), 2), 0.0)
    return ev | {
        "action": action,
        "app_id": np.char.add(np.char.add(category, "."), rng.integers(0, 400, n).astype(str)),
        "category": category,
        "price": price * MARKET_CURRENCY[pop.market[who]],
    }


def commerce(pop: Population, day: date, rng: np.random.Generator, chunk: int) -> dict:
    rate = 0.033 * np.sqrt(pop.income / 5_000) * (0.8 + 0.4 * (pop.device_tier == 3))
    who = repeat_users(rng, rate)
    ev = envelope(pop, who, daytime_us(rng, day, len(who)), "com", day, chunk)
    who = ev.pop("_who")
    n, risk = len(who), pop.risk[who]
    cancelled = rng.random(n) < 0.05 * np.exp(0.5 * risk)
    returned = ~cancelled & (rng.random(n) < 0.03)
    amount = np.round(rng.lognormal(5.3, 0.9, n) * np.sqrt(pop.income[who] / 5_000), 2)
    return ev | {
        "order_id": pc.binary_join_element_wise("O", ev["event_id"], ""),
        "amount": amount * MARKET_CURRENCY[pop.market[who]],
        "items": pa.array(1 + rng.poisson(0.6, n), pa.int32()),
        "payment_type": np.where(rng.random(n) < sigmoid(-1.2 + 0.8 * risk), "instalment", "full"),
        "coupon_used": rng.random(n) < 0.2,
        "status": np.where(cancelled, "cancelled", np.where(returned, "returned", "placed")),
        "address_changed": rng.random(n) < 0.02 * np.exp(0.6 * risk),
    }


def forum(pop: Population, day: date, rng: np.random.Generator, chunk: int) -> dict:
    who = repeat_users(rng, np.full(len(pop), 0.08))
    ev = envelope(pop, who, daytime_us(rng, day, len(who)), "frm", day, chunk, phone=False)
    who = ev.pop("_who")
    n, risk = len(who), pop.risk[who]
    reported = rng.random(n) < 0.02 * np.exp(0.9 * risk)
    action = np.where(
        reported, "reported", np.array(["post", "reply", "like"])[rng.choice(3, n, p=[0.2, 0.3, 0.5])]
    )
    return ev | {
        "action": action,
        "board": np.array(["phones", "deals", "help", "offtopic"])[rng.integers(0, 4, n)],
        "account_age_days": pa.array(np.minimum(pop.tenure_days[who], 20_000), pa.int32()),
    }


def payments(pop: Population, day: date, rng: np.random.Generator, chunk: int) -> dict:
    who = repeat_users(rng, 2.5 * active_today(pop, rng))
    ev = envelope(pop, who, daytime_us(rng, day, len(who)), "pay", day, chunk)
    who = ev.pop("_who")
    n, risk = len(who), pop.risk[who]
    weights = np.ones((n, len(MERCHANT_CATEGORIES)))
    weights[:, MERCHANT_CATEGORIES.index("gambling")] = 0.02 * np.exp(1.2 * risk)
    weights[:, MERCHANT_CATEGORIES.index("transfer")] = 0.6 * np.exp(0.4 * risk)
    declined = rng.random(n) < sigmoid(-4.2 + 1.0 * risk - 0.6 * np.log(pop.income[who] / 5_000))
    other = ~declined & (rng.random(n) < 0.01)
    amount = np.round(rng.lognormal(3.6, 1.1, n) * np.sqrt(pop.income[who] / 5_000), 2)
    return ev | {
        "merchant_category": pick(rng, MERCHANT_CATEGORIES, weights),
        "amount": amount * MARKET_CURRENCY[pop.market[who]],
        "status": np.where(
            declined, "declined_insufficient_funds", np.where(other, "declined_other", "approved")
        ),
    }


GENERATORS = {
    "device": device,
    "appstore": appstore,
    "commerce": commerce,
    "forum": forum,
    "payments": payments,
}
