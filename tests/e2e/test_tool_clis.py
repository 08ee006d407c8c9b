"""The tools' own command lines on Millet's repository, as their users run them: plain `feast` in features/
and plain `dbt` in dbt_project/, with no variable set (the defaults are Millet's own default settings), and
`millet feast` for the settings in force. One Feast configuration (millet.serving.store.feast_config)
behind Feast's CLI and every FeatureStore Millet opens; dbt's `env_var` defaults are Settings.dbt_defaults.

Mutations each test is there for: a `${VAR}` left in feature_store.yaml (plain `feast` fails without
Millet's variables); the committed file edited by hand instead of generated (it no longer matches);
`millet feast` not handing Feast the settings' data root (it lists the default root's registry, or none);
an `env_var` in dbt_project without a default, or with one that is not the setting's (plain `dbt` fails,
or reads another place); `feast ui`'s extra (grpcio-health-checking) dropped from the lock.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest
import yaml

from millet.feature_spec import families
from millet.serving.definitions import SERVICES
from millet.settings import REPO_ROOT, declared_settings
from tests.e2e.conftest import DAYS
from tests.e2e.processes import MILLET, answers, command_line, free_port, poll, processes_of, stop_process

DBT = str(Path(sys.executable).with_name("dbt"))
DBT_PROJECT = REPO_ROOT / "dbt_project"
ENV_VAR = re.compile(r"""env_var\(\s*['"](MILLET_\w+)['"]\s*(?:,\s*['"]([^'"]*)['"])?\s*\)""")
DEFAULTS_MACRO = re.compile(r'"(MILLET_\w+)":\s*"([^"]*)"')

FEAST = str(Path(sys.executable).with_name("feast"))
FEATURES = REPO_ROOT / "features"


def _bare_env(tmp_path) -> dict[str, str]:
    """What a new user's shell has: a PATH and a home, no MILLET_* (nor anything else of the session)."""
    return {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(tmp_path)}


def test_the_committed_feature_store_yaml_is_generated_from_the_default_settings(tmp_path):
    generate = ("from millet.serving.store import feature_store_yaml; from millet.settings import Settings; "
                "print(feature_store_yaml(Settings()), end='')")
    done = subprocess.run([sys.executable, "-c", generate], env=_bare_env(tmp_path), cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "${" not in done.stdout
    assert (FEATURES / "feature_store.yaml").read_text() == done.stdout, (
        "features/feature_store.yaml is generated: regenerate it with the command in this test")


def test_plain_feast_in_features_works_with_no_variables(tmp_path):
    """A model team's first step. It applies to the default data root (../.millet), as a user would."""
    env = _bare_env(tmp_path)
    done = subprocess.run([FEAST, "apply"], cwd=FEATURES, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    views, services = _listed(env, FEAST, cwd=FEATURES)
    assert {fam.name for fam in families()} <= views
    assert {spec.name for spec in SERVICES} <= services
    assert (REPO_ROOT / ".millet" / "feast" / "registry.db").exists()


def test_millet_feast_runs_feast_on_the_settings_in_force(nightly, tmp_path):
    env = {**os.environ, **nightly.millet_environ()}
    views, services = _listed(env, MILLET, "feast", cwd=tmp_path)
    assert {fam.name for fam in families()} <= views
    assert {spec.name for spec in SERVICES} <= services
    assert (nightly.feast_dir / "feature_store.yaml").read_text().count(str(nightly.feast_dir)) == 2


def _listed(env: dict, *command: str, cwd: Path) -> tuple[set[str], set[str]]:
    """The names in the first column of `feature-views list` and `feature-services list`."""
    names = []
    for what in ("feature-views", "feature-services"):
        done = subprocess.run([*command, what, "list"], cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, (what, done.stdout[-2000:], done.stderr[-3000:])
        names.append({line.split()[0] for line in done.stdout.splitlines()[1:] if line.strip()})
    return names[0], names[1]


@pytest.mark.e2e
@pytest.mark.parametrize("command, page", [("serve", "/health"), ("ui", "/projects-list.json")])
def test_plain_feast_serve_and_ui_in_features_answer_with_no_variables(tmp_path, command, page):
    """`feast serve` and `feast ui` from features/ (after `feast apply`, as a Feast user does) on the
    default data root; the UI lists Millet's project."""
    env, port = _bare_env(tmp_path), free_port()
    applied = subprocess.run([FEAST, "apply"], cwd=FEATURES, env=env, capture_output=True, text=True,
                             timeout=300)
    assert applied.returncode == 0, applied.stderr[-3000:]
    url = f"http://127.0.0.1:{port}{page}"
    with open(tmp_path / "feast.log", "w+") as log:
        server = subprocess.Popen([FEAST, command, "--host", "127.0.0.1", "--port", str(port)], cwd=FEATURES,
                                  env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            poll(lambda: answers(url), f"feast {command}", 180,
                 died=lambda: server.poll() is not None and (log.seek(0) or log.read()[-3000:]))
            body = _body(url)
        finally:
            stop_process(server)
    if command == "ui":
        assert [p["id"] for p in json.loads(body)["projects"]] == [declared_settings().project], body


def _body(url: str) -> str:
    import requests

    return requests.get(url, timeout=10).text


def test_dbt_project_defaults_are_the_declared_settings():
    """Every `env_var` in dbt_project/ has a default, and it is Settings' (a path seen from dbt_project/)."""
    expected, found = declared_settings().dbt_defaults(), {}
    for path in [*DBT_PROJECT.rglob("*.sql"), *DBT_PROJECT.rglob("*.yml")]:
        text = path.read_text()
        found |= {name: (default, path.name) for name, default in DEFAULTS_MACRO.findall(text)}
        for name, default in ENV_VAR.findall(text):
            if default:
                found[name] = (default, path.name)
            else:  # only the defaults macro may name a variable without its default beside it
                assert path.name == "millet_settings.sql", f"{path}: env_var('{name}') has no default"
    assert {name: default for name, (default, _) in found.items()} == {
        name: expected[name] for name in found}, found
    assert set(found) >= {n for n in expected if n.endswith(("_DIR", "_PATH"))}  # every path has one
    project_vars = yaml.safe_load((DBT_PROJECT / "dbt_project.yml").read_text())["vars"]
    assert project_vars["bank_booking_lag_days"] == declared_settings().bank_booking_lag_days
    assert project_vars["user_slices"] == declared_settings().state_user_slices


@pytest.mark.e2e
def test_plain_dbt_in_dbt_project_builds_and_documents_with_no_variables(nightly, tmp_path):
    """`dbt build --select ...` and `dbt docs generate` in dbt_project/ with only PATH and HOME: on a copy
    of the repository's layout (dbt_project/ beside .millet/) over the nightly world's bronze."""
    project, root = tmp_path / "dbt_project", tmp_path / ".millet"
    shutil.copytree(DBT_PROJECT, project, ignore=shutil.ignore_patterns("target", "logs"))
    (root / "warehouse").mkdir(parents=True)
    shutil.copy(nightly.warehouse_path, root / "warehouse" / nightly.warehouse_path.name)
    (root / "bronze").symlink_to(nightly.bronze_dir)
    env = _bare_env(tmp_path)
    for command in (["build", "--select", "staging", "--vars", '{as_of: "2026-01-02"}'],
                    ["docs", "generate"]):
        done = subprocess.run([DBT, *command], cwd=project, env=env, capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, (command, done.stdout[-3000:], done.stderr[-2000:])
    staging = {p.stem for p in (DBT_PROJECT / "models" / "staging").rglob("stg_*.sql")}
    results = json.loads((project / "target" / "run_results.json").read_text())["results"]
    catalog = json.loads((project / "target" / "catalog.json").read_text())
    built = {r["unique_id"].split(".")[-1] for r in results}
    assert staging <= built and all(r["status"] in ("success", "pass") for r in results), results
    assert {f"model.millet.{name}" for name in staging} <= set(catalog["nodes"])
    assert all(catalog["nodes"][f"model.millet.{name}"]["columns"] for name in staging)
    # The views read bronze through the default (relative) path: each answers with the nightly's rows.
    count = ("import duckdb, sys; con = duckdb.connect(sys.argv[1], read_only=True); "
             "print(con.execute(f'select count(*) from {sys.argv[2]}').fetchone()[0])")
    warehouse = str(root / "warehouse" / nightly.warehouse_path.name)
    done = subprocess.run([sys.executable, "-c", count, warehouse, "stg_payments__transactions"], cwd=project,
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    bronze = pq.read_table(nightly.bronze_dir / "payments", columns=["event_id"])
    assert int(done.stdout) == bronze.num_rows > 0


@pytest.mark.e2e
def test_millet_airflow_runs_airflow_on_the_runs_millet_made(nightly):
    """Airflow's own CLI on Millet's Airflow home: the runs `millet run` made (what `millet airflow
    standalone` shows in the UI)."""
    done = subprocess.run([MILLET, "airflow", "dags", "list-runs", "millet_nightly", "-o", "json"],
                          env={**os.environ, **nightly.millet_environ()}, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = json.loads(done.stdout.strip().splitlines()[-1])
    assert {(r["logical_date"][:10], r["state"]) for r in runs} >= {(day, "success") for day in DAYS}


@pytest.mark.e2e
def test_millet_status_shows_runs_feeds_alerts_and_the_online_day(nightly):
    from millet.alerts import alert_log
    from millet.contracts import contracts

    done = subprocess.run([MILLET, "status"], env={**os.environ, **nightly.millet_environ()},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    for day in DAYS:
        assert re.search(rf"^  {day}  success ", out, re.MULTILINE), out
    for channel in contracts():  # other tests of the session may have run later days on this world
        latest = max(path.name.removeprefix("dt=") for path in (nightly.bronze_dir / channel).glob("dt=*"))
        manifest = nightly.ingest_manifest_path(channel, latest)
        delivered = manifest.exists() and json.loads(manifest.read_text()).get("delivered_at")
        line = rf"{latest}, delivered \d+ \w+ ago" if delivered else rf"{latest}, delivery time unknown"
        assert re.search(rf"^  {channel} +{line}$", out, re.MULTILINE), out
    alerts = [json.loads(line) for line in alert_log(nightly).read_text().splitlines()]
    last = max(a["logical_date"] for a in alerts)
    severities = [a["severity"] for a in alerts if a["logical_date"] == last]
    assert (f"alerts of the latest night ({last}): {severities.count('critical')} critical, "
            f"{severities.count('warning')} warnings") in out
    assert f"serves the snapshot of {DAYS[-1]}" in out
    assert len(out.splitlines()) < 25  # a screen: Airflow's and Feast's own messages went to a file


@pytest.mark.e2e
def test_millet_status_on_a_new_data_root_says_so_and_creates_no_airflow_schema(tmp_path):
    """A look creates no schema: `millet status` before any run neither creates nor migrates Airflow's
    metadata database (a run does that). Mutation: status calling ensure_metadata_db (tables appear)."""
    import sqlite3

    from millet.settings import Settings

    # A new user's: SQLite and a file registry, whatever the session's services.
    settings = Settings(data_root=tmp_path / "new", pseudonym_key="test-only-key", airflow_database_url=None,
                        feast_registry_url=None)
    done = subprocess.run([MILLET, "status"], env=_bare_env(tmp_path) | settings.millet_environ(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "none: Airflow's metadata database is not at this Airflow's schema" in done.stdout
    assert "nothing published yet" in done.stdout
    database = settings.airflow_home / "airflow.db"
    tables = sqlite3.connect(database).execute("select name from sqlite_master").fetchall() \
        if database.exists() else []
    assert tables == []


@pytest.mark.e2e
def test_millet_status_with_airflow_s_database_down_says_so_and_reports_the_rest(tmp_path):
    """The night the on-call engineer needs status most: Airflow's PostgreSQL does not answer. Status names
    it in a line (no traceback) and still reports the feeds and the online store. Mutation: status without
    its handling of DagRunFailed (exit 1, a traceback)."""
    from millet.settings import Settings

    closed = free_port()  # nothing listens there: the connection is refused at once
    settings = Settings(data_root=tmp_path / "r", pseudonym_key="test-only-key", feast_registry_url=None,
                        airflow_database_url=f"postgresql+psycopg://millet@127.0.0.1:{closed}/airflow")
    done = subprocess.run([MILLET, "status"], env=_bare_env(tmp_path) | settings.millet_environ(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = done.stdout.splitlines()[1]
    assert runs.startswith(f"  unknown: Airflow's metadata database postgresql+psycopg://millet@127.0.0.1:{closed}/")
    assert "did not answer" in runs and "Connection refused" in runs
    assert "Traceback" not in done.stdout + done.stderr
    assert "feeds (latest day in bronze" in done.stdout
    assert "nothing published yet" in done.stdout


@pytest.mark.e2e
def test_millet_airflow_standalone_opens_airflow_on_the_runs_millet_made(nightly, tmp_path):
    """The README's recipe for Airflow's UI: `millet airflow standalone`, whose API (the UI's backend)
    lists the runs `millet run` made, for its generated admin password."""
    import requests

    port = free_port()
    env = {**os.environ, **nightly.millet_environ(), "AIRFLOW__API__PORT": str(port),
           "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
           "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port())}
    url = f"http://127.0.0.1:{port}"
    with open(tmp_path / "standalone.log", "w+") as log:
        standalone = subprocess.Popen([MILLET, "airflow", "standalone"], env=env, stdout=log,
                                      stderr=subprocess.STDOUT, start_new_session=True)
        try:
            poll(lambda: answers(f"{url}/api/v2/monitor/health"), "airflow standalone", 300,
                 died=lambda: standalone.poll() is not None and (log.seek(0) or log.read()[-3000:]))
            passwords = nightly.airflow_home / "simple_auth_manager_passwords.json.generated"
            token = requests.post(f"{url}/auth/token", timeout=30, json={
                "username": "admin", "password": json.loads(passwords.read_text())["admin"]}).json()
            runs = requests.get(f"{url}/api/v2/dags/millet_nightly/dagRuns", timeout=30,
                                headers={"Authorization": f"Bearer {token['access_token']}"}).json()
        finally:
            stop_process(standalone, timeout_s=60, group=True)
    assert {(r["logical_date"][:10], r["state"]) for r in runs["dag_runs"]} >= {(d, "success") for d in DAYS}
    left = [p for p in processes_of(nightly) if "airflow" in command_line(p)]
    _, alive = psutil.wait_procs(left, timeout=30)
    assert not alive, [command_line(p)[:200] for p in alive]

