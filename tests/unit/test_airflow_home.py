"""Airflow reads its configuration once per process: settings for a second data root are refused, and the
refusal does not show the first database's password."""

import subprocess
import sys

CODE = """
import sys
from millet.orchestrate import DagRunFailed, recent_runs
from millet.settings import Settings

first = Settings(data_root=sys.argv[1], pseudonym_key="k",
                 airflow_database_url="postgresql+psycopg://millet:s3cret-pw@127.0.0.1:9/first")
second = Settings(data_root=sys.argv[2], pseudonym_key="k")  # before the export: Settings reads MILLET_*
first.export_for_airflow()
import airflow.configuration  # noqa: F401 (Airflow has now read the first data root's configuration)
try:
    recent_runs(second)
except DagRunFailed as exc:
    print(exc)
"""


def test_a_second_data_root_is_refused_without_the_first_database_s_password(tmp_path):
    done = subprocess.run([sys.executable, "-c", CODE, str(tmp_path / "first"), str(tmp_path / "second")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "this process already uses Airflow with postgresql+psycopg://millet:***@127.0.0.1:9/first" \
        in done.stdout, done.stdout + done.stderr[-2000:]
    assert "s3cret-pw" not in done.stdout + done.stderr
