"""Airflow's own services (API server, DAG processor, scheduler) for the length of one command.

`dag.test` runs a single DAG run in-process; a backfill needs the real scheduler. On a deployment
these services run all the time (docker-compose.yml); on a laptop or in CI `millet backfill` starts
them here, on free loopback ports, and stops them when it is done. They run under a small supervisor
(`millet.supervise`) that stops all of them, their workers and their task processes when the command
ends in any way, SIGKILL included. The scheduler does not create runs from the schedule meanwhile
(`use_job_schedule = False`): it executes only what it is asked to, so a backfill of March adds no run
for today.
"""

from __future__ import annotations

import json
import os
import secrets
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from millet.settings import Settings
from millet.supervise import STOP_GRACE_S

SERVICES = {
    "api-server": ["api-server", "--host", "127.0.0.1", "--port", "{api_port}"],
    "dag-processor": ["dag-processor"],
    "scheduler": ["scheduler"],
}
_START_TIMEOUT_S = 300  # a cold start on a busy two-core machine takes a minute or more


class ServiceDied(RuntimeError):
    pass


@contextmanager
def airflow_services(settings: Settings, hold: tuple[int, ...] = ()) -> Iterator[ServiceWatch]:
    """Start the services; yields a watch that raises ServiceDied if one of them has exited. `hold`: file
    descriptors the supervisor keeps open until it has stopped them (a lock then lasts as long as they
    run, even if this process is killed and they take their grace to stop)."""
    api_port, log_port = _free_port(), _free_port()
    env = settings.airflow_process_environ(dict(os.environ), **_service_config(api_port, log_port))
    log_dir = settings.airflow_home / "services"
    log_dir.mkdir(parents=True, exist_ok=True)
    airflow = str(Path(sys.executable).with_name("airflow"))
    spec = {"log_dir": str(log_dir),
            "services": {name: [airflow, *(a.format(api_port=api_port) for a in args)]
                         for name, args in SERVICES.items()}}
    # A SIGTERM to this process must still reach `finally`; a SIGKILL closes the supervisor's pipe.
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    supervisor = subprocess.Popen([sys.executable, "-m", "millet.supervise", json.dumps(spec)], env=env,
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True,
                                  pass_fds=hold)
    try:
        watch = ServiceWatch(supervisor, log_dir)
        watch.wait_started()
        # Tasks call the execution API as they start; one queued before it answers fails at once.
        watch.wait_answering(f"http://127.0.0.1:{api_port}/execution/health")  # the server started here
        yield watch
    finally:
        _stop(supervisor)
        signal.signal(signal.SIGTERM, previous)


def _exit_on_sigterm(signum, frame) -> None:
    raise SystemExit(128 + signum)


class ServiceWatch:
    def __init__(self, supervisor: subprocess.Popen, log_dir: Path):
        self.supervisor, self.log_dir = supervisor, log_dir
        self.process_group = supervisor.pid  # the supervisor leads a session of its own

    def wait_started(self) -> None:
        readable, _, _ = select.select([self.supervisor.stdout], [], [], _START_TIMEOUT_S)
        line = self.supervisor.stdout.readline().decode() if readable else ""
        if not line.startswith("started"):
            raise ServiceDied(f"the Airflow services did not start within {_START_TIMEOUT_S} s "
                              f"({line.strip() or 'no answer'}); see {self.log_dir}")

    def wait_answering(self, url: str) -> None:
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not _answers(url):
            self.check()
            if time.monotonic() > deadline:
                raise ServiceDied(f"the Airflow API server did not answer {url} within {_START_TIMEOUT_S} s; "
                                  f"see {self.log_dir / 'api-server.log'}")
            time.sleep(0.5)

    def check(self) -> None:
        if self.supervisor.poll() is None:
            return
        said = self.supervisor.stdout.read().decode().split()  # e.g. ["exited", "scheduler", "1"]
        if said[:1] == ["exited"]:
            raise ServiceDied(f"airflow {said[1]} exited ({said[2]}); see {self.log_dir / said[1]}.log")
        raise ServiceDied(f"the services' supervisor stopped ({self.supervisor.returncode}); "
                          f"see {self.log_dir}")


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except OSError:  # refused, reset, timed out, or an HTTP error status
        return False


def _service_config(api_port: int, log_port: int) -> dict[str, str]:
    return {
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),  # tasks' tokens; new each time
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(log_port),
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
    }


def _stop(supervisor: subprocess.Popen) -> None:
    """Close the supervisor's pipe (it stops everything below it), then wait for it, boundedly."""
    supervisor.stdin.close()
    try:
        supervisor.wait(timeout=STOP_GRACE_S + 30)
    except subprocess.TimeoutExpired:  # it never hangs on its own; make sure nothing of it is left
        os.killpg(supervisor.pid, signal.SIGKILL)
        supervisor.wait()
    supervisor.stdout.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
