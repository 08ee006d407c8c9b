"""App-store activity: installs, uninstalls and paid purchases."""

import pyarrow as pa

from millet.contracts.base import Contract, event_fields, field

APP_CATEGORIES = ("loan", "gambling", "finance", "education", "games", "social", "shopping", "tools")

CONTRACT = Contract(
    channel="appstore",
    version="1.0.0",
    consent_bound=True,
    description="Installs, uninstalls and paid purchases in the app store, by app and category.",
    schema=pa.schema(
        [
            *event_fields("app"),
            field("action", pa.string(), enum=("install", "uninstall", "purchase"), doc="What happened."),
            field("app_id", pa.string(), doc="Store id of the app."),
            field(
                "category", pa.string(), enum=APP_CATEGORIES, doc="Store category ('loan': other lenders)."
            ),
            field(
                "price",
                pa.float64(),
                minimum=0.0,
                maximum=10_000_000.0,
                doc="Paid, local currency (0 if free).",
            ),
        ]
    ),
)
