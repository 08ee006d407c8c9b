"""Official web-store orders, one event per order state change."""

import pyarrow as pa

from millet.contracts.base import Contract, field

ORDERS = Contract(
    channel="commerce",
    version="1.0.0",
    description="Orders placed, cancelled or returned in the official web store.",
    schema=pa.schema(
        [
            field("event_id", pa.string(), role="event_id", doc="Unique per delivered event."),
            field("event_ts", pa.timestamp("us", tz="UTC"), role="event_time", doc="When it happened."),
            field("account_id", pa.string(), role="account", doc="Ecosystem account id (raw)."),
            field("device_id", pa.string(), nullable=True, role="identifier", doc="IMEI-like id."),
            field("phone", pa.string(), nullable=True, role="identifier", doc="Phone number."),
            field("order_id", pa.string(), doc="Order the event belongs to."),
            field("amount", pa.float64(), minimum=0.0, maximum=1_000_000.0, doc="Total, local currency."),
            field("items", pa.int32(), minimum=1, maximum=1_000, doc="Items in the order."),
            field("payment_type", pa.string(), enum=("full", "instalment"), doc="How it is paid."),
            field("coupon_used", pa.bool_(), doc="Whether a coupon was applied."),
            field("status", pa.string(), enum=("placed", "cancelled", "returned"), doc="Order state."),
        ]
    ),
)
