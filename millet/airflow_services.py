"""Airflow's own services (API server, DAG processor, scheduler) for the length of one command.

`dag.test` runs a single DAG run in-process; a backfill needs the real scheduler. On a deployment
these services run all the time (docker-compose.yml); on a laptop or in CI `millet backfill` starts
them here, on free loopback ports and with the embedded metadata DB, and stops them when it is done.
The scheduler does not create runs from the schedule meanwhile (`use_job_schedule = False`): it
executes only what it is asked to, so a backfill of March adds no run for today.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from millet.settings import Settings

SERVICES = {
    "api-server": ["api-server", "--host", "127.0.0.1", "--port", "{api_port}"],
    "dag-processor": ["dag-processor"],
    "scheduler": ["scheduler"],
}
_STOP_GRACE_S = 20


class ServiceDied(RuntimeError):
    pass


@contextmanager
def airflow_services(settings: Settings) -> Iterator[ServiceWatch]:
    """Start the services; yields a watch that raises ServiceDied if one of them has exited."""
    api_port, log_port = _free_port(), _free_port()
    env = {**os.environ, **settings.millet_environ(), **settings.environ(), **settings.airflow_environ(),
           **_service_config(api_port, log_port)}
    log_dir = settings.airflow_home / "services"
    log_dir.mkdir(parents=True, exist_ok=True)
    started: dict[str, subprocess.Popen] = {}
    # The services run in sessions of their own; a SIGTERM to this process must still reach `finally`.
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        for name, args in SERVICES.items():
            started[name] = _start(name, [a.format(api_port=api_port) for a in args], env, log_dir)
        yield ServiceWatch(started, log_dir)
    finally:
        _stop(started.values())
        signal.signal(signal.SIGTERM, previous)


def _exit_on_sigterm(signum, frame) -> None:
    raise SystemExit(128 + signum)


class ServiceWatch:
    def __init__(self, processes: dict[str, subprocess.Popen], log_dir: Path):
        self.processes, self.log_dir = processes, log_dir

    def check(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                log = self.log_dir / f"{name}.log"
                raise ServiceDied(f"airflow {name} exited ({process.returncode}); see {log}")


def _service_config(api_port: int, log_port: int) -> dict[str, str]:
    return {
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),  # tasks' tokens; new each time
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(log_port),
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
    }


def _start(name: str, args: list[str], env: dict, log_dir: Path) -> subprocess.Popen:
    airflow = Path(sys.executable).with_name("airflow")
    # A session of its own: stopping the group also stops the workers and task processes it forked.
    with open(log_dir / f"{name}.log", "ab") as log:  # the child keeps its own copy of the handle
        return subprocess.Popen([str(airflow), *args], env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)


def _stop(processes) -> None:
    # Every group, even of a service that already exited: its workers may have outlived it.
    processes = list(processes)
    for process in processes:
        _signal_group(process, signal.SIGTERM)
    deadline = time.monotonic() + _STOP_GRACE_S
    for process in processes:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        _signal_group(process, signal.SIGKILL)  # also whatever the group forked and left behind
        process.wait()


def _signal_group(process: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
