"""Consent to the use of ecosystem data: each user's choice at onboarding and every later change."""

import pyarrow as pa

from millet.contracts.base import Contract, account_id_field, event_id_field, field

CONTRACT = Contract(
    channel="consent",
    version="1.0.0",
    is_consent_feed=True,
    description="Consent records: the latest one as of a day decides whether behaviour events are used.",
    schema=pa.schema(
        [
            event_id_field("Unique per record."),
            field("event_ts", pa.timestamp("us", tz="UTC"), role="event_time", doc="When it was chosen."),
            account_id_field(),
            field("consent_given", pa.bool_(), doc="True: behaviour data may be used for credit."),
            field("source", pa.string(), enum=("onboarding", "settings"), doc="Where the choice was made."),
        ]
    ),
)
