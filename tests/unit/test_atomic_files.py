"""Files replaced whole or not at all (millet.files), and the copies killed writers leave."""

import os
import signal
import stat
import subprocess
import sys

import pytest

from millet.files import abandoned_copies, replacing, write_bytes
from millet.ingest.partition import PART_FILE
from millet.settings import REPO_ROOT
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
