"""Ingest a range of days at once (a history build), in the order the nightly runs would."""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from datetime import date, timedelta

from millet.contracts import consent_feed, event_channels
from millet.ingest.bronze import ingest_channel_day, ingest_database
from millet.settings import Settings


def ingest_range(first: date, last: date, settings: Settings, workers: int = 2) -> list[dict]:
    """Every feed's drops from `first` to `last`, as the nightly runs take them: the consent feed first
    (ingestion reads consent as of each day, dt <= day); then, day by day, the night's erasures (the
    deletions feed, `millet forget`, the day's consent withdrawals: millet.privacy.erasure) before that
    day's behaviour. The behaviour channels go in runs of days between two erasures that remove someone
    (what a night removes must be in by then, and is kept out after), each channel's days in date order
    (its dedupe looks back at its own earlier days), spread over `workers` processes. Returns every
    behaviour and consent manifest."""
    from millet.privacy.erasure import due_erasures

    days = [first + timedelta(days=offset) for offset in range((last - first).days + 1)]
    manifests = _ingest_channel_days(settings, consent_feed(), days)
    waiting: list[date] = []
    with ingest_database(settings) as requests:
        for day in days:
            erasures = due_erasures(day, settings, requests)
            if erasures.removes_anyone:
                manifests += _ingest_behaviour(settings, waiting, workers)
                waiting = []
            erasures.apply(settings)
            waiting.append(day)
    return manifests + _ingest_behaviour(settings, waiting, workers)


def _ingest_behaviour(settings: Settings, days: list[date], workers: int) -> list[dict]:
    if not days:
        return []
    manifests = []
    with ProcessPoolExecutor(max_workers=workers) as pool:
        running = [pool.submit(_ingest_channel_days, settings, channel, days) for channel in event_channels()]
        for done in running:
            manifests += done.result()
    return manifests


def _ingest_channel_days(settings: Settings, channel: str, days: list[date]) -> list[dict]:
    with ingest_database(settings) as database:
        return [ingest_channel_day(channel, day, settings, database) for day in days]
