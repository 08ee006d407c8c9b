"""The funding bank's own feed of repayments it received: the same repayments, seen from the bank."""

import pyarrow as pa

from millet.contracts.base import Contract, account_id_field, event_id_field, field

CONTRACT = Contract(
    channel="bank_repayments",
    version="1.0.0",
    kept_by_law=True,
    description="Repayments as the bank partner recorded them, arriving with a lag of up to a few days.",
    schema=pa.schema(
        [
            event_id_field("The bank's own record id."),
            field(
                "event_ts", pa.timestamp("us", tz="UTC"), role="event_time", doc="When the bank booked it."
            ),
            account_id_field(),
            field("loan_id", pa.string(), doc="The lender's loan id."),
            field("instalment_no", pa.int32(), minimum=1, maximum=36, doc="Which instalment."),
            field(
                "amount", pa.float64(), minimum=0.0, maximum=1_000_000_000.0, doc="Received, local currency."
            ),
        ]
    ),
)
