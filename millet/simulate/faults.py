"""Faults a real feed has, each switchable and with a rate; all off unless asked for.

Record faults hit a `rate` share of a drop's lines, at most one fault per line, so the counts the
simulator logs under truth/faults/ are exact. File faults hit a whole part file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from millet.contracts.base import Contract, rule_of

RECORD_FAULTS = (
    "malformed",
    "bad_type",
    "missing_field",
    "unknown_enum",
    "bad_amount",
    "future_timestamp",
    "schema_drift",
)
COUNTED = (*RECORD_FAULTS, "duplicate", "late")  # what the truth log counts for every channel-day


@dataclass(frozen=True)
class Faults:
    duplicate: float = 0.0  # the same event delivered again in the same drop
    late: float = 0.0  # held back and delivered 1-3 days later, event time unchanged
    malformed: float = 0.0  # line cut short: not JSON
    bad_type: float = 0.0  # a number sent as a string
    missing_field: float = 0.0  # a required field absent
    unknown_enum: float = 0.0  # a value outside the contract's enum
    bad_amount: float = 0.0  # negative or absurd amount
    future_timestamp: float = 0.0  # event time weeks after the drop
    schema_drift: float = 0.0  # a new, unexpected field
    empty_file: float = 0.0  # per channel-day: an extra, empty part file
    truncated_gzip: float = 0.0  # per part file: the gzip stream cut short
    bank_sync_failure_day: date | None = None  # the bank feed silently misses a slice of this day
    bank_sync_loss: float = 0.3

    @classmethod
    def realistic(cls, start: date | None = None) -> Faults:
        return cls(
            duplicate=0.01,
            late=0.005,
            malformed=0.001,
            bad_type=0.0005,
            missing_field=0.0005,
            unknown_enum=0.0005,
            bad_amount=0.0005,
            future_timestamp=0.0002,
            schema_drift=0.0005,
            empty_file=0.02,
            truncated_gzip=0.01,
            bank_sync_failure_day=start + timedelta(days=1) if start else None,
        )



def corrupt(lines: pa.Array, contract: Contract, day: date, faults: Faults, rng: np.random.Generator):
    """Apply record faults, duplicates and late delivery to a drop's lines.

    Returns (lines delivered now, {days later: lines held back}, counts). Only the few lines hit
    leave Arrow for Python, so a drop of millions of lines stays fast.
    """
    n = len(lines)
    counts = dict.fromkeys(COUNTED, 0)
    draw = rng.random(n)
    clean = np.ones(n, bool)
    replaced: dict[int, str] = {}
    threshold = 0.0
    for name in RECORD_FAULTS:
        rate = getattr(faults, name)
        for i in np.flatnonzero((draw >= threshold) & (draw < threshold + rate)):
            changed = _break(name, lines[int(i)].as_py(), contract, day, rng)
            if changed is not None:
                replaced[int(i)] = changed
                clean[i] = False
                counts[name] += 1
        threshold += rate
    if replaced:
        mask = np.zeros(n, bool)
        mask[list(replaced)] = True
        lines = pc.replace_with_mask(lines, pa.array(mask), pa.array([replaced[i] for i in sorted(replaced)]))
    late = clean & (rng.random(n) < faults.late)
    delay = rng.integers(1, 4, n)
    later = {int(d): lines.filter(pa.array(late & (delay == d))) for d in np.unique(delay[late])}
    dup_pick = np.flatnonzero(~late & clean & (rng.random(n) < faults.duplicate))
    counts["late"], counts["duplicate"] = int(late.sum()), len(dup_pick)
    return pa.concat_arrays([lines.filter(pa.array(~late)), lines.take(dup_pick)]), later, counts


def _break(name: str, line: str, contract: Contract, day: date, rng: np.random.Generator) -> str | None:
    if name == "malformed":
        return line[: len(line) // 2]
    record = json.loads(line)
    if name == "bad_type":
        target = _first(contract, lambda f, r: pa.types.is_integer(f.type) or pa.types.is_floating(f.type))
        target = target or contract.event_time
        record[target] = str(record[target]) if target != contract.event_time else 1_700_000_000
    elif name == "missing_field":
        del record[contract.event_time]
    elif name == "unknown_enum":
        target = _first(contract, lambda f, r: r.enum is not None)
        if target is None:
            return None
        record[target] = "unheard_of"
    elif name == "bad_amount":
        target = _first(contract, lambda f, r: r.minimum is not None and r.role == "attribute")
        if target is None:
            return None
        record[target] = -1 if rng.random() < 0.5 else 10**12
    elif name == "future_timestamp":
        record[contract.event_time] = f"{day + timedelta(days=30)}T12:00:00.000000Z"
    elif name == "schema_drift":
        record["promo_channel"] = "push"
    return json.dumps(record, separators=(",", ":"))


def _first(contract: Contract, accept) -> str | None:
    for f in contract.schema:
        if rule_of(f).role == "attribute" and accept(f, rule_of(f)):
            return f.name
    return None
