"""The `millet` command run as a person runs it, in a process of its own, and the processes it leaves."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import requests

from millet.settings import Settings

MILLET = str(Path(sys.executable).with_name("millet"))
REDIS_DB = 9  # the tests' own Redis database; every key they write is removed after them


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
    assert not left, [command_line(p)[:200] for p in left]


# ---- `millet serve` -----------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def poll(done, what: str, timeout_s: float, died=None) -> None:
    """Until `done()` holds; fails after `timeout_s`, or as soon as `died()` gives a reason."""
    deadline = time.monotonic() + timeout_s
    while not done():
        reason = died() if died else None
        assert not reason, f"gave up waiting for {what}: {reason}"
        assert time.monotonic() < deadline, f"gave up waiting for {what} after {timeout_s} s"
        time.sleep(0.2)


def health(url: str) -> tuple[int, dict]:
    answer = requests.get(f"{url}/health", timeout=30)
    return answer.status_code, answer.json()


def answers(url: str) -> bool:
    """Whether `url` answers 200 now. Not yet (refused, reset, a first answer slower than 10 s) is no error:
    a caller polls again."""
    try:
        return requests.get(url, timeout=10).status_code == 200
    except requests.RequestException:
        return False


def command_line(process: psutil.Process) -> str:
    """`process`'s command line, or "" if it has ended meanwhile (services start and reap children)."""
    try:
        return " ".join(process.cmdline())
    except psutil.Error:
        return ""


@contextmanager
def millet_serve(settings):
    """`millet serve` over `settings`, in a process of its own; stopped on the way out, even on failure."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen([MILLET, "serve", "--port", str(port)],
                                env={**os.environ, **settings.millet_environ()},
                                stdout=subprocess.DEVNULL, stderr=log)
        try:
            poll(lambda: answers(f"{url}/health"), "the server to come up healthy", 60,
                 died=lambda: _exited(proc, log))
            yield url
        finally:
            stop_process(proc)


def _exited(proc: subprocess.Popen, log) -> str | None:
    if proc.poll() is None:
        return None
    log.seek(0)
    return f"it exited with {proc.returncode}: {log.read()[-3000:]}"


def stop_process(proc: subprocess.Popen, timeout_s: float = 10, group: bool = False) -> None:
    """SIGTERM, then SIGKILL after `timeout_s`: `proc`, or its process group (`group`; it was started in
    a session of its own). A process or group already gone is no error: the test's own failure shows."""
    def signal_it(signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            if group:
                os.killpg(proc.pid, signum)
            else:
                proc.send_signal(signum)

    signal_it(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        signal_it(signal.SIGKILL)
        proc.wait(timeout=10)
