"""The contract type and the helpers every channel's schema is written with."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from typing import Literal

import pyarrow as pa

Role = Literal["event_id", "event_time", "account", "identifier", "attribute"]
IDENTIFIER_ROLES = ("event_id", "account", "identifier")  # each states a format and a maximum length
PERSONAL_ROLES = ("account", "identifier")  # identify a person: never stored past ingestion

# Longer than any real value of a free-text or code field: a megabyte "name" is a fault, not data.
DEFAULT_MAX_LENGTH = 256

_RULE_KEY = b"millet"


@dataclass(frozen=True)
class FieldRule:
    """What a raw field means and what values it may take."""

    role: Role = "attribute"
    enum: tuple[str, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    max_length: int | None = None  # characters, for strings
    pattern: str | None = None  # a regular expression the whole value matches, for identifiers
    doc: str = ""


def field(
    name: str,
    type_: pa.DataType,
    *,
    nullable: bool = False,
    role: Role = "attribute",
    enum: tuple[str, ...] | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
    max_length: int | None = None,
    pattern: str | None = None,
    doc: str = "",
) -> pa.Field:
    """A contract field and its rule; every string gets a maximum length (DEFAULT_MAX_LENGTH unless
    given), and every identifier must state its format and maximum length."""
    is_string = pa.types.is_string(type_)
    if role in IDENTIFIER_ROLES and (pattern is None or max_length is None):
        raise ValueError(f"identifier field {name!r} needs a pattern= and a max_length=")
    if not is_string and (pattern is not None or max_length is not None):
        raise ValueError(f"field {name!r}: pattern= and max_length= apply to strings only")
    if is_string and max_length is None:
        max_length = DEFAULT_MAX_LENGTH
    rule = {"role": role, "enum": enum, "minimum": minimum, "maximum": maximum, "max_length": max_length,
            "pattern": pattern, "doc": doc}
    return pa.field(name, type_, nullable=nullable, metadata={_RULE_KEY: json.dumps(rule).encode()})


def rule_of(f: pa.Field) -> FieldRule:
    raw = json.loads((f.metadata or {}).get(_RULE_KEY, b"{}"))
    if raw.get("enum") is not None:
        raw["enum"] = tuple(raw["enum"])
    return FieldRule(**raw)


@dataclass(frozen=True)
class Contract:
    """A landing channel: its name, version and raw schema."""

    channel: str
    version: str
    schema: pa.Schema
    description: str
    # Ecosystem behaviour may be used only with the user's consent; loan records are kept regardless
    # (they are needed to service the loan). The consent feed itself is read before any other channel.
    consent_bound: bool = False
    is_consent_feed: bool = False
    # Loan and repayment records the lender must keep by law: an erasure leaves them, pseudonymous.
    kept_by_law: bool = False
    # Requests to Millet itself (erasure), not events about people: read by the erasure step, not checked
    # or built into features, and a day may have no drop.
    is_request_feed: bool = False

    @cached_property
    def rules(self) -> dict[str, FieldRule]:
        """Each field's rule, parsed once: validation reads it for every field of every row."""
        return {f.name: rule_of(f) for f in self.schema}

    def fields_with_role(self, role: Role) -> list[pa.Field]:
        return [f for f in self.schema if self.rules[f.name].role == role]

    @property
    def event_id(self) -> str:
        return self.fields_with_role("event_id")[0].name

    @property
    def event_time(self) -> str:
        return self.fields_with_role("event_time")[0].name

    @property
    def account(self) -> str:
        return self.fields_with_role("account")[0].name

    @cached_property
    def raw_identifiers(self) -> list[str]:
        """Fields that must never leave ingestion: the account id and every other identifier."""
        return [f.name for f in self.schema if self.rules[f.name].role in PERSONAL_ROLES]


def bronze_schema(contract: Contract) -> pa.Schema:
    """Bronze = the contract minus raw identifiers, plus the pseudonymous `user_key`."""
    kept = [f.remove_metadata() for f in contract.schema if f.name not in contract.raw_identifiers]
    return pa.schema([pa.field("user_key", pa.string(), nullable=False), *kept])


def event_id_field(doc: str) -> pa.Field:
    """The upstream system's key for an event: opaque to us, so only its alphabet and length are held
    to (a token: no spaces, quotes or control characters)."""
    return field("event_id", pa.string(), role="event_id", pattern="[A-Za-z0-9][A-Za-z0-9._:-]*",
                 max_length=64, doc=doc)


def account_id_field() -> pa.Field:
    """The ecosystem's account id, as it issues them: 'A' and a zero-padded number (A000000042)."""
    return field("account_id", pa.string(), role="account", pattern="A[0-9]{9,15}", max_length=16,
                 doc="Ecosystem account id (raw).")


def event_fields(prefix: str, *, phone: bool = False) -> list[pa.Field]:
    """The fields every landing event carries: its id, its time and the raw identifiers."""
    fields = [
        event_id_field(f"Unique per event; '{prefix}-' prefixed."),
        field("event_ts", pa.timestamp("us", tz="UTC"), role="event_time", doc="When it happened (UTC)."),
        account_id_field(),
        # IMEI: 15 digits (16 for IMEISV).
        field("device_id", pa.string(), nullable=True, role="identifier", pattern="[0-9]{14,16}",
              max_length=16, doc="IMEI-like device id (raw)."),
    ]
    if phone:
        # E.164: '+', a country code not starting with 0, at most 15 digits in all.
        fields.append(field("phone", pa.string(), nullable=True, role="identifier",
                            pattern="[+][1-9][0-9]{6,14}", max_length=16, doc="Phone number (raw)."))
    return fields


def contracts() -> dict[str, Contract]:
    from millet.contracts import appstore, bank_repayments, commerce, consent, device, forum, loans, payments

    modules = (consent, device, appstore, commerce, forum, payments, loans, bank_repayments)
    return {m.CONTRACT.channel: m.CONTRACT for m in modules}


def request_feeds() -> dict[str, Contract]:
    from millet.contracts import deletions

    return {deletions.CONTRACT.channel: deletions.CONTRACT}


def all_contracts() -> dict[str, Contract]:
    """The daily feeds and the request feeds: every landing channel."""
    return contracts() | request_feeds()


def consent_feed() -> str:
    """The channel of consent records: ingested before the others, which it filters."""
    return next(c.channel for c in contracts().values() if c.is_consent_feed)


def event_channels() -> list[str]:
    """Every other channel, sorted."""
    return sorted(name for name, c in contracts().items() if not c.is_consent_feed)


def ingestion_order() -> list[str]:
    """Every channel, in the order a day is ingested: consent first (ingestion reads it for the others)."""
    return [consent_feed(), *event_channels()]


def contract_for(channel: str) -> Contract:
    known = all_contracts()
    if channel not in known:
        raise KeyError(f"unknown channel {channel!r}; known channels: {', '.join(sorted(known))}")
    return known[channel]
