"""Wallet payments, including those declined for insufficient funds."""

import pyarrow as pa

from millet.contracts.base import Contract, event_fields, field

MERCHANT_CATEGORIES = (
    "grocery",
    "dining",
    "transport",
    "utilities",
    "telecom",
    "entertainment",
    "travel",
    "education",
    "health",
    "gambling",
    "transfer",
)

CONTRACT = Contract(
    channel="payments",
    version="1.0.0",
    consent_bound=True,
    description="Wallet transactions by merchant category, with their outcome.",
    schema=pa.schema(
        [
            *event_fields("pay", phone=True),
            field("merchant_category", pa.string(), enum=MERCHANT_CATEGORIES, doc="Merchant category."),
            field("amount", pa.float64(), minimum=0.0, maximum=1_000_000_000.0, doc="Local currency."),
            field(
                "status",
                pa.string(),
                enum=("approved", "declined_insufficient_funds", "declined_other"),
                doc="Outcome.",
            ),
        ]
    ),
)
