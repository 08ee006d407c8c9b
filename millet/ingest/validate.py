"""Check landing lines against their contract in one DuckDB query generated from the contract.

Each line gets either typed values or the first reason it was refused, in contract field order,
from a fixed vocabulary so that quarantine can be counted and alerted on. Every JSON line is parsed
once (`from_json` into a struct of JSON values); the checks are plain SQL over that struct. A line
that was not UTF-8 (marked so by `landing.read_lines`) is refused before anything else.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta

import pyarrow as pa

from millet.contracts.base import IDENTIFIER_ROLES, PERSONAL_ROLES, Contract, FieldRule
from millet.ingest.quarantine import mask_sql
from millet.sqltext import ident, literal

REASONS = ("bad_encoding", "malformed_json", "not_an_object", "missing_field", "bad_type", "too_long",
           "bad_identifier", "unknown_enum", "out_of_range", "future_timestamp", "stale_timestamp")

# Clocks on phones drift; an event a few minutes "ahead" of the drop is not a fault.
FUTURE_TOLERANCE = timedelta(minutes=10)

# What Python's datetime.fromisoformat accepted before, with the time zone required.
_ISO_WITH_ZONE = r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}(:?\d{2})?)"
_INT32 = (-(2**31), 2**31 - 1)


@dataclass(frozen=True)
class _Check:
    condition: str
    reason: str
    detail: str  # a SQL expression

    def __post_init__(self):
        assert self.reason in REASONS, self.reason


def checked_lines_sql(contract: Contract, closes_at: datetime, keep: list[str], *,
                      max_lateness: timedelta) -> str:
    """SELECT over relation `lines` (landing.LINES_SCHEMA): reason and detail (NULL when the line is
    good), the raw line when it is not, the distinct unknown fields of a good line, and the typed
    values of the fields in `keep`. An event stamped more than `max_lateness` before `closes_at` is
    stale; one after it (give or take FUTURE_TOLERANCE) is from the future."""
    struct = json.dumps({f.name: "JSON" for f in contract.schema})
    checks = [
        _Check("bad_encoding", "bad_encoding", literal("not UTF-8: raw_line shows each invalid byte "
                                                       "sequence as U+FFFD")),
        _Check("not is_json", "malformed_json", "'not valid JSON'"),
        _Check("not is_object", "not_an_object", "json_type(line)"),
    ]
    for f in contract.schema:
        checks += _field_checks(f, contract.rules[f.name], closes_at, max_lateness)
    verdict = " ".join(f"when {c.condition} then {{'reason': '{c.reason}', 'detail': {c.detail}}}"
                       for c in checks)
    known = ", ".join(literal(name) for name in contract.schema.names)
    typed = ",\n        ".join(f"{_value(f)} as {ident('v:' + f.name)}" for f in contract.schema)
    kinds = ",\n        ".join(f"coalesce(json_type(r.{ident(f.name)}), 'NULL') as {ident('t:' + f.name)}"
                               for f in contract.schema)
    kept = "".join(f",\n    case when verdict is null then {ident('v:' + name)} end as {ident(name)}"
                   for name in keep)
    return f"""
with parsed as (
    select source_file, line_no, line, bad_encoding, json_valid(line) as is_json,
        -- CASE, not AND: DuckDB evaluates both sides of AND, and json_type raises on broken JSON.
        coalesce(case when is_json then json_type(line) = 'OBJECT' end, false) as is_object,
        case when is_object then from_json(line, {literal(struct)}) end as r
    from lines
), typed as (
    select *,
        {kinds},
        {typed}
    from parsed
), judged as (
    select *, case {verdict} end as verdict from typed
)
select source_file, line_no, verdict.reason as reason, verdict.detail as detail,
    case when verdict is not null then rtrim(line, chr(13) || chr(10)) end as raw_line,
    case when verdict is null then list_filter(json_keys(line), lambda k: not list_contains([{known}], k)) end
        as unknown_fields{kept}
from judged
"""


def check_lines(lines: list[str], contract: Contract, closes_at: datetime,
                max_lateness: timedelta | None = None) -> list[tuple[str, str] | None]:
    """(reason, detail) for each line, None when it is good: ingestion's own check, for small inputs.

    `max_lateness` defaults to the one Settings declares (not read from the environment)."""
    import duckdb

    from millet.ingest.landing import lines_table
    from millet.settings import Settings, declared_duckdb_config

    if max_lateness is None:
        max_lateness = timedelta(days=Settings.model_fields["max_event_lateness_days"].default)
    table = lines_table("-", pa.array(lines, pa.large_string()))
    checked = checked_lines_sql(contract, closes_at, keep=[], max_lateness=max_lateness)
    with duckdb.connect(config=declared_duckdb_config()) as con:
        con.register("lines", table)
        rows = con.sql(f"select reason, detail from ({checked}) order by line_no").fetchall()
    return [None if reason is None else (reason, detail) for reason, detail in rows]


def _field_checks(f: pa.Field, rule: FieldRule, closes_at: datetime, max_lateness: timedelta) -> list[_Check]:
    kind, value = ident("t:" + f.name), ident("v:" + f.name)
    raw = f"r.{ident(f.name)}::varchar"
    if rule.role in PERSONAL_ROLES:  # a refusal says what is wrong with a person's id, never the id
        raw = mask_sql(raw)
    checks = []
    if not f.nullable:
        checks.append(_Check(f"{kind} = 'NULL'", "missing_field", literal(f.name)))
    checks.append(_Check(f"{kind} <> 'NULL' and not ({_type_ok(f)})", "bad_type",
                         f"{literal(f.name + '=')} || {raw} || {literal(f' is not {f.type}')}"))
    said = f"{literal(f.name + '=')} || {raw}"
    checks += _string_checks(f, rule, said)
    if rule.enum is not None:
        options = ", ".join(literal(v) for v in rule.enum)
        checks.append(_Check(f"{value} not in ({options})", "unknown_enum",
                             f"{said} || {literal(' not in ' + str(rule.enum))}"))
    if pa.types.is_integer(f.type):  # also beyond what the column type holds, e.g. > 2^31 for int32
        lo, hi = _INT32 if f.type == pa.int32() else (None, None)
        checks.append(_Check(f"{kind} <> 'NULL' and {value} is null", "out_of_range", f"{said}"))
        if lo is not None:
            checks.append(_Check(f"{value} not between {lo} and {hi}", "out_of_range", f"{said}"))
    if rule.minimum is not None:
        checks.append(_Check(f"{value} < {rule.minimum}", "out_of_range", f"{said} || ' < {rule.minimum}'"))
    if rule.maximum is not None:
        checks.append(_Check(f"{value} > {rule.maximum}", "out_of_range", f"{said} || ' > {rule.maximum}'"))
    if rule.role == "event_time":
        latest, oldest = closes_at + FUTURE_TOLERANCE, closes_at - max_lateness
        checks.append(_Check(f"{value} > timestamptz {literal(latest.isoformat())}", "future_timestamp",
                             f"{said} || ' after the drop closed'"))
        stale = f" more than {max_lateness.days} days before the drop closed"
        checks.append(_Check(f"{value} < timestamptz {literal(oldest.isoformat())}", "stale_timestamp",
                             f"{said} || {literal(stale)}"))
    return checks


def _string_checks(f: pa.Field, rule: FieldRule, said: str) -> list[_Check]:
    """Length first, so that a huge value is refused without a regex over it or a copy in `detail`."""
    value = ident("v:" + f.name)
    is_identifier = rule.role in IDENTIFIER_ROLES
    checks = []
    if rule.max_length is not None:
        checks.append(_Check(f"length({value}) > {rule.max_length}",
                             "bad_identifier" if is_identifier else "too_long",
                             f"{literal(f.name + ' has ')} || length({value}) || "
                             f"{literal(f' characters, more than {rule.max_length}')}"))
    if rule.pattern is not None:
        checks.append(_Check(f"not regexp_full_match({value}, {literal(rule.pattern)})", "bad_identifier",
                             f"{said} || {literal(' does not match ' + rule.pattern)}"))
    return checks


def _type_ok(f: pa.Field) -> str:
    kind, t = ident("t:" + f.name), f.type
    if pa.types.is_string(t):
        return f"{kind} = 'VARCHAR'"
    if pa.types.is_boolean(t):
        return f"{kind} = 'BOOLEAN'"
    if pa.types.is_integer(t):
        return f"{kind} in ('BIGINT', 'UBIGINT')"
    if pa.types.is_floating(t):
        return f"{kind} in ('BIGINT', 'UBIGINT', 'DOUBLE')"
    if pa.types.is_timestamp(t):
        return f"{kind} = 'VARCHAR' and {ident('v:' + f.name)} is not null"
    raise TypeError(f"contract field {f.name} has a type ingestion cannot check: {t}")


def _value(f: pa.Field) -> str:
    """The field's typed value when its JSON kind is right, else NULL (never an error)."""
    j, t = f"r.{ident(f.name)}", f.type
    if pa.types.is_string(t):
        return f"{j} ->> '$'"
    if pa.types.is_timestamp(t):
        text = f"({j} ->> '$')"
        return f"case when regexp_full_match({text}, {literal(_ISO_WITH_ZONE)}) " \
               f"then try_cast({text} as timestamptz) end"
    sql_type = {pa.types.is_boolean: "boolean", pa.types.is_integer: "bigint", pa.types.is_floating: "double"}
    return next(f"try_cast({j} as {name})" for test, name in sql_type.items() if test(t))

