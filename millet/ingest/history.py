"""Ingest a range of days at once (a history build), in the order the nightly runs would."""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from datetime import date, timedelta
from multiprocessing import get_context

from millet.contracts import consent_feed, event_channels
from millet.ingest.bronze import ingest_channel_day, ingest_database
from millet.settings import Settings


def ingest_range(first: date, last: date, settings: Settings, workers: int = 2) -> list[dict]:
    """Every feed's drops from `first` to `last`, as the nightly runs take them: each day's consent, then
    the night's erasures (the deletions feed, `millet forget`, the day's consent withdrawals:
    millet.privacy.erasure), then the day's behaviour. The behaviour channels go in runs of days between
    two erasures that remove someone (what a night removes must be in by then, and is kept out after),
    each channel's days in date order (its dedupe looks back at its own earlier days), spread over
    `workers` processes. Returns every consent and behaviour manifest."""
    from millet.privacy.erasure import due_erasures

    days = [first + timedelta(days=offset) for offset in range((last - first).days + 1)]
    manifests, waiting = [], []
    # Workers started fresh, not forked: this process holds a DuckDB open, whose threads and locks a fork
    # would copy mid-state. Consent and requests go one day at a time, in this process.
    with (ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool,
          ingest_database(settings) as database):
        for day in days:
            manifests.append(ingest_channel_day(consent_feed(), day, settings, database))
            erasures = due_erasures(day, settings, database)
            if erasures.removes_anyone:
                manifests += _ingest_behaviour(pool, settings, waiting)
                waiting = []
            erasures.apply(settings)
            waiting.append(day)
        return manifests + _ingest_behaviour(pool, settings, waiting)


def _ingest_behaviour(pool: ProcessPoolExecutor, settings: Settings, days: list[date]) -> list[dict]:
    if not days:
        return []
    manifests = []
    running = [pool.submit(_ingest_channel_days, settings, channel, days) for channel in event_channels()]
    for done in running:
        manifests += done.result()
    return manifests


def _ingest_channel_days(settings: Settings, channel: str, days: list[date]) -> list[dict]:
    with ingest_database(settings) as database:
        return [ingest_channel_day(channel, day, settings, database) for day in days]
