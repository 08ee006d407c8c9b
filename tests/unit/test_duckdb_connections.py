"""Every DuckDB connection Millet opens has the settings' DuckDB configuration: DuckDB 2.0.0's compressed
materialization gave wrong sums (Settings.duckdb_disabled_optimizers), and the memory limit is a promise."""

from __future__ import annotations

import ast
from pathlib import Path

import pandas as pd

import millet
from millet.serving.offline.asof import AsofRetrievalJob
from millet.serving.store import repo_config
from millet.settings import Settings

PACKAGE = Path(millet.__file__).parent


def _connects() -> list[tuple[str, int, ast.Call]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "connect" and isinstance(node.func.value, ast.Name)
                    and node.func.value.id == "duckdb"):
                found.append((str(path.relative_to(PACKAGE)), node.lineno, node))
    return found


def test_every_duckdb_connection_millet_opens_is_given_the_settings_configuration():
    """Mutation that fails it: any `duckdb.connect()` without `config=` (seven were, before)."""
    connects = _connects()
    assert len(connects) >= 15  # the scan finds them: ingest, quality, scoring, privacy, serving
    assert [(path, line) for path, line, call in connects
            if not any(keyword.arg == "config" for keyword in call.keywords)] == []


def test_no_connection_replaces_the_list_of_optimizers_turned_off():
    """`set disabled_optimizers = '...'` replaces the list: the offline store's turned compressed
    materialization back on for every training set."""
    offenders = [str(path.relative_to(PACKAGE)) for path in PACKAGE.rglob("*.py")
                 if "set disabled_optimizers" in path.read_text()]
    assert offenders == []


def test_feasts_plug_ins_get_the_settings_duckdb_configuration():
    settings = Settings(duckdb_threads=1, duckdb_memory_limit="1GB",
                        duckdb_disabled_optimizers="compressed_materialization,late_materialization")
    config = repo_config(settings)
    assert config.offline_store.duckdb == settings.duckdb_config()
    assert config.batch_engine_config["duckdb"] == settings.duckdb_config()
    job = AsofRetrievalJob(pd.DataFrame(), "event_timestamp", [], False, None, config)
    assert job.duckdb_config() == {"memory_limit": "1GB", "threads": 1, "disabled_optimizers":
                                   "compressed_materialization,late_materialization,build_side_probe_side"}
