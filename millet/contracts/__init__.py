"""Data contracts: one pyarrow schema per landing channel, the single source of truth for raw fields.

Each field carries its rules in pyarrow field metadata (enum values, range, maximum length, an
identifier's format, role), so ingestion, the simulator and the docs all read the same declaration.
"""

from millet.contracts.base import (
    Contract,
    FieldRule,
    all_contracts,
    bronze_schema,
    consent_feed,
    contract_for,
    contracts,
    event_channels,
    event_fields,
    field,
    ingestion_order,
    request_feeds,
)

__all__ = ["all_contracts", "request_feeds", "event_fields", "Contract", "FieldRule", "bronze_schema",
           "consent_feed", "contract_for", "contracts", "event_channels", "field", "ingestion_order"]
