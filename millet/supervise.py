"""A small supervisor that keeps Airflow's services from outliving the command that started them.

`airflow_services` starts it in a session of its own with a pipe on its stdin, and it starts the
services. It then waits until the pipe closes — the command finished, failed, or was SIGKILLed and
could run no clean-up of its own — or until a service exits. Either way it stops every process below
it: the services, their workers, and the task processes Airflow puts in process groups of their own.
It is a child subreaper (Linux), so a descendant whose parent died is re-parented to it and still
found. Its first line on stdout is `started`; its last says why it stopped.

Run as `python -m millet.supervise SPEC_JSON`, SPEC_JSON = {"log_dir": ..., "services": {name: argv}}.
"""

from __future__ import annotations

import ctypes
import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

_PR_SET_CHILD_SUBREAPER = 36
_WATCH_INTERVAL_S = 1.0
STOP_GRACE_S = 20


def main(spec_json: str) -> None:
    spec = json.loads(spec_json)
    _become_subreaper()
    signal.signal(signal.SIGTERM, lambda *_: None)  # the parent says "stop" by closing the pipe
    log_dir = Path(spec["log_dir"])
    try:
        services = {name: _start(name, argv, log_dir) for name, argv in spec["services"].items()}
        _say("started " + " ".join(f"{name}={p.pid}" for name, p in services.items()))
        _say(_wait_for_end(services))
    finally:
        stop_descendants(STOP_GRACE_S)


def _become_subreaper() -> None:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: orphans of a killed worker may escape the stop
        pass


def _start(name: str, argv: list[str], log_dir: Path) -> subprocess.Popen:
    with open(log_dir / f"{name}.log", "ab") as log:  # the child keeps its own copy of the handle
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def _wait_for_end(services: dict[str, subprocess.Popen]) -> str:
    while True:
        readable, _, _ = select.select([sys.stdin.buffer], [], [], _WATCH_INTERVAL_S)
        if readable and not os.read(sys.stdin.fileno(), 4096):
            return "stopping: the command that started the services has ended"
        for name, process in services.items():
            if process.poll() is not None:
                return f"exited {name} {process.returncode}"


def stop_descendants(grace_s: float) -> None:
    """SIGTERM everything below this process, SIGKILL what is left after `grace_s`, reap it all."""
    _signal_each(psutil.Process().children(recursive=True), signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while alive := psutil.Process().children(recursive=True):
        if time.monotonic() > deadline:
            _signal_each(alive, signal.SIGKILL)
        psutil.wait_procs(alive, timeout=0.5)
        _reap_orphans()


def _signal_each(processes: list[psutil.Process], sig: int) -> None:
    for process in processes:
        try:
            process.send_signal(sig)
        except psutil.NoSuchProcess:
            pass


def _reap_orphans() -> None:
    # Descendants re-parented to a subreaper are its children now; wait_procs only polls them.
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _say(line: str) -> None:
    try:
        print(line, flush=True)
    except OSError:  # nobody reads any more (the command was killed): stopping matters, not saying
        pass


if __name__ == "__main__":
    main(sys.argv[1])
