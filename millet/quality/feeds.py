"""Raw-feed checks: right after ingestion, one GX checkpoint per landing channel over the day's feed
profile, one row of figures: whether a drop came at all and by the cut-off, its volume against the median
of the same weekday over the last weeks, its worst quarantine reason, fields the contract does not know,
the share excluded for consent and the largest rise of an optional field's null rate. Thresholds:
expectations/feeds.yml."""

from __future__ import annotations

import json
import statistics
from datetime import UTC, date, datetime, time, timedelta

import duckdb
import yaml

from millet.contracts import contracts
from millet.contracts.base import bronze_schema
from millet.files import write_text
from millet.ingest.partition import partition_dir
from millet.quality.gx import GxProject
from millet.settings import Settings, get_settings
from millet.sqltext import ident, literal

PROFILE_COLUMNS = (
    "drop_present",
    "hours_late",
    "volume_ratio",
    "quarantine_rate",
    "unknown_fields",
    "consent_exclusion_rate",
    "null_rate_increase",
)


ALERT_COUNTS = ("lines_in", "usual_lines", "quarantine_rate", "null_rate_increase")


class FeedCheckFailed(RuntimeError):
    pass


def load_feed_thresholds(settings: Settings) -> dict:
    return yaml.safe_load((settings.expectations_dir / "feeds.yml").read_text())


def check_feeds(day: str | date, settings: Settings | None = None) -> dict:
    """Profile and check every channel's day; alert; raise FeedCheckFailed on a critical failure."""
    settings = settings or get_settings()
    config = load_feed_thresholds(settings)
    summary = {}
    project = GxProject(settings)
    for channel in sorted(contracts()):
        profile = feed_profile(channel, str(day), config["thresholds"], settings)
        outcome = _run_checkpoint(project, channel, profile, config, str(day))
        summary[channel] = {"profile": profile, **outcome}
    project.build_data_docs()
    out = settings.root / "quality" / "feeds" / f"dt={day}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text(out, json.dumps(summary, indent=2) + "\n")
    failed = {channel: s["failed"] for channel, s in summary.items() if s["failed"]}
    if failed:
        raise FeedCheckFailed(f"critical raw-feed checks failed for {day}: {failed} (details: {out})")
    return summary


def delivery_cutoff(day: str | date, limits: dict) -> datetime:
    """When the partners' drops of `day` are due: `delivery_cutoff_hours` after the day ends (UTC)."""
    ends = datetime.combine(date.fromisoformat(str(day)) + timedelta(days=1), time(), UTC)
    return ends + timedelta(hours=limits["delivery_cutoff_hours"])


def drops_due(day: str | date, settings: Settings | None = None, now: datetime | None = None) -> bool:
    """Whether the cut-off of `day`'s drops has passed."""
    settings = settings or get_settings()
    return (now or datetime.now(UTC)) >= delivery_cutoff(day, load_feed_thresholds(settings)["thresholds"])


def run_may_start(day: str | date, run_type: str, settings: Settings | None = None,
                  now: datetime | None = None) -> bool:
    """Whether the night's run for `day` may start: a scheduled run once the day's drops are due; a run
    someone asked for (`millet run`, a backfill: Airflow's "manual" and "backfill" runs) at once, on
    the day they chose."""
    return run_type != "scheduled" or drops_due(day, settings, now)


def feed_profile(channel: str, day: str, limits: dict, settings: Settings) -> dict:
    """The day's figures for `channel`, from its ingest manifest and its bronze partition."""
    manifest = _manifest(channel, day, settings)
    lines = manifest.get("lines_in", 0)
    reasons = manifest.get("reasons", {})
    worst = max(reasons, key=reasons.get, default=None)
    history = [
        m["lines_in"]
        for m in (
            _manifest(channel, str(date.fromisoformat(day) - timedelta(weeks=w)), settings)
            for w in range(1, limits["volume_weeks"] + 1)
        )
        if m
    ]
    usual = statistics.median(history) if history else None
    # Consent records come in waves (onboarding, a campaign): their volume says nothing about health.
    if usual is not None and (usual < limits["min_usual_lines"] or contracts()[channel].is_consent_feed):
        usual = None
    present = bool(manifest.get("files") or manifest.get("files_quarantined"))
    cutoff = delivery_cutoff(day, limits)
    landed = manifest.get("delivered_at")
    null_field, null_rise = _null_rate_increase(channel, day, settings)
    return {
        "drop_present": present,
        "delivered_at": landed,
        # after the cut-off the night's run had started without it (or waited): late, not missing
        "hours_late": (datetime.fromisoformat(landed) - cutoff) / timedelta(hours=1) if landed else None,
        "lines_in": lines,
        "usual_lines": usual,
        "volume_ratio": lines / usual if usual and present else None,  # no drop: drop_present says so
        "worst_quarantine_reason": worst,
        "quarantine_rate": reasons[worst] / lines if worst and lines else 0.0,
        "unknown_fields": len(manifest.get("unknown_fields", [])),
        "unknown_field_names": manifest.get("unknown_fields", []),
        "consent_exclusion_rate": manifest.get("excluded_no_consent", 0) / lines if lines else 0.0,
        "worst_null_field": null_field,
        "null_rate_increase": null_rise,
    }


def _manifest(channel: str, day: str, settings: Settings) -> dict:
    path = settings.ingest_manifest_path(channel, day)
    return json.loads(path.read_text()) if path.exists() else {}


def _null_rate_increase(channel: str, day: str, settings: Settings) -> tuple[str | None, float | None]:
    """The optional bronze field whose null rate rose most since the day before, and by how much."""
    optional = [f.name for f in bronze_schema(contracts()[channel]) if f.nullable]
    before = str(date.fromisoformat(day) - timedelta(days=1))
    parts = {d: partition_dir(settings.bronze_dir / channel, d) for d in (day, before)}
    if not optional or not all(any(p.glob("*.parquet")) for p in parts.values()):
        return None, None
    rates = ", ".join(f"avg(({ident(f)} is null)::int) as {ident(f)}" for f in optional)
    sources = " union all ".join(
        f"select {literal(d)} as day, * from read_parquet({literal(str(p / '*.parquet'))})"
        for d, p in parts.items()
    )
    with duckdb.connect(config=settings.duckdb_config()) as con:
        rows = {
            r[0]: r[1:] for r in con.execute(f"select day, {rates} from ({sources}) group by day").fetchall()
        }
    if set(rows) != set(parts):
        return None, None
    rises = {
        f: (now or 0.0) - (then or 0.0)
        for f, now, then in zip(optional, rows[day], rows[before], strict=True)
    }
    worst = max(rises, key=rises.get)
    return worst, rises[worst]


def _run_checkpoint(project: GxProject, channel: str, profile: dict, config: dict, day: str) -> dict:
    """The channel's checkpoint over its profile; each failure alerted by the checkpoint's action."""
    import pandas as pd

    def describe(check: str, _result) -> tuple[str, dict, list[str]]:
        detail, keys = _describe(check, profile)
        return detail, {k: profile[k] for k in ALERT_COUNTS}, keys

    frame = pd.DataFrame([{name: profile[name] for name in PROFILE_COLUMNS}])
    outcome = project.run_checkpoint(f"{channel}_feed", lambda: feed_suite(channel, config), frame,
                                     dataset=channel, day=day, prefix="feed", severity=config["checks"],
                                     describe=describe)
    return {"failed": list(outcome.failed), "warnings": list(outcome.warnings), "docs": outcome.docs}


def feed_suite(channel: str, config: dict):
    import great_expectations as gx
    import great_expectations.expectations as gxe

    limits = config["thresholds"]
    suite = gx.ExpectationSuite(name=f"{config['suite']}__{channel}")
    suite.add_expectation(gxe.ExpectColumnValuesToBeInSet(column="drop_present", value_set=[True],
                                                          meta={"check": "drop_present"}))
    for column, low, high, check in [
        ("hours_late", None, 0, "on_time"),
        ("volume_ratio", limits["min_volume_ratio"], limits["max_volume_ratio"], "volume"),
        ("quarantine_rate", None, limits["max_quarantine_rate"], "quarantine_rate"),
        ("unknown_fields", None, 0, "schema_drift"),
        ("consent_exclusion_rate", None, limits["max_consent_exclusion_rate"], "consent_exclusion"),
        ("null_rate_increase", None, limits["max_null_rate_increase"], "null_rate"),
    ]:
        suite.add_expectation(gxe.ExpectColumnValuesToBeBetween(column=column, min_value=low, max_value=high,
                                                                meta={"check": check}))
    return suite


def _describe(check: str, p: dict) -> tuple[str, list[str]]:
    if check == "drop_present":
        return "no drop arrived for the day", []
    if check == "on_time":
        return (f"the drop landed at {p['delivered_at']}, {p['hours_late']:.1f} h after the cut-off", [])
    if check == "volume":
        return f"{p['lines_in']} lines against a usual {p['usual_lines']:g} on this weekday", []
    if check == "quarantine_rate":
        return f"{p['quarantine_rate']:.1%} of lines quarantined as {p['worst_quarantine_reason']}", []
    if check == "schema_drift":
        return f"fields not in the contract: {', '.join(p['unknown_field_names'])}", p["unknown_field_names"]
    if check == "consent_exclusion":
        return f"{p['consent_exclusion_rate']:.1%} of lines excluded for consent", []
    return f"null rate of {p['worst_null_field']} rose by {p['null_rate_increase']:.1%}", [
        p["worst_null_field"]
    ]
