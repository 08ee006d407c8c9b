"""Model versions on disk: models/<model>/v<N>/ holds the fitted model, `meta.json` (the training set's
definition, row counts, metrics, the verdict) and the report; models/<model>/SERVED names the version that
is served, and changes only when a version's report passes."""

from __future__ import annotations

import json
from pathlib import Path

from millet.files import write_text
from millet.settings import Settings

META = "meta.json"
SERVED = "SERVED"

CREDIT_RISK = "credit_risk"
REPAYMENT_ABILITY = "repayment_ability"
FINANCIAL_DEMAND = "financial_demand"


class NoModel(RuntimeError):
    pass


def new_version(model: str, settings: Settings) -> Path:
    """A new, empty folder for the next version of `model` (v1, v2, ...)."""
    folder = settings.models_dir / model
    folder.mkdir(parents=True, exist_ok=True)
    taken = [int(p.name[1:]) for p in folder.glob("v*") if p.name[1:].isdigit()]
    version = folder / f"v{max(taken, default=0) + 1}"
    version.mkdir()  # never exist_ok: two trainings must not share a folder
    return version


def write_meta(version: Path, meta: dict) -> None:
    write_text(version / META, json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n")


def read_meta(version: Path) -> dict:
    return json.loads((version / META).read_text())


def serve(version: Path) -> None:
    """Make `version` the one served, atomically (a reader sees the old name or the new)."""
    write_text(version.parent / SERVED, version.name + "\n")


def served_version(model: str, settings: Settings) -> Path | None:
    pointer = settings.models_dir / model / SERVED
    return pointer.parent / pointer.read_text().strip() if pointer.exists() else None


def served(model: str, settings: Settings) -> Path:
    """The version of `model` that is served; raises NoModel while there is none."""
    version = served_version(model, settings)
    if version is None:
        raise NoModel(f"no {model} model is served under {settings.models_dir}: run `millet train`")
    return version
