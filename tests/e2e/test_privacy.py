"""No raw identifier anywhere it does not belong: the nightly world scanned zone by zone."""

from __future__ import annotations

import os

import pandas as pd
import pyarrow.parquet as pq

from millet.serving import open_store
from millet.serving.offline.training import training_table
from millet.serving.store import publish_features
from tests.e2e.conftest import DAYS
from tests.e2e.test_serving import REDIS_DB, drop_project, sampled_users
from tests.pii import emitted_identifiers, scan_files, scan_for, scan_redis, summary

# Landing is where raw identifiers arrive; truth is the simulator's hidden ground truth, not Millet's.
NOT_MILLETS = ("landing", "truth")


def test_no_raw_identifier_outside_the_landing_zone(nightly):
    """Every account id, device id and phone number the simulator emitted, looked for in bronze,
    quarantine, the DuckDB warehouse, snapshots and state, the Feast registry, both online stores, Airflow's
    database and task logs, alerts, reports, manifests, the audit log and a training set. Mutation that
    fails it (tried): quarantine storing a line cut short unsealed (the world has 10 % of them)."""
    identifiers = emitted_identifiers(nightly.landing_dir)
    assert len(identifiers) > 4000  # 4,000 people's account ids at least, and their devices and phones
    assert scan_files(nightly.landing_dir, identifiers, skip=())  # the scanner finds what is there

    labels = pd.DataFrame({"user_key": sampled_users(DAYS[-1], 50),
                           "event_timestamp": pd.Timestamp(DAYS[-1], tz="UTC") + pd.Timedelta(hours=30)})
    training = nightly.root / "training" / "credit_risk_v1.parquet"
    training.parent.mkdir(exist_ok=True)
    pq.write_table(training_table(labels, "credit_risk_v1", nightly), training)

    leaks = scan_files(nightly.root, identifiers, skip=NOT_MILLETS)
    assert not leaks, summary(leaks)
    assert _redis_leaks(nightly, identifiers) == {}


def test_the_pseudonymisation_key_is_in_no_file(nightly):
    """Not in a log, a manifest, Airflow's database or anything else the nightly world wrote. (Mutation
    meant, not tried: a task printing its settings with the key unmasked.)"""
    assert not scan_for(nightly.root, {nightly.pseudonym_secret.decode()}, skip=())


def _redis_leaks(nightly, identifiers: set[str]) -> dict:
    import redis

    settings = nightly.model_copy(update={"online_store": "redis", "project": f"millet_pii_{os.getpid()}",
                                          "redis_url": f"127.0.0.1:6379,db={REDIS_DB}"})
    publish_features(DAYS[-1], settings)
    store = open_store(settings)
    try:
        client = redis.Redis(db=REDIS_DB)
        assert any(client.scan_iter(match=f"millet:{settings.project}:*", count=1000))
        return scan_redis(client, f"millet:{settings.project}:*", identifiers)
    finally:
        drop_project(store)
        open_store(nightly)  # the session's environment back for the tests after
