"""The lender's own loan records: applications to repayments, as the app saw them."""

import pyarrow as pa

from millet.contracts.base import Contract, event_fields, field

EVENT_TYPES = ("application", "decision", "disbursement", "repayment", "overdue")

CONTRACT = Contract(
    channel="loans",
    version="1.0.0",
    kept_by_law=True,
    description="Loan lifecycle events; amounts in local currency. Needed to service loans: never "
    "excluded for consent.",
    schema=pa.schema(
        [
            *event_fields("lon", phone=True),
            field("loan_id", pa.string(), doc="The loan (or application) the event belongs to."),
            field("event_type", pa.string(), enum=EVENT_TYPES, doc="Lifecycle step."),
            field("product", pa.string(), enum=("cash_loan", "instalment"), doc="Product."),
            field(
                "amount",
                pa.float64(),
                minimum=0.0,
                maximum=1_000_000_000.0,
                doc="Asked (application), lent (disbursement) or paid (repayment).",
            ),
            field("term_months", pa.int32(), nullable=True, minimum=1, maximum=36, doc="Loan term."),
            field("approved", pa.bool_(), nullable=True, doc="Decision outcome (decision events)."),
            field(
                "instalment_no",
                pa.int32(),
                nullable=True,
                minimum=1,
                maximum=36,
                doc="Which instalment (repayment and overdue events).",
            ),
            field(
                "days_past_due",
                pa.int32(),
                nullable=True,
                minimum=0,
                maximum=3_650,
                doc="Days the instalment is late (repayment and overdue events).",
            ),
        ]
    ),
)
