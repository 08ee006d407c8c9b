"""The `millet` command run as a person runs it, in a process of its own, and the processes it leaves."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil

from millet.settings import Settings

MILLET = str(Path(sys.executable).with_name("millet"))


@contextmanager
def backfill_process(settings: Settings, start: str, end: str, **env) -> Iterator[subprocess.Popen]:
    """The CLI, as a person runs it, in a process of its own (Airflow reads its config once per process).
    Its process group is killed afterwards whatever happened; the test then checks nothing is left."""
    env = {**os.environ, **settings.millet_environ(), "MILLET_AIRFLOW_LOG_LEVEL": "WARNING", **env}
    process = subprocess.Popen([MILLET, "backfill", "--start", start, "--end", end], env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.communicate(timeout=60)


def processes_of(settings: Settings) -> list[psutil.Process]:
    """Every process started for this data root: the services, their workers and their task processes
    all inherit its MILLET_DATA_ROOT, whatever process group they put themselves in."""
    mine = []
    for process in psutil.process_iter():
        try:
            if process.environ().get("MILLET_DATA_ROOT") == str(settings.data_root):
                mine.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    return mine


def assert_nothing_left(settings: Settings, within_s: float = 60) -> None:
    deadline = time.monotonic() + within_s
    while (left := processes_of(settings)) and time.monotonic() < deadline:
        psutil.wait_procs(left, timeout=1)
    assert not left, [" ".join(p.cmdline()[:3]) for p in left]
