"""Kill -9 the nightly DAG inside each stage, re-run the same day: nothing lost, nothing duplicated.

One small world. Day 1 runs once and its data root is copied twice. In one copy day 2 runs uninterrupted:
the reference. In the other, `millet run` for day 2 is SIGKILLed, its whole process group, inside
ingestion, then inside dbt's incremental merge, then inside the GX check, then while the online store is
half written, and finally run to success. Bronze, the warehouse's intermediate tables, the snapshots and
the online store must then equal the reference's. Each kill waits for an observable sign that its stage is
under way (bronze partitions, dbt's log, Airflow's task states, the online store's rows), freezes the run
(SIGSTOP) to confirm it, kills it (or lets it go on to the next chance), and afterwards asserts what a kill
inside the stage leaves, so the test cannot pass without having interrupted it.

Where a run's time goes (about three minutes a run here, two thirds of it the GX check of 1,251 features):
day 1; day 2 uninterrupted, alongside the killed runs; four runs killed on the way; the run that finishes.
"""

from __future__ import annotations

import os
import pickle
import random
import re
import shutil
import signal
import sqlite3
import struct
import subprocess
import sys
import time
from contextlib import closing
from datetime import date
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from millet.contracts import contracts
from millet.settings import Settings
from millet.simulate import simulate
from millet.simulate.faults import Faults
from millet.transform.dbt import dbt_log_path
from tests.conftest import TEST_KEY
from tests.e2e.processes import poll

DAY1, DAY2 = "2026-01-01", "2026-01-02"
MILLET = str(Path(sys.executable).with_name("millet"))
RUN_LIMIT_S = 900  # one run of this world takes about three minutes on two busy cores
POLL_S = 0.02


def _settings(root: Path) -> Settings:
    return Settings(data_root=root, secrets_dir=root.parent / "secrets", pseudonym_key=TEST_KEY.decode(),
                    online_store="sqlite", task_retries=0, airflow_log_level="WARNING")


@pytest.fixture(scope="module")
def day_one(tmp_path_factory) -> Path:
    """A data root after an uninterrupted run of day 1; each world below starts from a copy of it."""
    settings = _settings(tmp_path_factory.mktemp("kill-stages") / "day1")
    # Re-sent and late events: dedupe against earlier days must hold across kills too.
    simulate(settings.landing_dir, users=300, days=2, start=date.fromisoformat(DAY1), seed=11,
             faults=Faults(duplicate=0.05, late=0.05, malformed=0.01), truth_dir=settings.truth_dir)
    _finish(_start(settings, DAY1), settings)
    return settings.root


@pytest.mark.e2e
@pytest.mark.slow  # seven DAG runs of about two minutes each: outside the default suite's 20 minutes
def test_a_day_killed_inside_each_stage_then_rerun_ends_as_if_never_interrupted(day_one):
    reference, killed = (_settings(day_one.with_name(name)) for name in ("reference", "killed"))
    for world in (reference, killed):
        shutil.copytree(day_one, world.root, symlinks=True)
    uninterrupted = _start(reference, DAY2)  # alongside the killed runs: two cores, two runs
    try:
        _kill_inside_ingestion(killed)
        interrupted_models = _kill_inside_an_incremental_merge(killed)
        _kill_inside_the_quality_check(killed)
        _kill_with_the_online_store_half_written(killed)
        _finish(_start(killed, DAY2), killed)
        _finish(uninterrupted, reference)
    finally:
        _stop(uninterrupted)

    assert _files(killed, "bronze", "quarantine") == _files(reference, "bronze", "quarantine")
    assert _files(killed, "manifests/ingest") == _files(reference, "manifests/ingest")
    tables = _intermediate_tables(reference)
    assert _intermediate_tables(killed) == tables
    assert any(tables[model][DAY2] for model in interrupted_models)  # the merge killed did load rows
    _assert_same_snapshots(killed, reference)
    ours, theirs = _online_values([killed, reference], _snapshot_users(reference))
    assert ours == theirs
    assert _leftovers(killed) == []


# ---- the kills -----------------------------------------------------------------------------------------
def _kill_inside_ingestion(settings: Settings) -> None:
    def loading() -> bool:  # consent and a channel loaded, not every channel: between or inside loads
        return 2 <= _bronze_partitions(settings, DAY2) < len(contracts())

    dbt_log = _DbtLog(settings)
    _kill_when(_start(settings, DAY2), loading, "ingestion")
    assert loading()
    assert not dbt_log.new_lines(), "dbt had started: the kill came after ingestion"


def _kill_inside_an_incremental_merge(settings: Settings) -> set[str]:
    """Killed while the transaction (temp table, delete, insert) of an intermediate model that holds rows
    is open; returns the models whose transactions were open."""
    with_rows = {model for model, days in _intermediate_tables(settings).items() if days[DAY1]}
    dbt_log = _DbtLog(settings)

    def merging() -> bool:
        return bool(dbt_log.models_in_transaction() & with_rows)

    _kill_when(_start(settings, DAY2), merging, "an incremental merge")
    assert merging(), "every merge had committed: the kill came after them"
    interrupted = dbt_log.models_in_transaction()
    # The warehouse opens (DuckDB replays its WAL) and holds none of an interrupted merge's rows.
    with closing(duckdb.connect(str(settings.warehouse_path), read_only=True)) as con:
        for model in interrupted:
            rows = con.sql(f"select count(*) from {model} where arrived_on = '{DAY2}'").fetchall()[0][0]
            assert rows == 0, f"{model}: {rows} rows of a merge that never committed"
    return interrupted


def _kill_inside_the_quality_check(settings: Settings) -> None:
    def checking() -> bool:
        return _task_states(settings, DAY2).get("check_features") == "running"

    _kill_when(_start(settings, DAY2), checking, "the GX check")
    states = _task_states(settings, DAY2)
    assert (states["build_features"], states["check_features"], states["publish_features"]) == (
        "success", "running", None)
    assert not (settings.root / "quality" / f"dt={DAY2}.json").exists()


def _kill_with_the_online_store_half_written(settings: Settings) -> None:
    def half_written() -> bool:
        written, views = _views_online(settings, DAY2)
        return 0 < written < views

    _kill_when(_start(settings, DAY2), half_written, "publication")
    assert half_written(), "no feature view, or every one, held the day's rows: not half written"
    assert _task_states(settings, DAY2)["publish_features"] == "running"


# ---- running `millet run` in a process group of its own -------------------------------------------------
def _start(settings: Settings, day: str) -> subprocess.Popen:
    """The CLI as a person runs it, with exactly these settings (Airflow reads its config once per
    process), in a session of its own so that a kill reaches every process it started."""
    out = settings.root.parent / f"{settings.root.name}-{day}.out"
    with open(out, "ab") as sink:
        return subprocess.Popen([MILLET, "run", "--date", day], env=_environ(settings), stdout=sink,
                                stderr=subprocess.STDOUT, start_new_session=True)


def _environ(settings: Settings) -> dict[str, str]:
    """This environment with these settings in place of any MILLET_ or Airflow variable of the session."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("MILLET_", "AIRFLOW"))}
    return inherited | settings.millet_environ()


def _finish(run: subprocess.Popen, settings: Settings) -> None:
    try:
        code = run.wait(timeout=RUN_LIMIT_S)
    finally:
        _stop(run)
    assert code == 0, _tails(settings)


def _kill_when(run: subprocess.Popen, inside, stage: str) -> None:
    """SIGKILL the run's process group inside `stage`: poll `inside()` (bounded); when it says yes, freeze
    the group and ask again, so that a stage left between the two answers is not taken for a kill inside
    it; if it has been left, let the run go on to the next chance."""
    deadline = time.monotonic() + RUN_LIMIT_S
    try:
        while True:
            assert run.poll() is None, f"the run ended ({run.returncode}) before it was inside {stage}"
            assert time.monotonic() < deadline, f"no sign of {stage} after {RUN_LIMIT_S} s"
            if inside():
                os.killpg(run.pid, signal.SIGSTOP)
                if inside():
                    return
                os.killpg(run.pid, signal.SIGCONT)
            time.sleep(POLL_S)
    finally:
        _stop(run)


def _stop(run: subprocess.Popen) -> None:
    try:
        os.killpg(run.pid, signal.SIGKILL)
    except ProcessLookupError:  # the group is gone already
        pass
    run.wait(timeout=30)


def _tails(settings: Settings) -> str:
    logs = [*settings.root.parent.glob(f"{settings.root.name}-*.out"),
            *(settings.airflow_home / "logs").rglob("*.log")]
    return "\n".join(f"== {log}\n{log.read_text(errors='replace')[-3000:]}" for log in logs)


# ---- signs that a stage is under way ----------------------------------------------------------------------
def _bronze_partitions(settings: Settings, day: str) -> int:
    return sum(1 for _ in settings.bronze_dir.glob(f"*/dt={day}/part-0.parquet"))


class _DbtLog:
    """dbt's debug log from where it ends now: which intermediate models are inside their transaction.
    (dbt logs BEGIN before the model's first statement and COMMIT before committing.)"""

    EVENT = re.compile(r"On model\.millet\.(int_\w+): (BEGIN|COMMIT)")

    def __init__(self, settings: Settings):
        self.path = dbt_log_path(settings)
        self.offset = self.path.stat().st_size if self.path.exists() else 0
        self.open: set[str] = set()
        self._partial = ""

    def new_lines(self) -> list[str]:
        if not self.path.exists():
            return []
        if self.path.stat().st_size < self.offset:  # dbt rotated its log
            self.offset = 0
        with open(self.path, encoding="utf-8", errors="replace") as log:
            log.seek(self.offset)
            text = log.read()
        self.offset += len(text.encode("utf-8", errors="replace"))
        *lines, self._partial = (self._partial + text).split("\n")
        return lines

    def models_in_transaction(self) -> set[str]:
        for line in self.new_lines():
            if event := self.EVENT.search(line):
                model, what = event.groups()
                (self.open.add if what == "BEGIN" else self.open.discard)(model)
        return set(self.open)


def _task_states(settings: Settings, day: str) -> dict[str, str | None]:
    """Airflow's record of the day's run: task → state (mapped tasks: any one of them); nothing while a
    frozen run holds the database locked."""
    try:
        with closing(sqlite3.connect(settings.airflow_home / "airflow.db", timeout=2)) as con:
            rows = con.execute(
                "select ti.task_id, ti.state from task_instance ti join dag_run dr using (dag_id, run_id) "
                "where dr.dag_id = 'millet_nightly' and date(dr.logical_date) = ?", (day,)).fetchall()
    except sqlite3.OperationalError:
        return {}
    return dict(rows)


def _views_online(settings: Settings, day: str) -> tuple[int, int]:
    """(feature views whose online rows carry the day's snapshot timestamp, feature views); nothing while
    a frozen run holds the database locked."""
    from millet.serving.online.stores import HEADER, PackedSqliteOnlineStore
    from millet.serving.store import snapshot_timestamp

    stamp = struct.pack("<q", int(snapshot_timestamp(day).timestamp()) * 1_000_000)
    offset = HEADER.size - 8 + 1  # SQLite counts from 1; the stamp is the header's last 8 bytes
    try:
        with closing(sqlite3.connect(settings.feast_dir / "online.db", timeout=2)) as con:
            tables = [name for (name,) in con.execute("select name from sqlite_master where type = 'table'")
                      if name != PackedSqliteOnlineStore._LAYOUTS]
            written = sum(bool(con.execute(f'select 1 from "{name}" where substr(record, {offset}, 8) = ? '
                                           "limit 1", (stamp,)).fetchone()) for name in tables)
    except sqlite3.OperationalError:
        return 0, 0
    return written, len(tables)


# ---- what the runs left ----------------------------------------------------------------------------------
def _files(settings: Settings, *folders: str) -> dict[str, bytes]:
    return {str(path.relative_to(settings.root)): path.read_bytes()
            for folder in folders for path in sorted((settings.root / folder).rglob("*")) if path.is_file()}


def _intermediate_tables(settings: Settings) -> dict[str, dict[str, list[tuple]]]:
    """Each intermediate model's rows, by arrival day, in a fixed order. List columns hold sets
    (`list(distinct …)`, in DuckDB's hash order, which differs from run to run): they are sorted."""
    with closing(duckdb.connect(str(settings.warehouse_path), read_only=True)) as con:
        columns = con.sql("select table_name, column_name, data_type like '%[]' "
                          "from information_schema.columns where table_schema = 'main' "
                          "and starts_with(table_name, 'int_') order by table_name, ordinal_position")
        models: dict[str, list[str]] = {}
        for model, column, is_list in columns.fetchall():
            models.setdefault(model, []).append(f'list_sort("{column}")' if is_list else f'"{column}"')
        return {model: {day: con.sql(f"select {', '.join(select)} from {model} where arrived_on = '{day}' "
                                     "order by all").fetchall() for day in (DAY1, DAY2)}
                for model, select in models.items()}


def _assert_same_snapshots(settings: Settings, reference: Settings) -> None:
    files = sorted(p.relative_to(reference.snapshots_dir) for p in reference.snapshots_dir.rglob("*"))
    assert sorted(p.relative_to(settings.snapshots_dir) for p in settings.snapshots_dir.rglob("*")) == files
    for name in (f for f in files if f.suffix == ".parquet"):
        ours, theirs = (pq.read_table(s.snapshots_dir / name).sort_by("user_key")
                        for s in (settings, reference))
        assert ours.equals(theirs), name


def _snapshot_users(settings: Settings) -> list[str]:
    return sorted({key for part in settings.snapshots_dir.rglob("*.parquet")
                   for key in pq.read_table(part, columns=["user_key"]).column(0).to_pylist()})


ONLINE_VALUES = """
import pickle, sys
from millet.serving.store import open_store
store = open_store()
users = pickle.loads(open(sys.argv[1], "rb").read())
features = [f"{view.name}:{field.name}" for view in store.list_feature_views() for field in view.features]
values = store.get_online_features(features=features, entity_rows=[{"user_key": u} for u in users])
open(sys.argv[2], "wb").write(pickle.dumps(values.to_dict(include_event_timestamps=True)))
"""


def _online_values(worlds: list[Settings], users: list[str]) -> list[dict[str, list]]:
    """Every feature of every user, with its event timestamp, read through Feast: a process per data root
    (Feast takes its configuration from the environment), all at once."""
    asked = worlds[0].root.parent / "online-users.pkl"
    asked.write_bytes(pickle.dumps(users))
    answers = [world.root.parent / f"{world.root.name}-online.pkl" for world in worlds]
    readers = []
    for world, answer in zip(worlds, answers, strict=True):
        with open(answer.with_suffix(".err"), "wb") as errors:
            readers.append(subprocess.Popen([sys.executable, "-c", ONLINE_VALUES, str(asked), str(answer)],
                                            env=_environ(world), stderr=errors, start_new_session=True))
    try:
        codes = [reader.wait(timeout=600) for reader in readers]
    finally:
        for reader in readers:  # each in a session of its own: pytest would not stop it
            _stop(reader)
    for code, answer in zip(codes, answers, strict=True):
        assert code == 0, answer.with_suffix(".err").read_text()[-3000:]
    return [pickle.loads(answer.read_bytes()) for answer in answers]


def _leftovers(settings: Settings) -> list[str]:
    """Temporary files of killed writers where readers look: the partition writer's, DuckDB's COPY's,
    the registry's."""
    folders, patterns = ("bronze", "quarantine", "snapshots", "feast"), (".*.tmp", "tmp_*")
    return sorted(str(p.relative_to(settings.root)) for folder in folders for pattern in patterns
                  for p in (settings.root / folder).rglob(pattern))


# ---- the Feast registry, killed mid-write --------------------------------------------------------------
# One process pays for the imports, then forks a writer per round that rewrites the registry forever.
REWRITE_REGISTRY_FOREVER = """
import os, sys
from pathlib import Path
from feast.protos.feast.core.Registry_pb2 import Registry
from feast.repo_config import RegistryConfig
from millet.serving.registry_store import AtomicFileRegistryStore
path = Path(sys.argv[1])
store = AtomicFileRegistryStore(RegistryConfig(path=str(path)), path.parent)
registry = Registry()
for i in range(int(sys.argv[2])):  # about the size of Millet's registry (1,251 features): a megabyte
    registry.entities.add().spec.name = f"entity_{i:06d}"
for _ in sys.stdin:
    writer = os.fork()
    if writer == 0:
        while True:
            store.update_registry_proto(registry)
    print(writer, flush=True)
    os.waitpid(writer, 0)
    print("reaped", flush=True)
"""


def test_a_registry_write_killed_midway_leaves_the_old_registry_or_the_new_one(tmp_path):
    from feast.protos.feast.core.Registry_pb2 import Registry

    path, entities = tmp_path / "registry.db", 60_000
    server = subprocess.Popen([sys.executable, "-c", REWRITE_REGISTRY_FOREVER, str(path), str(entities)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              start_new_session=True)
    rng, interrupted = random.Random(1), 0
    try:
        for _ in range(12):
            server.stdin.write("write\n")
            server.stdin.flush()
            writer = int(server.stdout.readline())
            poll(path.exists, "the first whole registry", timeout_s=60)  # a writer that fails writes none
            # Strike while this writer's copy is being written (a write takes milliseconds, and on a busy
            # machine a blind strike can miss every one): as soon as it is seen, give or take a moment.
            copies = f".registry.db.*.{writer}.*.tmp"
            deadline = time.monotonic() + 60
            while not any(tmp_path.glob(copies)):
                assert time.monotonic() < deadline, "the writer began no write in 60 s"
            time.sleep(rng.uniform(0.0, 0.002))  # when to strike, not synchronisation
            os.kill(writer, signal.SIGKILL)
            assert server.stdout.readline().strip() == "reaped"
            registry = Registry()
            registry.ParseFromString(path.read_bytes())  # Feast's own store: DecodeError, or empty
            assert len(registry.entities) == entities
            interrupted += bool(list(tmp_path.glob(copies)))
    finally:
        _stop(server)
    assert interrupted >= 1, "no kill landed inside a write; the test proved nothing"
