"""A nightly list whose models are not served is refused before its code is loaded: each list task of a
scheduler's run is a fresh process, and loading LightGBM and Feast only to find no model cost it about 8 s."""

import json
import subprocess
import sys

CODE = """
import json, sys
from millet.scoring import registry
from millet.scoring.lists import EARLY_WARNING, PRE_APPROVAL, make_list
from millet.settings import Settings

settings = Settings(data_root=sys.argv[1], pseudonym_key="k")
if sys.argv[2] == "risk served":
    registry.serve(registry.new_version(registry.CREDIT_RISK, settings))
refused = {}
for name in (EARLY_WARNING, PRE_APPROVAL)[int(sys.argv[2] == "risk served"):]:
    try:
        make_list(name, "2026-01-01", settings)
    except registry.NoModel as exc:
        refused[name] = str(exc)
print(json.dumps({"refused": refused, "loaded": [m for m in ("lightgbm", "feast") if m in sys.modules]}))
"""


def _run(data_root, served: str) -> dict:
    done = subprocess.run([sys.executable, "-c", CODE, str(data_root), served],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_without_models_both_lists_are_refused_and_neither_lightgbm_nor_feast_is_loaded(tmp_path):
    found = _run(tmp_path / "data", "none served")
    assert set(found["refused"]) == {"early_warning", "pre_approval"}
    assert all("no credit_risk model is served" in why for why in found["refused"].values())
    assert found["loaded"] == []


def test_pre_approval_needs_the_demand_model_too(tmp_path):
    found = _run(tmp_path / "data", "risk served")
    assert list(found["refused"]) == ["pre_approval"]
    assert "no financial_demand model is served" in found["refused"]["pre_approval"]
    assert found["loaded"] == []
