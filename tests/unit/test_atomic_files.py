"""Files replaced whole or not at all (millet.files), and what an erasure does with the copies killed writers
leave: Millet's own, and DuckDB's of the files dbt writes."""

import os
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path

import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from millet.files import (
    FOREIGN_COPY_IDLE_S,
    abandoned_copies,
    copy_path,
    duckdb_copies,
    replacing,
    write_bytes,
)
from millet.ingest.partition import PART_FILE
from millet.privacy.zones import BuildRunning, Scope, purge
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

# Holds the warehouse (argv[1]) open for writing, as a dbt build does from its first model to its end,
# and says so by creating argv[2].
BUILD = """
import sys
from pathlib import Path
import duckdb
con = duckdb.connect(sys.argv[1])
Path(sys.argv[2]).touch()
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


def test_a_failed_write_leaves_the_file_and_no_copy(tmp_path):
    path = tmp_path / "list.parquet"
    path.write_bytes(b"old")
    with pytest.raises(OSError), replacing(path) as copy:
        copy.write_bytes(b"ne")
        raise OSError("disk full")
    assert path.read_bytes() == b"old"
    assert list(tmp_path.iterdir()) == [path]


def test_a_private_file_is_never_readable_by_others(tmp_path):
    """Mutations that fail it: the copy made by write_bytes (umask 022: readable by all) and chmod after;
    a copy of the same name left readable by all keeping its mode."""
    path = tmp_path / "keyring"
    old_umask = os.umask(0o022)
    try:
        with replacing(path, private=True) as copy:
            assert stat.S_IMODE(copy.stat().st_mode) == 0o600 and copy.stat().st_size == 0
            copy.write_bytes(b"secret")
        copy.write_bytes(b"left by a writer whose pid and thread this one has now")
        copy.chmod(0o644)
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
    assert copy == copy_path(path, pid=proc.pid, thread=_thread(copy))


def _thread(copy: Path) -> int:
    return int(copy.name.removesuffix(".tmp").rsplit(".", 1)[1])


def _exited_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True, timeout=60)
    return int(done.stdout)


def test_a_copy_is_abandoned_only_when_its_writer_cannot_be_running(tmp_path):
    """A running process with the copy's pid wrote it unless it started after the copy last changed (the
    pid was taken again); a pid of another host or container says nothing here, so its copy is judged by
    how long it has not changed. Mutations that fail it: pid reuse not noticed; another host's pid looked
    up here; another host's copies never abandoned."""
    started = psutil.Process().create_time()
    mine = copy_path(tmp_path / "a.parquet")  # this process: running
    reused = copy_path(tmp_path / "b.parquet")  # this pid, but written before this process started
    # pids of another host or container: one that runs nowhere here, one that runs here too (init)
    foreign = copy_path(tmp_path / "c.parquet", where="0123abcd-4026531999", pid=_exited_pid())
    foreign_idle = copy_path(tmp_path / "d.parquet", where="0123abcd-4026531999", pid=1)
    rotation_journal = tmp_path / ".e.parquet.rekey.tmp"  # not this module's: never taken
    for path in (mine, reused, foreign, foreign_idle, rotation_journal):
        path.write_bytes(b"rows")
    os.utime(reused, (started - 3600, started - 3600))
    idle = started - FOREIGN_COPY_IDLE_S - 60
    for path in (foreign_idle, rotation_journal):
        os.utime(path, (idle, idle))

    assert abandoned_copies(tmp_path) == sorted([reused, foreign_idle])


def test_a_write_removes_its_files_abandoned_copies_and_no_other(tmp_path):
    """The next write of a file takes the copy of it a killed writer left (other people's rows no erasure
    would reach), not a copy still being written nor a copy of another file in the folder. Mutations that
    fail it: no sweep in replacing; a sweep of the whole folder; one taking a running writer's copy."""
    path = tmp_path / "part-0.parquet"
    path.write_bytes(b"old")
    started = psutil.Process().create_time()
    killed = copy_path(path, pid=_exited_pid())
    reused = copy_path(path, thread=1)  # this pid, but written before this process started
    running = copy_path(path, thread=2)  # another thread of this process, writing now
    other_file = copy_path(tmp_path / "part-0.parquet.bak", pid=_exited_pid())
    for copy in (killed, reused, running, other_file):
        copy.write_bytes(b"rows")
    os.utime(reused, (started - 3600, started - 3600))

    write_bytes(path, b"new")

    assert path.read_bytes() == b"new"
    assert sorted(tmp_path.iterdir()) == sorted([path, running, other_file])


def test_a_killed_duckdb_copy_leaves_no_file_and_a_copy_an_erasure_finds(tmp_path):
    """dbt's COPY with the project's write options: killed while it writes a day's first file, it leaves no
    half file where the file goes, and its copy where duckdb_copies looks. Mutation that fails it:
    use_tmp_file dropped from dbt_project.yml (DuckDB then writes a new file in place)."""
    path = tmp_path / "snapshots" / "device" / "dt=2026-03-01" / PART_FILE
    path.parent.mkdir(parents=True)
    project = yaml.safe_load((REPO_ROOT / "dbt_project" / "dbt_project.yml").read_text())
    options = {"format": "parquet", **project["models"]["millet"]["+options"]}
    rendered = ", ".join(f"{name} {value}" for name, value in options.items())  # as dbt-duckdb renders them
    proc = _run_until(DUCKDB_WRITER, str(path), rendered, started=lambda: any(path.parent.iterdir()))
    _kill(proc)
    assert not path.exists()
    assert duckdb_copies([tmp_path / "snapshots"]) == list(path.parent.iterdir())


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
    proc = _run_until(MILLET_WRITER, str(bronze), started=lambda: any(bronze.parent.glob(".*.tmp")))
    _kill(proc)
    (abandoned,) = bronze.parent.glob(".*.tmp")
    cut_short = snapshot.with_name(f"tmp_{PART_FILE}")
    cut_short.write_bytes(snapshot.read_bytes()[:40])
    tomorrow = settings.bronze_dir / "commerce" / "dt=2026-03-02" / PART_FILE
    tomorrow.parent.mkdir()
    with replacing(tomorrow) as running:  # a writer that runs while the erasure does
        _parquet(running, ["other"])

        removed = purge({"forgotten"}, Scope.EVERYTHING, settings)

        assert removed == {"bronze": 1, "snapshots": 1}
        assert sorted(bronze.parent.iterdir()) == [bronze] and running.exists()
    assert sorted(snapshot.parent.iterdir()) == [snapshot] and not abandoned.exists()
    for path in (bronze, snapshot, tomorrow):
        assert pq.read_table(path).column("user_key").to_pylist() == ["other"]


def test_an_erasure_is_refused_while_a_build_holds_the_warehouse(tmp_path):
    """DuckDB's copies are deleted whoever made them, which is safe only while no build writes: the
    erasure holds the warehouse, as every build does, or refuses before it touches a file. Mutation that
    fails it: the copies swept without holding the warehouse."""
    settings = Settings(data_root=tmp_path, pseudonym_key="k")
    snapshot = settings.snapshots_dir / "device" / "dt=2026-03-01" / PART_FILE
    _parquet(snapshot, ["forgotten", "other"])
    in_flight = snapshot.with_name(f"tmp_{PART_FILE}")
    shutil.copy(snapshot, in_flight)
    settings.warehouse_path.parent.mkdir(parents=True, exist_ok=True)
    holding = tmp_path / "holding"
    proc = _run_until(BUILD, str(settings.warehouse_path), str(holding), started=holding.exists)
    try:
        with pytest.raises(BuildRunning, match="another process holds the warehouse"):
            purge({"forgotten"}, Scope.EVERYTHING, settings)
    finally:
        _kill(proc)
    assert in_flight.exists() and pq.read_table(snapshot).num_rows == 2
