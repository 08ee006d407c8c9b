"""Figures about what a run produced, for the CLI and the demo."""

from __future__ import annotations

import json
from datetime import date

import pyarrow.parquet as pq

from millet.feature_spec import families
from millet.settings import Settings, get_settings
from millet.transform import snapshot_path


def snapshot_size(day: date | str, settings: Settings | None = None) -> dict:
    """Users, features, values and bytes in the as-of snapshot (the key column read, nothing else)."""
    settings = settings or get_settings()
    users: set[str] = set()
    n_features = values = size = 0
    for fam in families():
        path = snapshot_path(fam.name, day, settings)
        size += path.stat().st_size
        keys = pq.read_table(path, columns=["user_key"]).column(0)
        users.update(keys.to_pylist())
        n_features += len(fam.features)
        values += len(keys) * len(fam.features)
    return {"users": len(users), "features": n_features, "values": values, "bytes": size}


# ---- what a night did, one line per stage (the demo, `millet run`) --------------------------------------
STAGES = {  # each stage of millet_nightly and the tasks it is made of
    "ingest": ("wait_for_the_cutoff", "ingest_consent", "apply_erasures", "list_channels", "ingest_channel",
               "purge_expired"),
    "build": ("build_features",),
    "check": ("check_feeds", "check_features", "reconcile_repayments"),
    "publish": ("publish_features",),
    "lists": ("track_borrowers", "list_pre_approvals"),
    "report": ("write_report",),
}


def night_lines(day: date | str, settings: Settings) -> list[str]:
    """One line per stage of the day's run: what went in and out, and the seconds its tasks took."""
    from millet.orchestrate import task_times

    times, size = task_times(day), snapshot_size(day, settings)
    figures = {"ingest": _ingested(day, settings), "build": _built(day, size, settings),
               "check": _checked(day, settings),
               "publish": f"{size['users']:,} users online ({settings.online_store})",
               "lists": _listed(times), "report": str(_report(day, settings))}
    lines = []
    for stage, tasks in STAGES.items():
        seconds = sum(times.get(task, ("", 0.0))[1] for task in tasks)
        lines.append(f"  {stage:<8} {figures[stage]}  ({seconds:.1f} s)")
    return lines


def _ingested(day, settings: Settings) -> str:
    from millet.contracts import contracts

    totals = dict.fromkeys(("lines_in", "rows_out", "quarantined", "duplicates", "excluded_no_consent"), 0)
    for channel in contracts():
        path = settings.ingest_manifest_path(channel, day)
        manifest = json.loads(path.read_text()) if path.exists() else {}
        for name in totals:
            totals[name] += manifest.get(name, 0)
    return (f"{len(contracts())} feeds: {totals['lines_in']:,} lines → {totals['rows_out']:,} rows; "
            f"{totals['quarantined']:,} quarantined, {totals['duplicates']:,} duplicates, "
            f"{totals['excluded_no_consent']:,} without consent")


def _built(day, size: dict, settings: Settings) -> str:
    from millet.transform.dbt import read_build

    return (f"{size['users']:,} users × {size['features']:,} features = {size['values']:,} values, "
            f"{size['bytes'] / 2**20:,.1f} MiB (windows {read_build(day, settings).get('state', 'built')})")


def _checked(day, settings: Settings) -> str:
    from millet.alerts import alert_log, logged_alerts

    severities = [record["severity"] for record in logged_alerts(settings)
                  if record.get("logical_date") == str(day)]
    return (f"{severities.count('critical')} critical, {severities.count('warning')} warnings "
            f"(alerts: {alert_log(settings)})")


def _listed(times: dict) -> str:
    states = {times.get(task, ("not run", 0))[0] for task in STAGES["lists"]}
    return "skipped: no model served yet (`millet train`)" if states == {"skipped"} else ", ".join(
        f"{task} {times.get(task, ('not run', 0))[0]}" for task in STAGES["lists"])


def _report(day, settings: Settings):
    from millet.alerts import report_path

    return report_path(str(day), settings)


# ---- one borrower, readable (the end of the demo) ---------------------------------------------------------
HEADLINES_PER_FAMILY = 2  # a dozen over six families: the first 30-day features each serves


def sample_borrower(day: date | str, settings: Settings) -> str | None:
    """The user with values in the most families (every one, the loan book included, for a borrower), and
    among those the most values: the profile that shows the most of the feature space."""
    import numpy as np
    import pyarrow.compute as pc

    score: dict[str, tuple[int, int]] = {}
    for fam in families():
        table = pq.read_table(snapshot_path(fam.name, day, settings))
        filled = sum(np.asarray(pc.is_valid(table.column(f.name))).astype(np.int32) for f in fam.features)
        for key, count in zip(table.column("user_key").to_pylist(), filled.tolist(), strict=True):
            families_seen, values = score.get(key, (0, 0))
            score[key] = (families_seen + (count > 0), values + count)
    return max(score, key=score.__getitem__, default=None)


def profile_lines(user_key: str, settings: Settings) -> list[str]:
    """The user's features as the online store serves them: non-null per family, the headline features,
    and the credit decision once a model is served."""
    from millet.serving.definitions import service_features
    from millet.serving.store import DEFAULT_SERVICE, online_features

    served, values = service_features(DEFAULT_SERVICE), online_features(user_key, DEFAULT_SERVICE, settings)
    lines = [f"  {DEFAULT_SERVICE} online for {user_key}: non-null / served per family"]
    by_family: dict[str, list] = {}
    for feature in served:
        by_family.setdefault(feature.family, []).append(feature)
    lines.append("    " + ", ".join(f"{fam} {sum(values[f.name] is not None for f in fs)}/{len(fs)}"
                                    for fam, fs in by_family.items()))
    for fs in by_family.values():
        for feature in [f for f in fs if f.window_days == 30 and f.agg != "trend"][:HEADLINES_PER_FAMILY]:
            lines.append(f"    {feature.name:<44} {_shown(values[feature.name])}")
    lines.append(f"  decision: {_decision(user_key, settings)}")
    return lines


def _shown(value) -> str:
    return "null" if value is None else f"{value:,.2f}" if isinstance(value, float) else f"{value:,}"


def _decision(user_key: str, settings: Settings) -> str:
    from millet.scoring.registry import NoModel
    from millet.serving import open_store
    from millet.serving.api.server import OnlineReader, Scorer

    try:
        decision = Scorer(OnlineReader(open_store(settings)), settings).score(user_key)
    except NoModel:
        return "none yet: no credit model is served (`millet world`, then `millet train`)"
    if decision.access != "approve":
        return f"decline ({'; '.join(decision.reasons)}), PD {decision.pd:.1%}"
    return (f"approve, PD {decision.pd:.1%}, {decision.annual_rate:.0%} a year, line "
            f"{decision.credit_line:,.0f} ({decision.model_version})")


# ---- `millet status`: where things stand, for the on-call engineer --------------------------------------
def status_lines(settings: Settings, now=None) -> list[str]:
    """The last runs, each feed's freshness, the latest night's alerts and what the online store serves."""
    from datetime import UTC, datetime

    from millet.alerts import alert_log, logged_alerts

    now = now or datetime.now(UTC)
    lines = ["runs of millet_nightly (newest first):", *_run_lines(settings, now)]
    lines.append("feeds (latest day in bronze, and when its drop was delivered):")
    lines += [f"  {channel:<16} {_freshness(channel, settings, now)}" for channel in _channels()]
    alerts = logged_alerts(settings)
    last_day = max((a["logical_date"] for a in alerts), default=None)
    night = [a for a in alerts if a["logical_date"] == last_day]
    lines.append(f"alerts of the latest night ({last_day or 'none'}): "
                 f"{sum(a['severity'] == 'critical' for a in night)} critical, "
                 f"{sum(a['severity'] == 'warning' for a in night)} warnings; log {alert_log(settings)}")
    lines.append(f"online store ({settings.online_store}): {_online_age(settings, now)}")
    return lines


def _run_lines(settings: Settings, now) -> list[str]:
    from millet.orchestrate import DagRunFailed, recent_runs

    try:
        runs = recent_runs(settings)
    except DagRunFailed as exc:  # its database down: the feeds, alerts and online store still tell a lot
        return [f"  unknown: {exc}"]
    if runs is None:
        return ["  none: Airflow's metadata database is not at this Airflow's schema (no run yet, or an "
                "upgrade not migrated: millet run, or millet airflow db migrate)"]
    return [f"  {run['day']}  {run['state']:<8} {_ago(run['ended'], now) if run['ended'] else 'not ended'}  "
            f"({run['run_type']})" for run in runs] or ["  none yet"]


def _channels() -> list[str]:
    from millet.contracts import contracts

    return list(contracts())


def _freshness(channel: str, settings: Settings, now) -> str:
    from datetime import datetime

    days = sorted(p.name.removeprefix("dt=") for p in (settings.bronze_dir / channel).glob("dt=*"))
    if not days:
        return "nothing ingested"
    manifest = settings.ingest_manifest_path(channel, days[-1])
    delivered = json.loads(manifest.read_text()).get("delivered_at") if manifest.exists() else None
    return f"{days[-1]}, delivered {_ago(datetime.fromisoformat(delivered), now)}" if delivered \
        else f"{days[-1]}, delivery time unknown"


def _online_age(settings: Settings, now) -> str:
    from millet.serving.store import has_published, open_store, published_day

    if not has_published(settings):
        return "nothing published yet"
    day = published_day(open_store(settings), settings)
    if day is None:
        return "registry applied, nothing materialized"
    return f"serves the snapshot of {day} ({(now.date() - day).days} days before today)"


def _ago(when, now) -> str:
    from datetime import UTC

    seconds = (now - (when if when.tzinfo else when.replace(tzinfo=UTC))).total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if abs(seconds) >= size:
            return f"{seconds / size:.0f} {unit} ago"
    return f"{seconds:.0f} s ago"
