"""Files replaced whole or not at all (millet.files), and what an erasure does with the copies killed writers
leave: Millet's own, and DuckDB's of the files dbt writes."""

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from millet.files import abandoned_copies, replacing, write_bytes
from millet.ingest.partition import PART_FILE
from millet.privacy.zones import Scope, duckdb_copies, purge
from millet.settings import REPO_ROOT, Settings
from tests.e2e.processes import poll

# Writes a new content to argv[1]'s copy, says so, then waits for a line that never comes (it is killed).
MILLET_WRITER = """
import sys
from pathlib import Path
from millet.files import replacing
with replacing(Path(sys.argv[1])) as copy:
    copy.write_bytes(b"half of the new content")
    print("writing", flush=True)
    sys.stdin.readline()
"""

# A COPY as dbt's external materialization runs it, with the project's write options (argv[2]); its rows
# wait for a line that never comes, so the kill lands while DuckDB is writing argv[1].
DUCKDB_WRITER = """
import sys
import duckdb
con = duckdb.connect()
con.create_function("wait_for_the_kill", lambda n: int(sys.stdin.readline() or n), ["INTEGER"], "INTEGER")
rows = "select wait_for_the_kill(range::int) as n from range(3)"
con.execute(f"copy ({rows}) to '{sys.argv[1]}' ({sys.argv[2]})")
"""


def _run_until(script: str, *args: str, started) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", script, *args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT)
    try:
        poll(started, "the writer to start writing", timeout_s=60,
             died=lambda: proc.poll() is not None and f"it exited with {proc.returncode}")
    except BaseException:
        proc.kill()
        proc.wait(timeout=30)
        raise
    return proc


def _kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stdin.close()
    proc.stdout.close()


def _dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True, timeout=60)
    return int(done.stdout)


def test_a_failed_write_leaves_the_file_and_no_copy(tmp_path):
    path = tmp_path / "list.parquet"
    path.write_bytes(b"old")
    with pytest.raises(OSError), replacing(path) as copy:
        copy.write_bytes(b"ne")
        raise OSError("disk full")
    assert path.read_bytes() == b"old"
    assert list(tmp_path.iterdir()) == [path]


def test_a_private_file_is_never_readable_by_others(tmp_path):
    """Mutation that fails it: the copy made by write_bytes (umask 022: readable by all) and chmod after."""
    path = tmp_path / "keyring"
    old_umask = os.umask(0o022)
    try:
        with replacing(path, private=True) as copy:
            assert stat.S_IMODE(copy.stat().st_mode) == 0o600 and copy.stat().st_size == 0
            copy.write_bytes(b"secret")
        write_bytes(path, b"secret 2", private=True, durable=True)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and path.read_bytes() == b"secret 2"


def test_a_killed_writer_leaves_the_old_file_and_a_copy_found_once_it_is_gone(tmp_path):
    """Mutation that fails it: a copy counted abandoned while its writer still runs (or never)."""
    path = tmp_path / "dt=2026-03-01" / PART_FILE
    path.parent.mkdir()
    path.write_bytes(b"old")
    proc = _run_until(MILLET_WRITER, str(path), started=lambda: any(path.parent.glob(".*.tmp")))
    try:
        (copy,) = path.parent.glob(".*.tmp")
        assert abandoned_copies(tmp_path) == []  # its writer still runs: not abandoned
    finally:
        _kill(proc)
    assert path.read_bytes() == b"old"
    assert abandoned_copies(tmp_path) == [copy]
    assert f".{proc.pid}." in copy.name


def test_a_killed_duckdb_copy_leaves_no_file_and_a_copy_an_erasure_finds(tmp_path):
    """dbt's COPY with the project's write options: killed while it writes a day's first file, it leaves no
    half file where the file goes, and its copy where duckdb_copies looks. Mutation that fails it:
    use_tmp_file dropped from dbt_project.yml (DuckDB then writes a new file in place)."""
    settings = Settings(data_root=tmp_path, pseudonym_key="k")
    path = settings.snapshots_dir / "device" / "dt=2026-03-01" / PART_FILE
    path.parent.mkdir(parents=True)
    project = yaml.safe_load((REPO_ROOT / "dbt_project" / "dbt_project.yml").read_text())
    options = {"format": "parquet", **project["models"]["millet"]["+options"]}
    rendered = ", ".join(f"{name} {value}" for name, value in options.items())  # as dbt-duckdb renders them
    proc = _run_until(DUCKDB_WRITER, str(path), rendered, started=lambda: any(path.parent.iterdir()))
    _kill(proc)
    assert not path.exists()
    assert duckdb_copies(settings) == list(path.parent.iterdir())


def _parquet(path: Path, keys: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"user_key": keys, "n": list(range(len(keys)))}), path)


def test_an_erasure_removes_the_copies_killed_writers_left_and_no_writers_copy(tmp_path):
    """A copy a killed writer left holds other people's rows where no later erasure looks; DuckDB's, cut
    short, is not Parquet. Mutations that fail it: no sweep (the cut-short copy fails the erasure, the
    abandoned copy stays), or a sweep that takes a running writer's copy too."""
    settings = Settings(data_root=tmp_path, pseudonym_key="k")
    bronze = settings.bronze_dir / "commerce" / "dt=2026-03-01" / PART_FILE
    snapshot = settings.snapshots_dir / "device" / "dt=2026-03-01" / PART_FILE
    for path in (bronze, snapshot):
        _parquet(path, ["forgotten", "other"])
    abandoned = bronze.with_name(f".{PART_FILE}.{_dead_pid()}.1.tmp")
    _parquet(abandoned, ["other"])
    running = bronze.with_name(f".{PART_FILE}.{os.getpid()}.1.tmp")  # this process writes it
    _parquet(running, ["other"])
    cut_short = snapshot.with_name(f"tmp_{PART_FILE}")
    cut_short.write_bytes(snapshot.read_bytes()[:40])

    removed = purge({"forgotten"}, Scope.EVERYTHING, settings)

    assert removed == {"bronze": 1, "snapshots": 1}
    assert sorted(p.name for p in bronze.parent.iterdir()) == sorted([PART_FILE, running.name])
    assert [p.name for p in snapshot.parent.iterdir()] == [PART_FILE]
    for path in (bronze, snapshot):
        assert pq.read_table(path).column("user_key").to_pylist() == ["other"]
