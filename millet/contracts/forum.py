"""The user forum: posts, replies, likes, and reports made against the user."""

import pyarrow as pa

from millet.contracts.base import Contract, event_fields, field

CONTRACT = Contract(
    channel="forum",
    version="1.0.0",
    consent_bound=True,
    description="Forum activity by the user, and reports other members filed against them.",
    schema=pa.schema(
        [
            *event_fields("frm"),
            field("action", pa.string(), enum=("post", "reply", "like", "reported"), doc="What happened."),
            field("board", pa.string(), doc="Board the activity is on."),
            field("account_age_days", pa.int32(), minimum=0, maximum=20_000, doc="Forum account age."),
        ]
    ),
)
