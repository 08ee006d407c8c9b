"""Raw-feed checks after ingestion: each feed fault the on-call engineer must hear about reaches a real
webhook and a real SMTP server as the right alert at the right severity, and a critical one stops the
day before its features are built."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from urllib.parse import urlparse

import pytest
from pydantic import SecretStr

from millet.alerts import alert_log
from millet.contracts import ingestion_order
from millet.ingest import ingest_channel_day
from millet.quality.feeds import FeedCheckFailed, check_feeds, load_feed_thresholds
from millet.settings import Settings
from millet.simulate import simulate
from millet.simulate.run import delivery_time, write_drop
from tests.conftest import TEST_KEY
from tests.helpers import landing_lines

START = date(2026, 2, 2)
DAYS = 8
LAST = START + timedelta(days=DAYS - 1)  # the same weekday as START: a week of history behind it


def _ingest(settings: Settings, day: date) -> None:
    for channel in ingestion_order():
        ingest_channel_day(channel, day, settings)


@pytest.fixture(scope="module")
def history(tmp_path_factory) -> Settings:
    root = tmp_path_factory.mktemp("feeds")
    settings = Settings(data_root=root / "data", pseudonym_key=TEST_KEY.decode())
    simulate(settings.landing_dir, users=1_500, days=DAYS, start=START, seed=21, truth_dir=settings.truth_dir)
    for offset in range(DAYS - 1):
        _ingest(settings, START + timedelta(days=offset))
    return settings


def _replace_drop(settings: Settings, channel: str, lines: list[str], late_h: float = 0) -> None:
    """The day's drop of `channel` replaced by `lines`, landed on time or `late_h` hours late."""
    folder = settings.landing_dir / channel / f"dt={LAST}"
    shutil.rmtree(folder)
    landed = delivery_time(LAST) + timedelta(hours=late_h)
    write_drop(folder / "part-0000.jsonl.gz", lines, delivered_at=landed)


def test_each_feed_fault_is_alerted_at_its_severity_and_a_critical_one_stops_the_day(
        history, webhook, mailbox):
    limits = load_feed_thresholds(history)["thresholds"]
    day = str(LAST)
    # device: no drop at all. payments: a third of its usual lines. appstore: a field the contract does not
    # know on every line. commerce: a spike of lines cut short (quarantined as malformed). forum: its drop
    # landed three hours after the cut-off.
    shutil.rmtree(history.landing_dir / "device" / f"dt={day}")
    payments = landing_lines(history.landing_dir, "payments", day)
    usual = len(landing_lines(history.landing_dir, "payments", str(START)))
    assert usual >= limits["min_usual_lines"]  # the world is big enough for the volume check to apply
    _replace_drop(history, "payments", payments[: usual // 3])
    appstore = landing_lines(history.landing_dir, "appstore", day)
    _replace_drop(history, "appstore",
                  [json.dumps(json.loads(ln) | {"promo_channel": "push"}) for ln in appstore])
    commerce = landing_lines(history.landing_dir, "commerce", day)
    spike = len(commerce) // 10 + 1
    assert spike / (len(commerce) + spike) > limits["max_quarantine_rate"]
    _replace_drop(history, "commerce", commerce + [ln[: len(ln) // 2] for ln in commerce[:spike]])
    cutoff = datetime.combine(LAST + timedelta(days=1), time(), UTC) + timedelta(
        hours=limits["delivery_cutoff_hours"])
    to_cutoff_h = (cutoff - delivery_time(LAST)) / timedelta(hours=1)
    _replace_drop(history, "forum", landing_lines(history.landing_dir, "forum", day), late_h=to_cutoff_h + 3)
    _ingest(history, LAST)
    settings = history.model_copy(update={
        "alert_webhook_url": SecretStr(webhook.url), "alert_smtp_host": "127.0.0.1",
        "alert_smtp_port": mailbox.port, "alert_email_to": "oncall@lender.example"})

    with pytest.raises(FeedCheckFailed, match="device"):
        check_feeds(LAST, settings)

    posted = {(p["millet"]["check"], p["millet"]["dataset"]): p["millet"] for p in webhook.all()}
    assert {key: alert["severity"] for key, alert in posted.items()} == {
        ("feed_drop_present", "device"): "critical",
        ("feed_volume", "payments"): "critical",
        ("feed_schema_drift", "appstore"): "warning",
        ("feed_quarantine_rate", "commerce"): "warning",
        ("feed_on_time", "forum"): "warning",
    }
    assert "3.0 h after the cut-off" in posted[("feed_on_time", "forum")]["summary"]
    assert posted[("feed_schema_drift", "appstore")]["sample_keys"] == ["promo_channel"]
    assert "malformed" in posted[("feed_quarantine_rate", "commerce")]["summary"]
    assert all(a["logical_date"] == day for a in posted.values())
    assert len(mailbox.all()) == len(posted)  # the same alerts by e-mail
    for (check, channel), alert in posted.items():  # each links to its validation's GX Data Docs page
        page = Path(urlparse(alert["docs"]).path)
        assert page.is_relative_to(settings.root) and f"raw_feed__{channel}" in page.read_text(), check
    logged = [json.loads(line) for line in alert_log(settings).read_text().splitlines()]
    assert {(r["check"], r["dataset"]) for r in logged} == set(posted)


def test_a_clean_day_raises_no_alert(history):
    summary = check_feeds(LAST - timedelta(days=1), history)
    assert not any(s["failed"] or s["warnings"] for s in summary.values()), summary
