"""Phone telemetry: one event per usage session."""

import pyarrow as pa

from millet.contracts.base import Contract, event_fields, field

APP_CATEGORIES = ("social", "games", "finance", "shopping", "education", "video", "tools")

CONTRACT = Contract(
    channel="device",
    version="1.0.0",
    consent_bound=True,
    description="Usage sessions reported by the phone: screen time, launches, charging, SIM and city.",
    schema=pa.schema(
        [
            *event_fields("dev", phone=True),
            field("screen_seconds", pa.int32(), minimum=0, maximum=86_400, doc="Screen-on time."),
            field("app_launches", pa.int32(), minimum=0, maximum=10_000, doc="Apps opened."),
            field("top_app_category", pa.string(), enum=APP_CATEGORIES, doc="Category used most."),
            field("is_charging", pa.bool_(), doc="Charging during the session."),
            field("sim_changed", pa.bool_(), doc="SIM differs from the previous session's."),
            field("city_changed", pa.bool_(), doc="City differs from the previous session's."),
            field("os_version", pa.string(), doc="Operating-system version."),
            field("device_model", pa.string(), doc="Phone model."),
        ]
    ),
)
