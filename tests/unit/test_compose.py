"""docker-compose.yml's wiring, checked without a Docker engine (none runs here): what waits on what, and
is healthy when it says; every variable defined, every setting real, no secret in the file, no port twice,
every file it builds from or mounts present; then Compose's own `config` where its CLI is installed
(`make test` installs Debian's docker-compose as root).

Mutations each test is there for: a `depends_on` without a condition, or on a service with no healthcheck;
a password written into the file; a `${VAR}` missing from .env.example; a misspelt MILLET_ or AIRFLOW__
name (the service would silently run on defaults); a `millet` command that does not exist; two services
on one host port; a COPY of a file that is not in the repository.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from millet.cli import app
from millet.settings import REPO_ROOT, Settings

COMPOSE = REPO_ROOT / "docker-compose.yml"
ENV_EXAMPLE = REPO_ROOT / ".env.example"
VARIABLE = re.compile(r"\$\{(\w+)(?::?[-?][^}]*)?\}")
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|WEBHOOK", re.IGNORECASE)


@pytest.fixture(scope="module")
def services() -> dict:
    return yaml.safe_load(COMPOSE.read_text())["services"]


def _environment(service: dict) -> dict[str, str]:
    env = service.get("environment", {})
    return dict(item.split("=", 1) for item in env) if isinstance(env, list) else dict(env)


def _commands(service: dict) -> list[list[str]]:
    found = [service.get("command") or [], (service.get("healthcheck") or {}).get("test") or []]
    return [c if isinstance(c, list) else c.split() for c in found]


def test_whatever_a_service_waits_for_is_healthy_or_done(services):
    for name, service in services.items():
        for dependency, how in service.get("depends_on", {}).items():
            assert isinstance(how, dict), f"{name} waits for {dependency} to start only, not to be ready"
            condition, other = how.get("condition"), services[dependency]
            if condition == "service_healthy":
                assert "healthcheck" in other, f"{name} waits for {dependency}, which has no healthcheck"
            else:
                assert condition == "service_completed_successfully" and other.get("restart") == "no", (
                    name, dependency, condition)


def test_every_long_running_service_has_a_healthcheck(services):
    for name, service in services.items():
        if service.get("restart") != "no":
            assert service.get("healthcheck", {}).get("test"), f"{name} runs for good with no healthcheck"


def test_every_variable_is_in_env_example_and_no_secret_is_in_the_file(services):
    example = {line.split("=", 1)[0] for line in ENV_EXAMPLE.read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    used = set(VARIABLE.findall(COMPOSE.read_text()))
    assert used == example, f"used but not in .env.example: {used - example}; unused: {example - used}"
    for name, service in services.items():
        for key, value in _environment(service).items():
            named_secret = SECRET_NAME.search(key) and not key.endswith(("_DIR", "_FILE", "_PATH"))
            if named_secret or re.search(r"://[^/@]*:[^/@]*@", str(value)):
                credential = re.sub(VARIABLE, "", str(value))
                assert not re.search(r":[^/@:]+@", credential), f"{name}: {key} holds a password"
                assert "${" in str(value), f"{name}: {key} is written in the file, not read from .env"


def test_every_setting_named_is_one_millet_or_airflow_reads(services):
    fields = {f"MILLET_{name.upper()}" for name in Settings.model_fields}
    airflow = _airflow_options()
    for name, service in services.items():
        for key in _environment(service):
            if key.startswith("MILLET_"):
                assert key in fields, f"{name}: {key} is no Millet setting"
            elif key.startswith("AIRFLOW__"):
                assert key in airflow, f"{name}: {key} is no Airflow option"


def test_every_millet_command_exists(services):
    commands = {c.name or c.callback.__name__.replace("_", "-") for c in app.registered_commands}
    for name, service in services.items():
        for command in _commands(service):
            words = [w for w in command if w not in ("CMD", "CMD-SHELL")]
            if words[:1] == ["millet"]:
                assert words[1] in commands, f"{name}: millet {words[1]} does not exist"
        script = " ".join(str(c) for c in _commands(service)[0])
        for sub in re.findall(r"\bmillet (\S+)", script):
            assert sub in commands, f"{name}: millet {sub} does not exist"


def test_host_ports_do_not_clash_and_listen_on_loopback(services):
    published = [(name, port) for name, s in services.items() for port in s.get("ports", [])]
    hosts = [port.rsplit(":", 1)[0] for _, port in published]
    assert len(hosts) == len(set(hosts)), published
    assert all(host.startswith("127.0.0.1:") for host in hosts), published  # a proxy exposes them


def test_what_it_builds_from_and_mounts_exists(services):
    volumes = set(yaml.safe_load(COMPOSE.read_text()).get("volumes") or {})
    for name, service in services.items():
        if "build" in service:
            context = REPO_ROOT / (service["build"] if isinstance(service["build"], str)
                                   else service["build"]["context"])
            dockerfile = context / "Dockerfile"
            assert dockerfile.is_file(), name
            for line in dockerfile.read_text().splitlines():
                if line.startswith("COPY "):
                    for source in line.split()[1:-1]:
                        assert (context / source).exists(), f"the Dockerfile copies {source}, not here"
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            if source.startswith("."):
                assert (REPO_ROOT / source).exists(), f"{name} mounts {source}, not here"
            else:
                assert source in volumes, f"{name} uses volume {source}, not declared"


def test_compose_itself_accepts_the_file_and_refuses_a_missing_secret(tmp_path):
    cli = shutil.which("docker-compose")
    if cli is None:
        pytest.skip("NO docker-compose: `make test` installs Debian's docker-compose when run as root; "
                    "the checks above still ran")
    filled = tmp_path / "filled.env"
    filled.write_text(re.sub(r"=$", "=not-a-real-value", ENV_EXAMPLE.read_text(), flags=re.MULTILINE))
    done = subprocess.run([cli, "--project-directory", str(REPO_ROOT), "-f", str(COMPOSE), "--env-file",
                           str(filled), "config", "-q"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    empty = tmp_path / "empty.env"
    empty.write_text("")
    done = subprocess.run([cli, "--project-directory", str(REPO_ROOT), "-f", str(COMPOSE), "--env-file",
                           str(empty), "config", "-q"], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "set in .env" in done.stderr, done.stderr


def _airflow_options() -> set[str]:
    """Every AIRFLOW__SECTION__KEY Airflow's own configuration declares (read, not imported)."""
    package = Path(importlib.util.find_spec("airflow").submodule_search_locations[0])
    declared = yaml.safe_load((package / "config_templates" / "config.yml").read_text())
    return {f"AIRFLOW__{section.upper()}__{key.upper()}"
            for section, body in declared.items() for key in (body.get("options") or {})}
