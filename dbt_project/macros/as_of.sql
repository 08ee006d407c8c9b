{#- The as-of day in SQL, and the files that are kept per as-of day.

    Every day-dependent query reads the as-of day from a DuckDB variable, `getvariable('as_of')`, which the
    `external` materialization sets before it runs a model: to the run's as-of day on a night, to each day
    of the range in turn on a history build (run_var('history_from'): one dbt invocation writes every
    day's files). So one compiled query serves every day, and a history build runs exactly the nights'
    SQL. DuckDB folds the variable into a constant when it plans, so Parquet row groups are still skipped
    by their dates. -#}

{#- A value of this run: `as_of` (the day), `rebase` (rebuild the windows from the daily partials) or
    `history_from` (the first day of a history build). Millet passes them as MILLET_RUN_<NAME>
    environment variables (JSON), read only while models run, never when dbt parses: dbt re-parses the
    whole project (seconds) whenever a --vars value differs from the last run's, and every night's
    as-of day does. Without the variable (plain `dbt build --vars '{as_of: ...}'`), var(name).
    So dbt parses every model with the defaults (no re-base): a ref() inside a branch on a run value is
    not seen, and each model refs what any branch reads outside the branches (depends_on_partials,
    `-- depends_on:`). -#}
{% macro run_var(name, default=none) %}
{%- set passed = env_var('MILLET_RUN_' ~ name | upper, '') if execute else '' -%}
{{ return(fromjson(passed) if passed else var(name, default)) }}
{% endmacro %}


{#- The as-of day, `days_back` days earlier (negative: later), as a SQL date. -#}
{% macro as_of_day(days_back=0) -%}
(getvariable('as_of'){{ ' - ' ~ days_back if days_back > 0 else (' + ' ~ (-days_back) if days_back < 0) }})
{%- endmacro %}


{#- The days a run writes: its as-of day alone, or every day from its history_from to it. -#}
{% macro run_days() %}
{%- set last = modules.datetime.date.fromisoformat(run_var('as_of')) -%}
{%- set first = modules.datetime.date.fromisoformat(run_var('history_from', run_var('as_of'))) -%}
{%- if first > last -%}
  {{ exceptions.raise_compiler_error("history_from " ~ first ~ " is after as_of " ~ last) }}
{%- endif -%}
{%- set days = [] -%}
{%- for offset in range((last - first).days + 1) -%}
  {%- do days.append((first + modules.datetime.timedelta(days=offset)).isoformat()) -%}
{%- endfor -%}
{{ return(days) }}
{% endmacro %}


{#- A file kept per as-of day: its location (rendered for this run) holds `/dt=<as_of>/`; the same path
    for another day. -#}
{% macro location_on(location, day) %}
{%- set marker = '/dt=' ~ run_var('as_of') ~ '/' -%}
{%- if location.count(marker) != 1 -%}
  {{ exceptions.raise_compiler_error("a model kept per day must have '" ~ marker ~ "' once in its location: " ~ location) }}
{%- endif -%}
{{ return(location.replace(marker, '/dt=' ~ day ~ '/')) }}
{% endmacro %}


{#- Another model's file for the as-of day (`days_back` days earlier): read the day's file, not the
    model's view, which points at the last day a history build wrote. -#}
{% macro day_file(model_name, days_back=0) %}
{%- set relation = ref(model_name) -%}  {#- the dependency, for dbt's graph and lineage -#}
{%- if not execute -%}
  {{ return(relation) }}
{%- endif -%}
{{ return(read_day_file(render(graph.nodes['model.' ~ project_name ~ '.' ~ model_name].config.location), days_back)) }}
{% endmacro %}


{#- This state model's own file of yesterday. -#}
{% macro yesterdays_state() %}{{ return(read_day_file(render(state_location()), 1)) }}{% endmacro %}


{#- read_parquet of the file at `location` (a path for the run's as-of day) for the as-of day `days_back` earlier;
    in a model run in user slices, its rows of the slice's users. -#}
{% macro read_day_file(location, days_back) %}
{%- set day = "' || strftime(" ~ as_of_day(days_back) ~ ", '%Y-%m-%d') || '" -%}
{%- set file = "read_parquet('" ~ location_on(location, day) ~ "')" -%}
{%- set in_slice = and_in_user_slice() -%}
{{ return("(select * from " ~ file ~ " where true" ~ in_slice ~ ")" if in_slice else file) }}
{% endmacro %}


{#- Each state model's file for a day: <state dir>/<model>/dt=<day>/part-0.parquet. -#}
{% macro state_location() %}{{ return(day_location(millet_setting('MILLET_STATE_DIR') ~ '/' ~ model.name)) }}{% endmacro %}


{#- The location of a model kept per as-of day, under `folder`: a model's config holds it with the day
    still to fill in (the run's, rendered when the model runs: dbt reads configs when it parses, before
    any run's day is known), as `{{ run_var('as_of') }}`; the materialization and day_file render it. -#}
{% macro day_location(folder) %}
{{- return(folder ~ "/dt={{ run_var('as_of') }}/part-0.parquet") -}}
{% endmacro %}


{#- Rows the lender learned of on the as-of day: arrived that day, or (a clock running ahead) arrived
    earlier for an event on that day. -#}
{% macro usable_today() %}
{{ return(["arrived_on = " ~ as_of_day() ~ " and event_date <= " ~ as_of_day(),
           "event_date = " ~ as_of_day() ~ " and arrived_on < " ~ as_of_day()]) }}
{% endmacro %}


{#- Every row the lender knew of on the as-of day. -#}
{% macro known_by_as_of() %}
{{ return("arrived_on <= " ~ as_of_day() ~ " and event_date <= " ~ as_of_day()) }}
{% endmacro %}


{#- The user_key of everyone forgotten (millet/privacy/erasure.py writes the file before every build). -#}
{% macro erased_users() %}
{{- return("read_parquet('" ~ millet_setting('MILLET_TOMBSTONES_PATH') ~ "')") -}}
{% endmacro %}
