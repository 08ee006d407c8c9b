"""Feast's own CLI on Millet's repository: plain `feast` in features/ with no variable set, and
`millet feast` for the settings in force. One configuration (millet.serving.store.feast_config) behind
both and behind every FeatureStore Millet opens.

Mutations each test is there for: a `${VAR}` left in feature_store.yaml (plain `feast` fails without
Millet's variables); the committed file edited by hand instead of generated (it no longer matches);
`millet feast` not handing Feast the settings' data root (it lists the default root's registry, or none).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from millet.feature_spec import families
from millet.serving.definitions import SERVICES
from millet.settings import REPO_ROOT
from tests.e2e.processes import MILLET

FEAST = str(Path(sys.executable).with_name("feast"))
FEATURES = REPO_ROOT / "features"


def _bare_env(tmp_path) -> dict[str, str]:
    """What a new user's shell has: a PATH and a home, no MILLET_* (nor anything else of the session)."""
    return {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(tmp_path)}


def test_the_committed_feature_store_yaml_is_generated_from_the_default_settings(tmp_path):
    generate = ("from millet.serving.store import feature_store_yaml; from millet.settings import Settings; "
                "print(feature_store_yaml(Settings()), end='')")
    done = subprocess.run([sys.executable, "-c", generate], env=_bare_env(tmp_path), cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "${" not in done.stdout
    assert (FEATURES / "feature_store.yaml").read_text() == done.stdout, (
        "features/feature_store.yaml is generated: regenerate it with the command in this test")


def test_plain_feast_in_features_works_with_no_variables(tmp_path):
    """A model team's first step. It applies to the default data root (../.millet), as a user would."""
    env = _bare_env(tmp_path)
    done = subprocess.run([FEAST, "apply"], cwd=FEATURES, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    views, services = _listed(env, FEAST, cwd=FEATURES)
    assert {fam.name for fam in families()} <= views
    assert {spec.name for spec in SERVICES} <= services
    assert (REPO_ROOT / ".millet" / "feast" / "registry.db").exists()


def test_millet_feast_runs_feast_on_the_settings_in_force(nightly, tmp_path):
    env = {**os.environ, **nightly.millet_environ()}
    views, services = _listed(env, MILLET, "feast", cwd=tmp_path)
    assert {fam.name for fam in families()} <= views
    assert {spec.name for spec in SERVICES} <= services
    assert (nightly.feast_dir / "feature_store.yaml").read_text().count(str(nightly.feast_dir)) == 2


def _listed(env: dict, *command: str, cwd: Path) -> tuple[set[str], set[str]]:
    """The names in the first column of `feature-views list` and `feature-services list`."""
    names = []
    for what in ("feature-views", "feature-services"):
        done = subprocess.run([*command, what, "list"], cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, (what, done.stdout[-2000:], done.stderr[-3000:])
        names.append({line.split()[0] for line in done.stdout.splitlines()[1:] if line.strip()})
    return names[0], names[1]
