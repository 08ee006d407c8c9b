"""`millet backfill`: Airflow's own backfill, executed by a real scheduler, loads each day once; it always
ends, and leaves no process behind, whatever happens to it."""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import socket
import sqlite3
import time
import uuid
from collections.abc import Iterator
from contextlib import closing
from datetime import date, timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import requests

from millet.contracts import contracts
from millet.feature_spec import families
from millet.serving.definitions import service_features
from millet.serving.store import DEFAULT_SERVICE
from millet.settings import Settings
from millet.simulate import simulate
from millet.simulate.faults import Faults
from millet.transform import snapshot_path
from tests.conftest import TEST_KEY
from tests.e2e.processes import (
    REDIS_DB,
    assert_nothing_left,
    backfill_process,
    millet_serve,
    poll,
    processes_of,
)

DAYS = ["2026-03-01", "2026-03-02"]
POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/{}"


@pytest.fixture
def postgres_database() -> Iterator[str]:
    """A database of its own on the machine's PostgreSQL, dropped after the test."""
    psycopg = pytest.importorskip("psycopg")
    name = f"millet_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=postgres", autocommit=True,
                                connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.skip(f"NO POSTGRESQL on 127.0.0.1:5432 ({exc}); the backfill e2e test needs one")
    with admin:
        admin.execute(f'create database "{name}"')
        try:
            yield POSTGRES.format(name)
        finally:
            admin.execute(f'drop database "{name}" with (force)')


def _world(tmp_path: Path, **overrides) -> Settings:
    settings = Settings(data_root=tmp_path / "data", secrets_dir=tmp_path / "secrets",
                        pseudonym_key=TEST_KEY.decode(), task_retries=0, **overrides)
    # Late and re-sent events cross day boundaries: each must still be loaded exactly once.
    simulate(settings.landing_dir, users=300, days=len(DAYS), start=date.fromisoformat(DAYS[0]), seed=3,
             faults=Faults(duplicate=0.05, late=0.05, malformed=0.01), truth_dir=settings.truth_dir)
    return settings


def _backfill(settings: Settings, start: str, end: str) -> dict[str, str]:
    with backfill_process(settings, start, end) as process:
        out, err = process.communicate(timeout=1800)  # a safety net: the stall limit ends it sooner
    assert process.returncode == 0, out[-3000:] + err[-3000:]
    assert_nothing_left(settings)
    return dict(re.findall(r"^(\d{4}-\d{2}-\d{2}): (.+)$", out, re.MULTILINE))


@pytest.fixture
def redis_project() -> Iterator[str]:
    """A Feast project (the Redis key prefix) of the test's own in the tests' Redis database; its keys are
    deleted after the test."""
    redis = pytest.importorskip("redis")
    client = redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB, socket_timeout=5)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        pytest.skip(f"NO REDIS on 127.0.0.1:6379 ({exc}); the service topology test needs one")
    project = f"millet_test_{uuid.uuid4().hex[:12]}"
    try:
        yield project
    finally:
        for key in client.scan_iter(match=f"millet:{project}:*", count=1000):
            client.delete(key)
        client.close()


@pytest.mark.e2e
def test_the_service_topology_on_postgres_and_redis_loads_each_day_once_and_serves_the_last(
        tmp_path, postgres_database, redis_project):
    """What docker-compose.yml runs, without Docker: Airflow's scheduler on PostgreSQL, Feast's SQL
    registry on PostgreSQL, the Redis online store, and `millet serve` as a long-running process."""
    settings = _world(tmp_path, airflow_database_url=postgres_database, feast_registry_url=postgres_database,
                      online_store="redis", redis_url=f"127.0.0.1:6379,db={REDIS_DB}", project=redis_project)

    # The second backfill's range starts at the day the first one loaded.
    assert _backfill(settings, DAYS[0], DAYS[0]) == {DAYS[0]: "success"}
    day_one = _outputs_of(settings, DAYS[0])
    assert _backfill(settings, DAYS[0], DAYS[1]) == {DAYS[0]: "already exists", DAYS[1]: "success"}

    assert _outputs_of(settings, DAYS[0]) == day_one  # not loaded again: same bytes, same write times
    runs = sorted(p.name for p in (settings.airflow_home / "logs" / "dag_id=millet_nightly").iterdir())
    # Airflow 3 names a run by when it was due: a day's run once the day is over (and no run for "today")
    due = [date.fromisoformat(day) + timedelta(days=1) for day in DAYS]
    assert runs == [f"run_id=backfill__{day}T00:00:00+00:00" for day in due]
    assert not (settings.airflow_home / "airflow.db").exists()  # the metadata went to PostgreSQL
    for channel in contracts():
        for day in DAYS:
            assert json.loads(settings.ingest_manifest_path(channel, day).read_text())["balanced"]
        ids = pq.read_table(settings.bronze_dir / channel, columns=["event_id"]).column(0).to_pylist()
        assert len(ids) == len(set(ids)), f"{channel}: an event was loaded on two days"
    # Feast's registry is in PostgreSQL (no registry file), with the project's feature views in it.
    assert not (settings.feast_dir / "registry.db").exists()
    assert _registered_views(postgres_database, redis_project) == {fam.name for fam in families()}
    # The feature server, reading Redis through that registry, answers what the last day's snapshot holds.
    users = sorted(pq.read_table(snapshot_path("device", DAYS[-1], settings), columns=["user_key"])
                   .column(0).to_pylist())[:5]
    expected = {fam.name: {row["user_key"]: row for row in pq.read_table(
        snapshot_path(fam.name, DAYS[-1], settings)).to_pylist()} for fam in families()}
    with millet_serve(settings) as url:
        answer = requests.post(f"{url}/get-online-features", timeout=60,
                               json={"entities": {"user_key": users}, "feature_service": DEFAULT_SERVICE})
    assert answer.status_code == 200, answer.text[:2000]
    body = answer.json()
    served = dict(zip(body["metadata"]["feature_names"], body["results"], strict=True))
    for feature in service_features(DEFAULT_SERVICE):
        for user, value in zip(users, served[feature.name]["values"], strict=True):
            want = expected[feature.family].get(user, {}).get(feature.name)
            assert value == (want if want is None else pytest.approx(want, rel=1e-6)), (feature.name, user)


def _registered_views(database_url: str, project: str) -> set[str]:
    import psycopg

    conninfo = database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(conninfo, connect_timeout=5) as con:
        rows = con.execute("select feature_view_name from feature_views where project_id = %s",
                           (project,)).fetchall()
    return {name for (name,) in rows}


@pytest.fixture
def unanswering_api() -> Iterator[str]:
    """An execution API that accepts connections and never answers: tasks cannot start."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(64)
        yield f"http://127.0.0.1:{server.getsockname()[1]}/execution/"


@pytest.mark.e2e
def test_a_backfill_whose_tasks_cannot_start_ends_at_the_stall_limit_naming_day_and_task(
        tmp_path, unanswering_api):
    stall_s = 40
    settings = _world(tmp_path, backfill_stall_s=stall_s)
    started = time.monotonic()
    # The task runner retries its first call for about a minute, then fails the task (and Airflow the day),
    # which also ends the backfill; many retries keep the tasks queued, so the stall limit is what ends it.
    with backfill_process(settings, DAYS[0], DAYS[1], AIRFLOW__WORKERS__EXECUTION_API_RETRIES="1000",
                           AIRFLOW__CORE__EXECUTION_API_SERVER_URL=unanswering_api) as process:
        out, err = process.communicate(timeout=stall_s + 240)  # start-up, parse, the stall, the stop
    took = time.monotonic() - started

    assert process.returncode == 1, out + err
    assert f"no task changed state for {stall_s} s" in err, err
    assert re.search(rf"{DAYS[0]} task \w+(\[\d+\])? queued \(log: .+attempt=1\.log\)", err), err
    assert took < stall_s + 180, took
    assert_nothing_left(settings)
    assert not any(settings.bronze_dir.rglob("*.parquet"))  # no task ever ran


@pytest.mark.e2e
def test_killing_the_backfill_command_stops_every_service_and_blocks_no_later_backfill(
        tmp_path, unanswering_api):
    """SIGKILL of the command once its backfill exists: every service it started stops, its lock is let go
    only then, and the next `millet backfill` ends the backfill it left active (Airflow refuses every
    backfill of the DAG while one is) and fails its unfinished day (a day left running is never re-run).
    A second command while one runs is refused before it touches anything. Its tasks never start (an
    execution API that never answers), so the day is unfinished whenever the kill lands. Mutations that
    fail it: no lock (the second command ends the first's backfill); the lock not held by the services'
    supervisor (it is free while they stop); the killed command's backfill not ended."""
    settings = _world(tmp_path)
    with backfill_process(settings, DAYS[0], DAYS[0], AIRFLOW__WORKERS__EXECUTION_API_RETRIES="1000",
                           AIRFLOW__CORE__EXECUTION_API_SERVER_URL=unanswering_api) as process:
        poll(lambda: _backfills_completed(settings) != [], "the backfill to be created", 300,
             died=lambda: process.poll() is not None and f"the command exited with {process.returncode}")
        with backfill_process(settings, DAYS[1], DAYS[1]) as second:
            _, err = second.communicate(timeout=120)
        assert second.returncode == 1 and "another `millet backfill`" in err, err
        os.kill(process.pid, signal.SIGKILL)  # the command alone: it can run no clean-up of its own
        process.wait(timeout=10)
        assert _lock_is_let_go_only_once_nothing_is_left(settings), "the lock was free at once"
        assert_nothing_left(settings)
    assert _backfills_completed(settings) == [False]  # left active

    with backfill_process(settings, DAYS[1], DAYS[1]) as after:
        _, err = after.communicate(timeout=300)
    assert "left active by a `millet backfill` that was killed" in err, err
    assert f"the run for {DAYS[0]} ended failed" in err, err  # to re-run, not to wait for forever
    assert _backfills_completed(settings) == [True]
    assert_nothing_left(settings)


def _lock_is_let_go_only_once_nothing_is_left(settings: Settings, within_s: float = 120) -> bool:
    """Takes `millet backfill`'s lock as soon as it is free, and checks that no process of the data root
    is left then; whether it was found held at all (right after the kill, the services are still
    stopping: they take seconds)."""
    deadline, held = time.monotonic() + within_s, False
    with open(settings.airflow_home / "backfill.lock", "a") as lock:
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                held = True
                assert time.monotonic() < deadline, f"the lock was still held after {within_s} s"
                time.sleep(0.1)  # a bounded poll
                continue
            left = processes_of(settings)
            fcntl.flock(lock, fcntl.LOCK_UN)
            assert not left, f"the lock was let go while these still ran: {left}"
            return held


def _backfills_completed(settings: Settings) -> list[bool]:
    """Whether each backfill in the metadata database is complete, oldest first ([] before the first)."""
    try:
        with closing(sqlite3.connect(settings.airflow_home / "airflow.db", timeout=2)) as con:
            return [bool(done) for (done,) in con.execute(
                "select completed_at is not null from backfill order by id")]
    except sqlite3.OperationalError:  # no table yet, or the services hold the database this moment
        return []


def _outputs_of(settings: Settings, day: str) -> dict[str, tuple[bytes, int]]:
    """Every file that day's run wrote under bronze and manifests, with its bytes and write time."""
    files = [*settings.bronze_dir.glob(f"*/dt={day}/*"), *settings.manifests_dir.rglob(f"dt={day}.json")]
    assert files
    return {str(f): (f.read_bytes(), f.stat().st_mtime_ns) for f in files}


@pytest.mark.parametrize("server", ["nothing listening", "accepts and never answers"])
def test_a_metadata_database_that_does_not_answer_ends_the_command_with_a_message(tmp_path, server):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        if server == "accepts and never answers":
            listener.listen(8)
        else:
            listener.close()
        settings = Settings(data_root=tmp_path / "data", pseudonym_key=TEST_KEY.decode(),
                            airflow_database_url=POSTGRES.format("airflow").replace("5432", str(port)))
        started = time.monotonic()
        with backfill_process(settings, DAYS[0], DAYS[0]) as process:
            out, err = process.communicate(timeout=120)
    assert process.returncode == 1, out + err
    assert f"metadata database postgresql+psycopg://postgres@127.0.0.1:{port}/airflow" in err, err
    assert "did not answer" in err and "MILLET_AIRFLOW_DATABASE_URL" in err
    assert "Traceback" not in err
    assert time.monotonic() - started < 90


def test_creating_the_backfill_waits_out_a_locked_metadata_database_and_gives_up_after_its_tries(tmp_path):
    # The lock is a real SQLite lock held by another connection, as the scheduler holds it; `write` is
    # an insert that waits for no lock, so each try fails at once while the lock is held.
    from millet.orchestrate import retry_when_locked
    from millet.settings import get_settings

    get_settings().export_for_airflow()  # Airflow reads its home when first imported: the session's
    sqlalchemy = pytest.importorskip("sqlalchemy")
    path = tmp_path / "metadata.db"
    engine = sqlalchemy.create_engine(f"sqlite:///{path}", connect_args={"timeout": 0})
    with engine.begin() as connection:
        connection.exec_driver_sql("create table runs (day text)")
    holder = sqlite3.connect(path, isolation_level=None)
    waits = []

    def write():
        with engine.begin() as connection:
            connection.exec_driver_sql("insert into runs values ('2026-03-01')")
        return "created"

    def release_after_two_waits(seconds):
        waits.append(seconds)
        if len(waits) == 2:
            holder.execute("rollback")

    holder.execute("begin exclusive")
    try:
        assert retry_when_locked(write, tries=3, wait=release_after_two_waits) == "created"
        assert waits == [2, 4]
        holder.execute("begin exclusive")
        with pytest.raises(sqlalchemy.exc.OperationalError, match="database is locked"):
            retry_when_locked(write, tries=3, wait=waits.append)  # never released: three tries, then up
        assert waits == [2, 4, 2, 4]
    finally:
        holder.close()
    with engine.begin() as connection:
        assert connection.exec_driver_sql("select count(*) from runs").scalar() == 1
        with pytest.raises(sqlalchemy.exc.OperationalError, match="no such table"):  # not a lock: at once
            retry_when_locked(lambda: connection.exec_driver_sql("select * from no_table"), wait=waits.append)
    assert waits == [2, 4, 2, 4]
    engine.dispose()
