"""Check one parsed record against its contract: a typed row, or the reason it was refused.

Reasons are a fixed vocabulary so that quarantine can be counted and alerted on.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import pyarrow as pa

from millet.contracts.base import Contract, FieldRule

REASONS = ("malformed_json", "not_an_object", "missing_field", "bad_type", "unknown_enum", "out_of_range",
           "future_timestamp")

# Clocks on phones drift; an event a few minutes "ahead" of the drop is not a fault.
FUTURE_TOLERANCE = timedelta(minutes=10)


class Rejected(ValueError):
    def __init__(self, reason: str, detail: str):
        assert reason in REASONS
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def parse_line(line: str) -> dict[str, Any]:
    try:
        record = json.loads(line)
    except ValueError as exc:
        raise Rejected("malformed_json", str(exc)) from None
    if not isinstance(record, dict):
        raise Rejected("not_an_object", type(record).__name__)
    return record


def check_record(record: dict[str, Any], contract: Contract, closes_at: datetime) -> dict[str, Any]:
    """Return the record with values coerced to the contract's types, or raise Rejected."""
    row = {}
    for f in contract.schema:
        value = record.get(f.name)
        if value is None:
            if not f.nullable:
                raise Rejected("missing_field", f.name)
            row[f.name] = None
            continue
        row[f.name] = _check_value(f, contract.rules[f.name], _coerce(f, value), closes_at)
    return row


def _coerce(f: pa.Field, value: Any) -> Any:
    t = f.type
    ok = (
        (pa.types.is_string(t) and isinstance(value, str))
        or (pa.types.is_boolean(t) and isinstance(value, bool))
        or (pa.types.is_integer(t) and isinstance(value, int) and not isinstance(value, bool))
        or (pa.types.is_floating(t) and isinstance(value, int | float) and not isinstance(value, bool))
        or (pa.types.is_timestamp(t) and isinstance(value, str))
    )
    if not ok:
        raise Rejected("bad_type", f"{f.name}={value!r} is not {t}")
    if pa.types.is_timestamp(t):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise Rejected("bad_type", f"{f.name}={value!r} is not an ISO-8601 timestamp") from None
        if parsed.tzinfo is None:
            raise Rejected("bad_type", f"{f.name}={value!r} has no time zone")
        return parsed
    return float(value) if pa.types.is_floating(t) else value


def _check_value(f: pa.Field, rule: FieldRule, value: Any, closes_at: datetime) -> Any:
    if rule.enum is not None and value not in rule.enum:
        raise Rejected("unknown_enum", f"{f.name}={value!r} not in {rule.enum}")
    if rule.minimum is not None and value < rule.minimum:
        raise Rejected("out_of_range", f"{f.name}={value!r} < {rule.minimum}")
    if rule.maximum is not None and value > rule.maximum:
        raise Rejected("out_of_range", f"{f.name}={value!r} > {rule.maximum}")
    if rule.role == "event_time" and value > closes_at + FUTURE_TOLERANCE:
        raise Rejected("future_timestamp", f"{f.name}={value.isoformat()} after the drop closed")
    return value


def unknown_fields(record: dict[str, Any], contract: Contract) -> set[str]:
    return set(record) - set(contract.schema.names)
