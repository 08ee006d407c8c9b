"""Official web-store orders, one event per order state change."""

import pyarrow as pa

from millet.contracts.base import Contract, event_fields, field

CONTRACT = Contract(
    channel="commerce",
    version="1.1.0",
    consent_bound=True,
    description="Orders placed, cancelled or returned in the official web store, and address changes.",
    schema=pa.schema(
        [
            *event_fields("com", phone=True),
            field("order_id", pa.string(), doc="Order the event belongs to."),
            field("amount", pa.float64(), minimum=0.0, maximum=1_000_000_000.0, doc="Total, local currency."),
            field("items", pa.int32(), minimum=1, maximum=1_000, doc="Items in the order."),
            field("payment_type", pa.string(), enum=("full", "instalment"), doc="How it is paid."),
            field("coupon_used", pa.bool_(), doc="Whether a coupon was applied."),
            field("status", pa.string(), enum=("placed", "cancelled", "returned"), doc="Order state."),
            field("address_changed", pa.bool_(), doc="Delivery address differs from the last order's."),
        ]
    ),
)
