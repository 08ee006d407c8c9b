"""The nightly lists the served models drive (written by tracking.py) and the models each needs.

Light to import: a list whose models are not served is skipped before its code is loaded. That code
imports LightGBM and Feast, about 8 seconds, which every task process of a scheduler's run would pay
only to find there is no model (a new deployment, until `millet train`).
"""

from __future__ import annotations

from millet.scoring import registry
from millet.settings import Settings, get_settings

EARLY_WARNING = "early_warning"
PRE_APPROVAL = "pre_approval"
MODELS = {EARLY_WARNING: (registry.CREDIT_RISK,),
          PRE_APPROVAL: (registry.CREDIT_RISK, registry.FINANCIAL_DEMAND)}


def make_list(name: str, ds: str, settings: Settings | None = None) -> dict:
    """Write the day's list `name`; raises NoModel, having loaded no model code, while a model it needs
    is not served."""
    settings = settings or get_settings()
    for model in MODELS[name]:
        registry.served(model, settings)
    from millet.scoring import tracking

    make = {EARLY_WARNING: tracking.track_borrowers, PRE_APPROVAL: tracking.list_pre_approvals}[name]
    return make(ds, settings)


def nightly_lists(ds: str, settings: Settings) -> dict[str, dict | str]:
    """Both lists of the day, as the DAG's last two tasks write them: each list's outcome, or why it was
    skipped (a model it needs is not served)."""
    made: dict[str, dict | str] = {}
    for name in MODELS:
        try:
            made[name] = make_list(name, ds, settings)
        except registry.NoModel as exc:
            made[name] = f"skipped: {exc}"
    return made
