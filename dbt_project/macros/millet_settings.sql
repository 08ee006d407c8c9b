{#- Millet passes its settings to dbt as MILLET_* variables (millet.settings.Settings.environ). The
    defaults are its default data root seen from dbt_project/, so that plain `dbt build` and
    `dbt docs generate` run here work on what `make demo` built. They are Settings' own
    (Settings.dbt_defaults); tests/e2e/test_tool_clis.py fails if one here differs. -#}
{% macro millet_setting(name) %}
{%- set defaults = {
    "MILLET_SNAPSHOTS_DIR": "../.millet/snapshots",
    "MILLET_STATE_DIR": "../.millet/state",
    "MILLET_RECONCILIATION_DIR": "../.millet/quality/reconciliation",
    "MILLET_TOMBSTONES_PATH": "../.millet/erasure/tombstones.parquet",
} -%}
{{- return(env_var(name, defaults[name])) -}}
{% endmacro %}
