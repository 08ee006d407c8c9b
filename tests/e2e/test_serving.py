"""Feast serving over the nightly world: online values on both stores, stock equivalence, training sets,
and the REST API."""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import signal
import subprocess
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import requests

from millet.feature_spec import all_features, families
from millet.serving import open_store
from millet.serving.offline.training import training_set
from millet.serving.store import materialize_day, publish_features, store_over
from millet.transform import snapshot_path
from tests.e2e.conftest import DAYS
from tests.e2e.processes import REDIS_DB, free_port, health, millet_serve, poll, stop_process

SERVICES = ("credit_risk_v1", "repayment_ability_v1", "financial_demand_v1")
STOCK = {"sqlite": {"type": "sqlite"}, "redis": {"type": "redis"}}
PACKED = {"sqlite": {"type": "millet.serving.online.stores.PackedSqliteOnlineStore"},
          "redis": {"type": "millet.serving.online.stores.PackedRedisOnlineStore"}}
MILLET_ENGINE = {"type": "millet.serving.online.engine.SnapshotMaterializationEngine"}


def snapshot_values(day: str, user_keys: list[str]) -> dict[str, dict[str, object]]:
    """user_key → every feature in the day's dbt snapshots, read straight from the Parquet files."""
    rows: dict[str, dict[str, object]] = {k: {} for k in user_keys}
    for fam in families():
        table = pq.read_table(snapshot_path(fam.name, day))
        for row in table.filter(pa.compute.is_in(table["user_key"], pa.array(user_keys))).to_pylist():
            rows[row["user_key"]] |= {k: v for k, v in row.items()
                                      if k not in ("user_key", "event_timestamp")}
    return rows


def sampled_users(day: str, n: int, seed: int = 3) -> list[str]:
    keys = set()
    for fam in families():
        keys |= set(pq.read_table(snapshot_path(fam.name, day), columns=["user_key"]).column(0).to_pylist())
    return random.Random(seed).sample(sorted(keys), n)


def _equal(served, stored) -> bool:
    if stored is None or (isinstance(stored, float) and math.isnan(stored)):
        return served is None or (isinstance(served, float) and math.isnan(served))
    return served == stored  # float32 in both: exactly the same number


def _service_features(store, service: str) -> set[str]:
    return {f.name for p in store.get_feature_service(service).feature_view_projections for f in p.features}


# ---- the feature services --------------------------------------------------------------------------
def test_services_serve_the_decisions_from_the_spec(nightly):
    store = open_store()
    spec = {f.name: f for f in all_features()}
    served = {s: _service_features(store, s) for s in SERVICES}
    assert all(served[s] <= set(spec) for s in SERVICES)
    credit = {n for n, f in spec.items() if f.family == "credit"}
    assert credit <= served["credit_risk_v1"]
    assert not any(spec[n].breakdown for n in served["credit_risk_v1"] - credit)  # headline behaviour only
    assert {spec[n].family for n in served["repayment_ability_v1"]} == {"credit", "payments"}
    assert not any(spec[n].stage == "pre_loan" and spec[n].family == "credit"
                   for n in served["repayment_ability_v1"])
    assert {spec[n].family for n in served["financial_demand_v1"]} == {"commerce", "appstore", "credit"}
    for view in store.list_feature_views():
        assert {"family", "owner", "consent_bound", "stages"} <= set(view.tags)
        assert all({"family", "stage", "owner", "consent_bound"} <= set(f.tags) for f in view.features)


# ---- online values, on both stores ------------------------------------------------------------------
@pytest.fixture(scope="module", params=["sqlite", "redis"])
def published(request, nightly):
    """The nightly store, and the same snapshot published into Redis (the tests' own database)."""
    if request.param == "sqlite":
        yield open_store()
        return
    settings = nightly.model_copy(update={"online_store": "redis",
                                          "redis_url": f"127.0.0.1:6379,db={REDIS_DB}",
                                          "project": f"millet_test_{os.getpid()}"})
    publish_features(DAYS[-1], settings)
    store = open_store(settings)
    try:
        yield store
    finally:
        drop_project(store)
        open_store(nightly)  # put the session's environment back for the tests after
    assert not _redis_keys(settings.project), "teardown left keys behind"


def drop_project(store) -> None:
    """A project's online records and its registry entries. Not FeatureStore.teardown: that deletes the
    registry file, which every project of the session shares (the tests after would find it empty)."""
    store.provider.teardown_infra(store.project, store.list_feature_views(), store.list_entities())
    store.delete_project(store.project)


def _redis_keys(project: str) -> list:
    import redis

    return list(redis.Redis(db=REDIS_DB).scan_iter(match=f"millet:{project}:*", count=1000))


def test_online_values_equal_the_dbt_snapshot_for_sampled_users(published):
    users = sampled_users(DAYS[-1], 25)
    stored = snapshot_values(DAYS[-1], users)
    compared = 0
    for service in SERVICES:
        served = published.get_online_features(features=published.get_feature_service(service),
                                               entity_rows=[{"user_key": k} for k in users]).to_dict()
        assert served["user_key"] == users
        for name in _service_features(published, service):
            for i, user in enumerate(users):
                if name in stored[user]:  # absent: the user had no activity in that family
                    assert _equal(served[name][i], stored[user][name]), (service, user, name)
                    compared += 1
                else:
                    assert served[name][i] is None
    assert compared > 10_000, compared


# ---- Millet's engine and stores against stock Feast -------------------------------------------------
@pytest.fixture(scope="module")
def sample_snapshots(nightly, tmp_path_factory):
    """The last day's snapshots for 40 users, laid out as dbt writes them."""
    root = tmp_path_factory.mktemp("sample") / "snapshots"
    users = pa.array(sampled_users(DAYS[-1], 40, seed=8))
    for fam in families():
        table = pq.read_table(snapshot_path(fam.name, DAYS[-1]))
        out = root / fam.name / f"dt={DAYS[-1]}" / "part-0.parquet"
        out.parent.mkdir(parents=True)
        pq.write_table(table.filter(pa.compute.is_in(table["user_key"], users)), out)
    return root, users.to_pylist()


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_millet_materialization_reads_back_exactly_as_stock_feast_materialization(
        sample_snapshots, tmp_path, backend):
    snapshots, users = sample_snapshots
    project = f"equiv_{os.getpid()}"
    stores = {}
    for kind, online, engine in (("stock", STOCK, "local"), ("millet", PACKED, MILLET_ENGINE)):
        config = dict(online[backend], **({"path": str(tmp_path / f"{kind}.db")} if backend == "sqlite"
                                          else {"connection_string": f"127.0.0.1:6379,db={REDIS_DB}"}))
        stores[kind] = store_over(snapshots, tmp_path / kind, config, engine, project=f"{project}_{kind}")
        materialize_day(stores[kind], DAYS[-1])
    present = 0
    try:
        for service in SERVICES:
            answers = [store.get_online_features(features=store.get_feature_service(service),
                                                 entity_rows=[{"user_key": k} for k in users]).to_dict()
                       for store in stores.values()]
            stock, millet = answers
            assert stock.keys() == millet.keys()
            differing = [n for n in stock if not all(map(_equal, millet[n], stock[n]))]
            assert not differing, (service, differing[:5])
            present += sum(v is not None for column in stock.values() for v in column)
        assert present > 15_000  # the comparison is over real values, not over two empty stores
    finally:
        for store in stores.values():
            store.teardown()


def test_a_running_server_serves_a_feature_service_changed_in_the_registry(sample_snapshots, tmp_path):
    """The nightly publish applies a feature service that changed (a category's new features): within
    PLAN_TTL_S the server reads the new list, not the plan it made before. Mutation that fails it: plans
    kept for the life of the process."""
    from feast import FeatureService

    from millet.serving.api.server import PLAN_TTL_S, OnlineReader

    snapshots, users = sample_snapshots
    config = dict(PACKED["sqlite"], path=str(tmp_path / "online.db"))
    store = store_over(snapshots, tmp_path / "repo", config, MILLET_ENGINE, project=f"plans_{os.getpid()}")
    materialize_day(store, DAYS[-1])
    now = [0.0]
    reader = OnlineReader(store, clock=lambda: now[0])
    before = reader.features_of(users[0], "credit_risk_v1")
    service = store.get_feature_service("credit_risk_v1")
    projection = service.feature_view_projections[0]
    kept = [field.name for field in projection.features[:3]]
    view = store.get_feature_view(projection.name)
    store.apply(FeatureService(name=service.name, features=[view[kept]], tags=service.tags))
    try:
        assert reader.features_of(users[0], "credit_risk_v1") == before  # within the TTL: the plan made
        now[0] += PLAN_TTL_S + 1
        after = reader.features_of(users[0], "credit_risk_v1")
        assert list(after) == ["user_key", *kept] and after == {name: before[name] for name in after}
        assert len(before) > len(after)
    finally:
        store.teardown()


# ---- training sets ----------------------------------------------------------------------------------
def test_a_feature_value_planted_after_the_label_time_does_not_leak(nightly):
    day, later = DAYS[-1], "2026-01-05"
    user = sampled_users(day, 1, seed=11)[0]
    planted = snapshot_path("credit", later)
    table = pq.read_table(snapshot_path("credit", day))
    table = table.filter(pa.compute.equal(table["user_key"], user))
    if table.num_rows == 0:  # a user without credit activity: take the first that has some
        table = pq.read_table(snapshot_path("credit", day)).slice(0, 1)
        user = table["user_key"][0].as_py()
    column = "credit__days_past_due_max_ever"
    table = table.set_column(table.schema.get_field_index(column), column, pa.array([999], pa.int32()))
    table = table.set_column(table.schema.get_field_index("event_timestamp"), "event_timestamp",
                             pa.array([datetime(2026, 1, 6, tzinfo=UTC)],
                                      table.schema.field("event_timestamp").type))
    planted.parent.mkdir(parents=True)
    pq.write_table(table, planted)
    try:
        known = datetime(2026, 1, 3, 12, tzinfo=UTC)  # after the last real snapshot, before the planted one
        labels = pd.DataFrame({"user_key": [user, user], "timestamp": [known, known + timedelta(days=3)],
                               "label": [0, 1]})
        frame = training_set(labels, "credit_risk_v1")
        stored = snapshot_values(day, [user])[user]
    finally:
        planted.unlink()
        planted.parent.rmdir()
    assert list(frame["label"]) == [0, 1]
    assert frame[column][0] == stored[column] != 999  # before the plant: what the snapshot held
    assert frame[column][1] == 999  # after it: the planted value, so the join really reads that file


def test_training_set_rows_take_the_snapshot_of_their_own_time(nightly):
    users = sampled_users(DAYS[-1], 30, seed=5)
    first, last = (snapshot_values(day, users) for day in DAYS)
    stamps = [datetime.combine(date.fromisoformat(d), datetime.min.time(), UTC)
              + timedelta(days=1, hours=6) for d in DAYS]
    labels = pd.DataFrame({"user_key": users * 2, "event_timestamp": [stamps[0]] * 30 + [stamps[1]] * 30,
                           "label": range(60)})
    frame = training_set(labels, "repayment_ability_v1")
    assert list(frame["label"]) == list(range(60))
    column = "payments__payments_count_1d"
    assert sum(known[u].get(column) is not None for known in (first, last) for u in users) >= 10
    for i, user in enumerate(users):
        for half, known in enumerate((first, last)):
            want = known[user].get(column)
            got = frame[column][half * 30 + i]
            assert (pd.isna(got) and want is None) or got == want, (user, half, got, want)


def test_the_training_set_command_writes_the_frame_and_refuses_bad_labels(nightly, tmp_path):
    from typer.testing import CliRunner

    from millet.cli import app

    users = sampled_users(DAYS[-1], 5)
    labels = tmp_path / "labels.csv"
    pd.DataFrame({"user_key": users, "timestamp": ["2026-01-03T06:00:00Z"] * 5,
                  "label": [1] * 5}).to_csv(labels)
    out = tmp_path / "train.parquet"
    done = CliRunner().invoke(app, ["training-set", "--labels", str(labels), "--out", str(out),
                                    "--service", "financial_demand_v1"])
    assert done.exit_code == 0, done.output
    frame = pd.read_parquet(out)
    assert list(frame["user_key"]) == users and len(frame.columns) > 400
    pd.DataFrame({"user_key": users}).to_csv(labels)
    refused = CliRunner().invoke(app, ["training-set", "--labels", str(labels)])
    assert refused.exit_code == 1 and "event_timestamp" in refused.output


# ---- the HTTP server --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(nightly):
    with millet_serve(nightly) as url:
        yield url


def test_feasts_remote_client_reads_what_the_store_serves(server, nightly, tmp_path):
    from feast import FeatureStore, RepoConfig

    client = FeatureStore(config=RepoConfig(
        project=nightly.project, provider="local", registry=str(nightly.feast_dir / "registry.db"),
        online_store={"type": "remote", "path": server}, entity_key_serialization_version=3,
        repo_path=str(tmp_path)))
    local = open_store()
    users = sampled_users(DAYS[-1], 10) + ["nobody-at-all"]
    for service in SERVICES:
        rows = [{"user_key": k} for k in users]
        remote = client.get_online_features(features=client.get_feature_service(service), entity_rows=rows)
        here = local.get_online_features(features=local.get_feature_service(service), entity_rows=rows)
        remote, here = remote.to_dict(), here.to_dict()
        assert remote.keys() == here.keys()
        differing = {n: (remote[n], here[n]) for n in here if not all(map(_equal, remote[n], here[n]))}
        assert not differing, (service, list(differing.items())[:3])
        assert all(remote[n][-1] is None for n in remote if n != "user_key")  # the unknown user


def test_the_server_answers_in_feasts_own_response_shape(server, nightly):
    from feast.feature_server_utils import convert_response_to_dict

    users = sampled_users(DAYS[-1], 3) + ["nobody-at-all"]
    body = {"entities": {"user_key": users}, "features": ["credit:credit__loans_active_now",
                                                           "device:device__sessions_count_7d"],
            "full_feature_names": True}
    answer = requests.post(f"{server}/get-online-features", json=body, timeout=10).json()
    local = open_store()
    expected = convert_response_to_dict(local.get_online_features(
        features=body["features"], entity_rows=[{"user_key": k} for k in users],
        full_feature_names=True).proto)
    assert answer["metadata"] == expected["metadata"]
    for got, want in zip(answer["results"], expected["results"], strict=True):
        assert got["statuses"] == want["statuses"]
        assert all(map(_equal, got["values"], want["values"]))
    assert [r["event_timestamps"] for r in answer["results"][1:]] == \
        [r["event_timestamps"] for r in expected["results"][1:]]


@pytest.mark.parametrize("body, status, says", [
    (b"{not json", 400, "not JSON"),
    (b"[1, 2]", 400, "JSON object"),
    (json.dumps({"feature_service": "credit_risk_v1"}).encode(), 400, "entities"),
    (json.dumps({"entities": {"user_key": "abc"}, "feature_service": "credit_risk_v1"}).encode(), 400,
     "list"),
    (json.dumps({"entities": {"account_id": ["a"]}, "feature_service": "credit_risk_v1"}).encode(), 400,
     "user_key"),
    (json.dumps({"entities": {"user_key": [1]}, "feature_service": "credit_risk_v1"}).encode(), 400,
     "string"),
    (json.dumps({"entities": {"user_key": ["a"]}}).encode(), 400, "exactly one"),
    (json.dumps({"entities": {"user_key": ["a"]}, "feature_service": "no_such"}).encode(), 404, "no_such"),
    (json.dumps({"entities": {"user_key": ["a"]}, "features": ["credit:nope"]}).encode(), 404, "credit:nope"),
    (json.dumps({"entities": {"user_key": ["a"] * 1001}, "feature_service": "credit_risk_v1"}).encode(), 400,
     "at most"),
    # Past the byte cap (mutation: reading the whole body first): refused as too large, not parsed.
    (json.dumps({"entities": {"user_key": ["k" * 100] * 11_000}}).encode(), 413, "at most 1,048,576 bytes"),
])
def test_malformed_requests_get_a_4xx_with_a_message(server, body, status, says):
    answer = requests.post(f"{server}/get-online-features", data=body, timeout=10)
    assert answer.status_code == status
    assert says in answer.json()["detail"]


def test_health_and_unknown_routes(server):
    assert requests.get(f"{server}/health", timeout=5).json() == {"status": "ok"}
    assert requests.get(f"{server}/get-online-features", timeout=5).status_code == 405
    assert requests.get(f"{server}/nope", timeout=5).status_code == 404


def test_health_answers_503_while_the_online_store_is_hung_or_down_and_200_once_it_is_back(nightly, tmp_path):
    """Also while a read waits on the hung store: reads run off the event loop. Mutation that fails it:
    `reader.answer` called on the loop (health then waits for the read's Redis timeout, 30 s)."""
    from concurrent.futures import ThreadPoolExecutor

    from millet.serving.store import apply_registry

    port = free_port()  # a Redis of the test's own, so that it can be stopped: nothing else uses it
    settings = nightly.model_copy(update={"online_store": "redis", "redis_url": f"127.0.0.1:{port},db=0",
                                          "project": f"millet_health_{os.getpid()}"})
    redis_server, applied = _start_redis(port, tmp_path), False
    try:
        apply_registry(settings)
        applied = True
        with millet_serve(settings) as url:
            assert health(url) == (200, {"status": "ok"})

            redis_server.send_signal(signal.SIGSTOP)  # hung: connections are accepted, nothing answers
            with ThreadPoolExecutor(1) as pool:
                try:
                    read = pool.submit(requests.post, f"{url}/get-online-features", timeout=60, json={
                        "entities": {"user_key": ["u-1"]}, "feature_service": "credit_risk_v1"})
                    poll(lambda: _unread_bytes_at(port) > 0, "the read to reach the hung Redis", 30)
                    hung = health(url)
                finally:
                    redis_server.send_signal(signal.SIGCONT)
                assert read.result(timeout=60).status_code == 200  # answered once Redis was back
            assert hung[0] == 503 and "did not answer within" in hung[1]["detail"], hung
            poll(lambda: health(url)[0] == 200, "health to recover from the hang", 15)

            stop_process(redis_server)  # down: the port refuses
            down = health(url)
            assert down[0] == 503 and down[1]["status"] == "unavailable" and down[1]["detail"], down

            redis_server = _start_redis(port, tmp_path)
            poll(lambda: health(url) == (200, {"status": "ok"}), "health to recover from the outage", 15)
    finally:
        stop_process(redis_server)
        if applied:
            open_store(settings).delete_project(settings.project)  # the registry as it was found
        nightly.export()  # the session's environment back, for the tests after


def _unread_bytes_at(port: int) -> int:
    """Bytes that connections to loopback `port` sent and its server has not read: a request waiting in a
    stopped server's receive queues (/proc/net/tcp: established sockets, local port and rx_queue in hex)."""
    unread = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        _, local, _, state, queues, *_ = line.split()
        if int(local.split(":")[1], 16) == port and state == "01":
            unread += int(queues.split(":")[1], 16)
    return unread


def _start_redis(port: int, workdir: Path) -> subprocess.Popen:
    import redis

    binary = shutil.which("redis-server")
    assert binary, "redis-server is not on PATH (apt-get install redis-server)"
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(workdir)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def answers() -> bool:
        try:
            return redis.Redis(port=port, socket_timeout=1).ping()
        except redis.ConnectionError:
            return False

    try:
        poll(answers, f"redis-server on port {port}", 10,
              died=lambda: proc.poll() is not None and f"it exited with {proc.returncode}")
    except BaseException:
        stop_process(proc)
        raise
    return proc


def test_a_large_request_is_answered_not_hung(server):
    keys = sampled_users(DAYS[-1], 500)
    started = time.monotonic()
    answer = requests.post(f"{server}/get-online-features",
                           json={"entities": {"user_key": keys}, "feature_service": "credit_risk_v1"},
                           timeout=60)
    assert answer.status_code == 200 and len(answer.json()["results"][0]["values"]) == 500
    assert time.monotonic() - started < 60
