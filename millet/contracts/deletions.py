"""Erasure requests (the right to be forgotten), as the ecosystem's account service sends them."""

import pyarrow as pa

from millet.contracts.base import Contract, account_id_field, event_id_field, field

CONTRACT = Contract(
    channel="deletions",
    version="1.0.0",
    is_request_feed=True,
    description="Each line asks that a person be forgotten: erased from every zone by the next nightly run, "
    "but for the loan and repayment records the lender must keep by law (pseudonymous). A day without "
    "requests needs no drop.",
    schema=pa.schema(
        [
            event_id_field("Unique per request."),
            field("event_ts", pa.timestamp("us", tz="UTC"), role="event_time", doc="When it was asked."),
            account_id_field(),
            field("request", pa.string(), enum=("erasure",), doc="What is asked."),
        ]
    ),
)
